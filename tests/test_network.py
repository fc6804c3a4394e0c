"""Bulk transfers between sites: processor sharing on each direction of a link, and the records.

One link joins sites "a" and "b" at BANDWIDTH bytes/s with a one-way delay ONE_WAY_S, so every
expected time below can be worked out by hand: a transfer of n bytes alone takes n / BANDWIDTH
seconds to send, and lands ONE_WAY_S later.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest
import simpy
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.world.network import Network, TransferRecord

BANDWIDTH = 100.0  # bytes/s
ONE_WAY_S = 0.5


def _network() -> tuple[simpy.Environment, Network]:
    env = simpy.Environment()
    network = Network(env)
    network.add_link("a", "b", BANDWIDTH, ONE_WAY_S)
    return env, network


def _send_at(env: simpy.Environment, network: Network, start_s: float, nbytes: float,
             landed: dict[str, float], name: str, src: str = "a", dst: str = "b") -> None:
    """Start a transfer at `start_s`; record in `landed[name]` when its done event fires."""

    def sender() -> Generator[simpy.Event, Any, None]:
        yield env.timeout(start_s)
        yield network.transfer(src, dst, nbytes, "labelled_sample", records=nbytes / 10, purpose=name)
        landed[name] = env.now

    env.process(sender())


def test_a_transfer_alone_takes_bytes_over_bandwidth_plus_one_way() -> None:
    """1000 bytes alone at 100 B/s land at 1000 / 100 + 0.5 = 10.5 s, and the record says so."""
    env, network = _network()
    landed: dict[str, float] = {}
    _send_at(env, network, 0.0, 1000.0, landed, "x")
    env.run()
    assert landed["x"] == pytest.approx(10.5)
    assert network.records[0].end_s == pytest.approx(10.5)


def test_two_equal_transfers_share_the_link() -> None:
    """Two 1000-byte transfers started together each get 50 B/s and both land at
    2 x 1000 / 100 + 0.5 = 20.5 s."""
    env, network = _network()
    landed: dict[str, float] = {}
    _send_at(env, network, 0.0, 1000.0, landed, "x")
    _send_at(env, network, 0.0, 1000.0, landed, "y")
    env.run()
    assert landed == pytest.approx({"x": 20.5, "y": 20.5})


def test_a_later_transfer_gets_the_shared_rate_until_the_first_finishes() -> None:
    """x (1000 B) starts at 0, y (1000 B) at 4 s.

    0-4 s: x alone at 100 B/s sends 400 B (600 left). From 4 s both get 50 B/s: x's 600 B take
    12 s, so x finishes sending at 16 s (lands 16.5 s); y has sent 600 B by then, and its last
    400 B go alone at 100 B/s in 4 s: it finishes at 20 s (lands 20.5 s), the same as if the
    link had carried the 2000 bytes back to back (the link is never idle while work is left).
    """
    env, network = _network()
    landed: dict[str, float] = {}
    _send_at(env, network, 0.0, 1000.0, landed, "x")
    _send_at(env, network, 4.0, 1000.0, landed, "y")
    env.run()
    assert landed == pytest.approx({"x": 16.5, "y": 20.5})


def test_the_two_directions_of_a_link_do_not_share() -> None:
    """a->b and b->a are separate directions: 1000 bytes each way, at once, both land at 10.5 s."""
    env, network = _network()
    landed: dict[str, float] = {}
    _send_at(env, network, 0.0, 1000.0, landed, "up", "a", "b")
    _send_at(env, network, 0.0, 1000.0, landed, "down", "b", "a")
    env.run()
    assert landed == pytest.approx({"up": 10.5, "down": 10.5})


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(min_value=1.0, max_value=1e6), min_size=1, max_size=6))
def test_transfers_started_together_finish_in_processor_sharing_order(sizes: list[float]) -> None:
    """n transfers started together, sorted by size b_1 <= ... <= b_n: the k-th finishes sending at
    (b_1 + ... + b_(k-1) + (n - k + 1) b_k) / bandwidth (all k left share until the k-th ends),
    and lands ONE_WAY_S later; the last lands at sum(b) / bandwidth + ONE_WAY_S."""
    env, network = _network()
    landed: dict[str, float] = {}
    for i, size in enumerate(sizes):
        _send_at(env, network, 0.0, size, landed, str(i))
    env.run()
    order = sorted(range(len(sizes)), key=lambda i: sizes[i])
    n = len(sizes)
    sent_before = 0.0
    for k, i in enumerate(order):
        expected = (sent_before + (n - k) * sizes[i]) / BANDWIDTH + ONE_WAY_S
        assert landed[str(i)] == pytest.approx(expected, rel=1e-9, abs=1e-9)
        sent_before += sizes[i]
    assert max(landed.values()) == pytest.approx(sum(sizes) / BANDWIDTH + ONE_WAY_S, rel=1e-9)


def test_a_zero_byte_transfer_lands_after_the_one_way_delay() -> None:
    """A transfer of 0 bytes takes no link time, only the one-way delay, even while another
    transfer is using the link; and it does not slow that one down."""
    env, network = _network()
    landed: dict[str, float] = {}
    _send_at(env, network, 0.0, 1000.0, landed, "big")
    _send_at(env, network, 2.0, 0.0, landed, "empty")
    env.run()
    assert landed == pytest.approx({"empty": 2.5, "big": 10.5})


def test_a_transfer_within_a_site_is_instant_and_unrecorded() -> None:
    """Moving bytes from a site to itself needs no link: the event has already fired (value
    None) at the current time, and nothing goes in the records."""
    env, network = _network()
    event = network.transfer("a", "a", 1e9, "prompt", 10)
    assert event.triggered
    assert event.value is None
    env.run()
    assert env.now == 0.0
    assert network.records == []


def test_sites_without_a_link_raise_key_error() -> None:
    """A transfer between two sites no link joins raises KeyError naming them."""
    _, network = _network()
    with pytest.raises(KeyError, match="'a'.*'c'"):
        network.transfer("a", "c", 10.0, "prompt")


def test_records_carry_what_moved_where_and_when() -> None:
    """Each transfer is recorded when it starts (so one in flight is already in the ledger, with
    end_s NaN) with start, from, to, data class, bytes, records and purpose; end_s is set when it
    lands, and the done event's value is that record."""
    env, network = _network()
    values: list[TransferRecord] = []

    def sender() -> Generator[simpy.Event, Any, None]:
        yield env.timeout(3.0)
        record = yield network.transfer("b", "a", 250.0, "model_weights", 1, "artifact")
        values.append(record)

    env.process(sender())
    env.run(until=4.0)
    assert len(network.records) == 1
    in_flight = network.records[0]
    assert in_flight.start_s == 3.0
    assert in_flight.end_s != in_flight.end_s  # NaN: not landed yet
    env.run()
    assert values == [in_flight]
    assert vars(in_flight) == pytest.approx({
        "start_s": 3.0, "from_site": "b", "to_site": "a", "data_class": "model_weights",
        "bytes": 250.0, "records": 1.0, "purpose": "artifact", "end_s": 3.0 + 2.5 + ONE_WAY_S, "dataset": "",
    })


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 400), cuts=st.lists(st.floats(0.0, 10.0), max_size=6))
def test_a_link_carries_time_ordered_batches_as_it_carries_them_at_once(seed: int, n: int, cuts: list[float]) -> None:
    """`carry_from` (a streamed run's way back, batch after batch): payloads split at any times
    into batches, each carried from where the one before left the link, arrive exactly when
    they do carried at once (a thin link, so that payloads queue; sends on a coarse grid, so
    that many tie; some never sent). `send_order` is a stable sort by send time."""
    import numpy as np

    from sim.kernels.links import carry, carry_from, send_order

    rng = np.random.default_rng(seed)
    send = np.round(rng.random(n) * 10.0, 1)
    send[rng.random(n) < 0.1] = np.nan
    size = rng.integers(1_000, 50_000, n).astype(np.float64)
    jitter = rng.normal(0.0, 0.002, n)
    bandwidth, one_way = 1e6, 0.005  # 1 MB/s: a payload holds the link for 1-50 ms
    valid = np.flatnonzero(~np.isnan(send))
    assert np.array_equal(send_order(send), valid[np.argsort(send[valid], kind="stable")])
    whole = carry(send, size, bandwidth, one_way, jitter)
    pieces = np.full(n, np.nan)
    free_at = -np.inf
    bounds = [-np.inf, *sorted(cuts), np.inf]
    for low, high in zip(bounds[:-1], bounds[1:], strict=True):
        batch = np.flatnonzero((send > low) & (send <= high))
        pieces[batch], free_at = carry_from(send[batch], size[batch], bandwidth, one_way, jitter[batch], free_at)
    np.testing.assert_array_equal(pieces, whole)
