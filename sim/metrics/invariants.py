"""Conservation laws every run must keep, checked on its record by the runner.

- **Every request ends exactly once** (completed, failed, rejected, or unfinished at the
  horizon), in exactly one pool (or in none, failed, when its client gave up before any path
  to a pool came back), with times that make sense: an ended request has an end
  time within the horizon (plus, for a completed one, the engine front end's delivery lag);
  one that did not end has none; a completed one got its first token after it arrived and
  finished after its first token; none made more attempts than the retry limit. The requests
  table says what the record says.
- **Every byte is in the ledger**: per link direction, the privacy ledger records exactly the
  bytes handed to the link (bulk transfers, request and response payloads), and no direction
  sent more than it was given; no transfer ended before it started; a request whose payload
  entered a link has a pool (the ledger says where its bytes went by its pool's site).

A broken law raises `InvariantError`, naming a few of the requests involved.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sim.kernels.batching import DONE, FAILED, REJECTED
from sim.metrics.ledger import request_sites
from sim.record import RequestTable, RunRecord

STATUS_OF_CODE = {DONE: "completed", REJECTED: "rejected", FAILED: "failed"}
BYTES_TOLERANCE = 1e-6  # relative, for sums of float byte counts


class InvariantError(AssertionError):
    """A run broke a conservation law: a request did not end exactly once, or bytes went missing."""


def status_names(status: np.ndarray) -> np.ndarray:
    """The result's status category of each kernel status code."""
    names = np.full(len(status), "unfinished", dtype=object)
    for code, name in STATUS_OF_CODE.items():
        names[status == code] = name
    return names


def _fail(message: str, examples: np.ndarray | None = None) -> None:
    if examples is not None and len(examples):
        message += f" (requests {', '.join(str(int(i)) for i in examples[:5])}{', ...' if len(examples) > 5 else ''})"
    raise InvariantError(message)


def check_requests(record: RunRecord, frame: pd.DataFrame) -> None:
    """Every generated request ends exactly once, in one pool, with consistent times."""
    req = record.requests
    n = len(req)
    horizon = record.horizon_s
    if len(frame) != n:
        _fail(f"the requests table has {len(frame)} rows for {n} generated requests")
    ids = frame["request"].to_numpy()
    if not np.array_equal(np.sort(ids), np.arange(n)):
        _fail("the requests table does not list every request exactly once")
    status = frame["status"].astype(object).to_numpy()
    missing = np.flatnonzero(pd.isna(status))
    if len(missing):
        _fail("requests without a status", missing)
    expected = status_names(req.status)
    wrong = np.flatnonzero(status != expected)
    if len(wrong):
        i = wrong[0]
        _fail(f"{len(wrong)} requests have a status in the table that differs from how they ended "
              f"(request {i}: table says {status[i]!r}, the pools say {expected[i]!r})", wrong)
    ended = np.isin(req.status, (DONE, FAILED, REJECTED))
    pools = list(record.pools.values())
    # a client that gave up while every path to its pools was cut ends without a pool
    unrouted = ended & (req.pool < 0)
    ended_in_pools = sum(p.requests_ended for p in pools)
    if ended_in_pools != int((ended & ~unrouted).sum()):
        _fail(f"the pools ended {ended_in_pools} requests between them, but {int((ended & ~unrouted).sum())} "
              "requests sent to a pool ended: some ended in more than one pool, or in a pool they were not sent to")
    check_rows(req, np.arange(n), len(pools))
    # a request whose last iteration ended by the horizon may still be in the engine's front end
    lag_of_pool = np.array([p.frontend_lag_bound_s for p in pools] + [0.0])
    lag = np.where(req.status == DONE, lag_of_pool[np.where(req.pool >= 0, req.pool, len(pools))], 0.0)
    with np.errstate(invalid="ignore"):
        bad_end = np.flatnonzero(ended & ~(req.done_s <= horizon + lag))
    if len(bad_end):
        _fail("ended requests without an end time within the horizon", bad_end)
    if record.retry_limit is not None:
        over = np.flatnonzero(req.attempts > record.retry_limit)
        if len(over):
            _fail(f"requests that made more than max_attempts={record.retry_limit} attempts", over)


def check_rows(req: RequestTable, request: np.ndarray, pools: int) -> None:
    """The laws each request keeps on its own (`request`: their numbers, for the message):
    it ended in a pool that exists, or without one only by giving up on the way; one that did
    not end has no end time; a completed one arrived, got its first token, then finished."""
    ended = np.isin(req.status, (DONE, FAILED, REJECTED))
    outside = request[ended & (req.pool >= pools)]
    if len(outside):
        _fail("requests that ended in a pool that does not exist", outside)
    with np.errstate(invalid="ignore"):
        stray = request[ended & (req.pool < 0) & ((req.status != FAILED) | ~np.isnan(req.pool_arrival_s))]
    if len(stray):
        _fail("requests that ended without a pool other than by giving up on the way", stray)
    done = req.done_s
    with np.errstate(invalid="ignore"):
        bad_open = request[~ended & ~np.isnan(done)]
        early = request[(req.status == DONE) & ~(done >= req.first_token_s)]
        before = request[(req.status == DONE) & ~(req.first_token_s >= req.pool_arrival_s)]
    if len(bad_open):
        _fail("requests that did not end but have an end time", bad_open)
    if len(early):
        _fail("completed requests that ended before their first token", early)
    if len(before):
        _fail("completed requests whose first token came before they arrived", before)


