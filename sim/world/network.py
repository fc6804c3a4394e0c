"""Bulk transfers: datasets and model weights moving between sites over shared links.

Request and response payloads cross links FIFO inside a kernel (`sim.kernels.links`); bulk
transfers are few and long, so they are SimPy processes here. The transfers active on one
direction of a link share its bandwidth fairly (processor sharing): with n transfers active,
each progresses at bandwidth / n, and a transfer's share grows as others finish. A transfer
is done when its last byte has been sent plus the one-way delay. Bulk traffic and request
traffic do not slow each other down (a simplification: request payloads are small).

Every transfer is recorded (start, end, from, to, data class, bytes, records), so that the
privacy ledger can account for what left which site.

Outages (sim.world.faults): a direction that is `down` sends nothing. Its transfers keep
their place and the bytes they have sent, and resume at their fair share when it comes back
up, so a transfer that spans an outage ends later by the outage's length; transfers started
during an outage wait for the link. Bytes already sent (in flight for the one-way delay) are
delivered. Each direction counts the bytes handed to it and the bytes it has sent, so that a
run can check that the ledger records exactly what the links carried.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import simpy

from sim.record import LINK_COLUMNS, TRANSFER_COLUMNS
from sim.spec.scenario import Scenario

# Share of a transfer left below which it counts as finished (guards float round-off).
EPSILON_BYTES = 1e-6  # a transfer this small is delivered at once
RELATIVE_SLACK = 1e-9


@dataclass
class TransferRecord:
    start_s: float
    from_site: str
    to_site: str
    data_class: str
    bytes: float
    records: float
    purpose: str
    end_s: float = float("nan")
    dataset: str = ""  # the records' identity when the same ones may be sent again ('' : new ones)


@dataclass
class _Active:
    remaining: float
    done: simpy.Event
    record: TransferRecord


@dataclass
class LinkDirection:
    """One direction of a link, shared fairly by the bulk transfers on it."""

    env: simpy.Environment
    from_site: str
    to_site: str
    bandwidth_bytes_per_s: float
    one_way_s: float
    active: list[_Active] = field(default_factory=list)
    down: bool = False
    bytes_accepted: float = 0.0  # handed to this direction by send()
    bytes_sent: float = 0.0  # put on the wire so far
    _last_s: float = 0.0
    _generation: int = 0

    def send(self, nbytes: float, data_class: str, records: float = 0.0,
             purpose: str = "", dataset: str = "") -> tuple[simpy.Event, TransferRecord]:
        """Start a transfer; the event fires (with the record) when it has fully arrived."""
        record = TransferRecord(self.env.now, self.from_site, self.to_site, data_class, float(nbytes),
                                float(records), purpose, dataset=dataset)
        done = self.env.event()
        self._progress()
        self.bytes_accepted += float(nbytes)
        if nbytes <= EPSILON_BYTES:
            self._deliver(_Active(0.0, done, record))
        else:
            self.active.append(_Active(float(nbytes), done, record))
        self._reschedule()
        return done, record

    @property
    def share_bytes_per_s(self) -> float:
        return self.bandwidth_bytes_per_s / max(len(self.active), 1)

    def set_down(self, down: bool) -> None:
        """Cut (True) or restore (False) this direction; transfers pause and resume."""
        if down == self.down:
            return
        self._progress()
        self.down = down
        self._reschedule()

    def _progress(self) -> None:
        elapsed = self.env.now - self._last_s
        if elapsed > 0 and self.active and not self.down:
            sent = self.share_bytes_per_s * elapsed
            for transfer in self.active:
                self.bytes_sent += min(sent, max(transfer.remaining, 0.0))
                transfer.remaining -= sent
        self._last_s = self.env.now

    def _reschedule(self) -> None:
        self._generation += 1
        if not self.active or self.down:
            return
        shortest = min(t.remaining for t in self.active)
        delay = max(shortest, 0.0) / self.share_bytes_per_s
        generation = self._generation
        timer = self.env.timeout(delay)
        timer.callbacks.append(lambda _event: self._on_timer(generation))

    def _on_timer(self, generation: int) -> None:
        if generation != self._generation:
            return  # the set of transfers changed since this timer was set
        self._progress()
        # what is left may be too little for time to advance by (float spacing at env.now)
        floor = self.share_bytes_per_s * 4.0 * float(np.spacing(max(self.env.now, 1.0)))
        finished = [t for t in self.active
                    if t.remaining <= max(RELATIVE_SLACK * max(1.0, t.record.bytes), floor)]
        self.active = [t for t in self.active if t not in finished]
        for transfer in finished:
            self._deliver(transfer)
        self._reschedule()

    def _deliver(self, transfer: _Active) -> None:
        self.bytes_sent += max(transfer.remaining, 0.0)  # the round-off left when it counts as sent
        arrival = self.env.timeout(self.one_way_s)

        def land(_event: simpy.Event, transfer: _Active = transfer) -> None:
            transfer.record.end_s = self.env.now
            transfer.done.succeed(transfer.record)

        arrival.callbacks.append(land)


class Network:
    """The directions of every link between sites, and the record of bulk transfers."""

    def __init__(self, env: simpy.Environment) -> None:
        self.env = env
        self.directions: dict[tuple[str, str], LinkDirection] = {}
        self.records: list[TransferRecord] = []

    def add_link(self, a: str, b: str, bandwidth_bytes_per_s: float, one_way_s: float) -> None:
        for src, dst in ((a, b), (b, a)):
            self.directions[(src, dst)] = LinkDirection(self.env, src, dst, bandwidth_bytes_per_s, one_way_s)

    def set_down(self, a: str, b: str, down: bool) -> None:
        """Cut or restore both directions of the link between sites a and b."""
        for pair in ((a, b), (b, a)):
            self.directions[pair].set_down(down)

    def is_down(self, a: str, b: str) -> bool:
        direction = self.directions.get((a, b))
        return direction is not None and direction.down

    def transfers_frame(self) -> pd.DataFrame:
        """Every bulk transfer so far, one row each (end_s NaN while it is on its way)."""
        frame = pd.DataFrame([vars(t) for t in self.records], columns=list(TRANSFER_COLUMNS))
        return frame.astype(TRANSFER_COLUMNS)

    def link_bytes_frame(self) -> pd.DataFrame:
        """Per link direction: the bytes handed to it and the bytes it has sent."""
        rows = [{"from_site": src, "to_site": dst, "accepted_bytes": d.bytes_accepted, "sent_bytes": d.bytes_sent}
                for (src, dst), d in self.directions.items()]
        return pd.DataFrame(rows, columns=list(LINK_COLUMNS)).astype(LINK_COLUMNS)

    def transfer(self, src: str, dst: str, nbytes: float, data_class: str, records: float = 0.0,
                 purpose: str = "", dataset: str = "") -> simpy.Event:
        """Move bytes from one site to another; within a site it is instant and unrecorded.
        `dataset` names the records when the same ones may be sent again (see TRANSFER_COLUMNS)."""
        if src == dst:
            event = self.env.event()
            event.succeed(None)
            return event
        direction = self.directions.get((src, dst))
        if direction is None:
            raise KeyError(f"no link joins {src!r} and {dst!r}")
        done, record = direction.send(nbytes, data_class, records, purpose, dataset)
        self.records.append(record)
        return done


# ------------------------------------------------------------------------------------------
# Paths between the clients and a serving site
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Path:
    """One direction of the network between clients and a serving site."""

    name: str
    one_way_s: float
    bandwidth_bytes_per_s: float
    jitter_s: float


def request_path(scenario: Scenario, site: str | None = None) -> Path:
    """The path from the clients to `site` (default: the inference site): its LAN, or the link."""
    origin = scenario.workload.origin
    site = scenario.placement.inference if site is None else site
    if origin == site:
        lan = scenario.sites[site].lan
        return Path(f"{site} LAN", lan.rtt / 2, lan.bandwidth, 0.0)
    found = scenario.link_between(origin, site)
    assert found is not None, "checks guarantee a link"
    name, link = found
    return Path(name, link.rtt / 2, link.bandwidth, link.jitter)