def check_streamed(record: RunRecord) -> None:
    """The laws over a streamed run's requests, on its tally (each request's own laws were
    checked on its chunk, `check_rows`): every generated request ended exactly once or is
    unfinished, each pool ended as many as the tally counts there, and every end time is
    within the horizon (plus a completed request's front-end lag)."""
    tally = record.tally
    generated = record.requests_generated
    if not tally.all_seen(generated):
        _fail(f"the tally took in {tally.requests} requests for {generated} generated, or some twice")
    pools = list(record.pools.values())
    for p, pool in enumerate(pools):
        if pool.requests_ended != int(tally.ended_by_pool[p]):
            _fail(f"pool {pool.name} ended {pool.requests_ended} requests, but {int(tally.ended_by_pool[p])} "
                  "requests ended there")
    horizon = record.horizon_s
    lag = np.array([p.frontend_lag_bound_s for p in pools] + [0.0])
    if tally.ended_without_end or (tally.latest_done_by_pool > horizon + lag).any() or tally.latest_other_end > horizon:
        _fail("ended requests without an end time within the horizon")
    if record.retry_limit is not None and tally.most_attempts > record.retry_limit:
        _fail(f"requests that made more than max_attempts={record.retry_limit} attempts")


def carried_bytes(record: RunRecord) -> dict[tuple[str, str], float]:
    """Bytes handed to each link direction: bulk transfers, request and response payloads
    (between the clients' site and the site of each request's pool)."""
    carried: dict[tuple[str, str], float] = {}
    for row in record.link_bytes.itertuples():
        if row.accepted_bytes:
            carried[(str(row.from_site), str(row.to_site))] = float(row.accepted_bytes)  # type: ignore[arg-type]
    origin = record.scenario.workload.origin
    if record.streamed:
        for key, nbytes in record.tally.link_bytes.items():
            if nbytes:
                carried[key] = carried.get(key, 0.0) + nbytes
        return carried
    req = record.requests
    sites = request_sites(record)
    for site in sorted(set(sites) - {origin, ""}):
        here = sites == site
        up = float(req.request_bytes[here & ~np.isnan(req.uplink_send_s)].sum())
        down = float(req.response_bytes[here & (req.status == DONE)].sum())
        for key, nbytes in (((origin, site), up), ((site, origin), down)):
            if nbytes:
                carried[key] = carried.get(key, 0.0) + nbytes
    return carried


def check_ledger(record: RunRecord, ledger: pd.DataFrame) -> None:
    """Per link direction, the ledger's bytes equal the bytes handed to the link, and no
    direction sent more than it was given; a request that entered a link went to a pool."""
    req = record.requests
    lost = np.flatnonzero(~np.isnan(req.uplink_send_s) & (req.pool < 0))
    if len(lost):
        _fail("requests that entered a link without a pool at its other end", lost)
    recorded = ledger.groupby(["from_site", "to_site"])["bytes"].sum().to_dict() if len(ledger) else {}
    carried = carried_bytes(record)
    for key in sorted(set(recorded) | set(carried)):
        a, b = float(recorded.get(key, 0.0)), float(carried.get(key, 0.0))
        if abs(a - b) > BYTES_TOLERANCE * max(1.0, a, b):
            raise InvariantError(f"the ledger records {a:.6g} bytes from {key[0]} to {key[1]}, "
                                 f"but the link was handed {b:.6g}")
    for row in record.link_bytes.itertuples():
        if row.sent_bytes > row.accepted_bytes * (1 + BYTES_TOLERANCE) + 1.0:  # type: ignore[operator]
            raise InvariantError(f"the link from {row.from_site} to {row.to_site} sent {row.sent_bytes:.6g} bytes "
                                 f"of the {row.accepted_bytes:.6g} it was given")
    transfers = record.transfers
    backwards = transfers[transfers["end_s"].notna() & (transfers["end_s"] < transfers["start_s"])]
    if len(backwards):
        first = backwards.iloc[0]
        raise InvariantError(f"a transfer from {first['from_site']} to {first['to_site']} ended before it started")


def check_invariants(record: RunRecord, requests: pd.DataFrame, ledger: pd.DataFrame | None) -> None:
    """Raise InvariantError if a request did not end exactly once or the ledger lost bytes."""
    check_requests(record, requests)
    if ledger is not None:
        check_ledger(record, ledger)
