"""The privacy ledger: every transfer between sites, and what third parties get to see.

A row of the ledger is data moving from one site to another: when it left (`time_s`), the two
sites, its data class (`prompt`, `response`, `labelled_sample`, `telemetry_aggregate`,
`model_weights`, or a class the scenario adds), its size (`bytes`), how many records it
carries (`records`), why it moved (`purpose`) and the link it took (`link`). Two sources feed
it:

- **Request and response payloads**, for requests served at a site other than the clients'
  (`workload.origin`): each request's site is its pool's (`PoolRecord.site`), and its payloads
  cross the link between the origin and that site. Millions of requests would make millions of
  rows, so payloads are summed per minute, direction, site and traffic class: one row per
  minute for the requests of a class sent to a site in it (records = requests, bytes = their
  `request_bytes`, when the payload entered the link (after any outage it waited out; every
  request sent within the horizon counts, rejected ones too, since the prompt left the site;
  one cut off before it entered or sent to a pool at the origin does not), and one per minute
  for the responses that site sent back in it (`response_bytes`, at the pool's completion
  time, held while the path is cut; only completed requests send one; the first token is part
  of that payload, not extra bytes). Their data class is the traffic class's (`data_class`,
  `response_data_class`, default the workload's), and `traffic_class` names the class.
  A row's `time_s` is the byte-weighted mean send time of its payloads, so data at rest
  computed from the row equals the sum over its payloads. Requests served at the origin never
  cross a site boundary and leave no rows.
- **Bulk transfers** (`RunRecord.transfers`: telemetry, copies of requests for monitoring,
  training data, model artifacts): one row each, at the time it started; its bytes count in
  full even if the horizon cuts the transfer short. Their `traffic_class` is empty.

**Exposure** is what a third party gets to see. A third-party site sees (1) everything a
private site sends it, and (2) every response it generates for private clients: ledger rows
with purpose `response` sent from a third-party site to a private one (it computed them, so it
holds them). Exposure counts, per data class, those rows' bytes and **distinct** records, and
scores them: score = records x the class's `sensitivity`. A record counts once per third
party: a transfer that names its data set (`dataset`, e.g. a development job's data set,
uploaded again by every run of the job) adds its bytes and a transfer (`exposed_transfers`),
but its records only the first time that party sees them; payloads and transfers of new
records (`dataset` '') add all theirs. `exposed_records_by_purpose` splits the distinct
records by use: serving (requests, responses), monitoring, retraining, development. A class marked `anonymised` is uploaded as
aggregates: its bytes count, but its rows carry no customer records, so it adds 0 records and
0 score (the number of aggregates is reported apart, as `exposed_aggregates_by_class`).
`traffic_class_exposure` gives the same bytes, records and score per traffic class (its
requests' and responses' rows).

**Data at rest.** Each exposed row's bytes stay at the third-party site for the class's
`retention`, cut at the horizon: GB-days = bytes / 1e9 x min(retention, horizon - time_s) /
86400. A copy between two third-party sites of a class that was exposed is at rest at the
receiving site too (a second copy), but is not counted again as exposure. The number of
distinct third-party sites holding each class counts the sites where exposed data rests.
Classes the scenario does not declare (none are emitted today: checks reject unknown
workload classes) would count with sensitivity 1 and the default retention.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from sim.record import RunRecord
from sim.spec.scenario import DataClass, Scenario

LEDGER_COLUMNS = ["time_s", "from_site", "to_site", "data_class", "traffic_class", "bytes", "records", "purpose",
                  "link", "dataset"]
REQUEST_PURPOSE = "request"
RESPONSE_PURPOSE = "response"
MINUTE_S = 60.0
DAY_S = 86400.0
BYTES_PER_GB = 1e9  # decimal gigabytes, as sim.spec.units reads "1GB" and providers price it
PRIVATE, THIRD_PARTY = "private", "third_party"
UNDECLARED_CLASS = DataClass(sensitivity=1.0)


# ------------------------------------------------------------------------------------------
# The ledger
# ------------------------------------------------------------------------------------------


def privacy_ledger(record: RunRecord) -> pd.DataFrame:
    """Every transfer between two sites of a finished run, in time order (see the module doc)."""
    frames = [frame for frame in (*_payload_rows(record), _bulk_rows(record)) if len(frame)]
    if not frames:
        return _empty_ledger()
    ledger = pd.concat(frames, ignore_index=True)
    return ledger.sort_values("time_s", kind="stable").reset_index(drop=True)[LEDGER_COLUMNS]


def link_name(scenario: Scenario, a: str, b: str) -> str:
    found = scenario.link_between(a, b)
    return found[0] if found is not None else ""


def request_sites(record: RunRecord) -> np.ndarray:
    """Each request's serving site: its pool's site ('' when it reached no pool)."""
    sites = np.array([*(pool.site for pool in record.pools.values()), ""], dtype=object)
    pool = record.requests.pool
    return sites[np.where(pool >= 0, pool, len(record.pools))]


def _payload_rows(record: RunRecord) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Request and response rows per (pool site, traffic class) away from the origin."""
    if record.streamed:
        return _tallied_payload_rows(record)
    scenario = record.scenario
    workload = scenario.workload
    origin = workload.origin
    requests = record.requests
    sites = request_sites(record)
    ups: list[pd.DataFrame] = []
    downs: list[pd.DataFrame] = []
    for k, spec in enumerate(workload.class_specs()):
        mine = requests.traffic_class == k
        up_class = spec.data_class or workload.data_class
        down_class = spec.response_data_class or workload.response_data_class
        for site in sorted(set(sites[mine]) - {origin, ""}):
            here = mine & (sites == site)
            link = link_name(scenario, origin, site)
            up = _per_minute(requests.uplink_send_s[here], requests.request_bytes[here])
            down = _per_minute(requests.downlink_send_s[here], requests.response_bytes[here])
            ups.append(up.assign(from_site=origin, to_site=site, data_class=up_class, traffic_class=spec.name,
                                 purpose=REQUEST_PURPOSE, link=link, dataset="")[LEDGER_COLUMNS])
            downs.append(down.assign(from_site=site, to_site=origin, data_class=down_class, traffic_class=spec.name,
                                     purpose=RESPONSE_PURPOSE, link=link, dataset="")[LEDGER_COLUMNS])
    return _joined(ups), _joined(downs)


def _tallied_payload_rows(record: RunRecord) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`_payload_rows` of a streamed run, from its tally's per-minute sums."""
    scenario = record.scenario
    workload = scenario.workload
    origin = workload.origin
    specs = workload.class_specs()
    frames: tuple[list[pd.DataFrame], list[pd.DataFrame]] = ([], [])
    for (k, site, direction), sums in sorted(record.tally.payloads.items()):
        spec = specs[k]
        rows = minute_rows(sums)
        if direction == 0:
            data_class, ends, purpose = spec.data_class or workload.data_class, (origin, site), REQUEST_PURPOSE
        else:
            data_class, ends, purpose = (spec.response_data_class or workload.response_data_class, (site, origin),
                                         RESPONSE_PURPOSE)
        frames[direction].append(rows.assign(from_site=ends[0], to_site=ends[1], data_class=data_class,
                                             traffic_class=spec.name, purpose=purpose,
                                             link=link_name(scenario, origin, site), dataset="")[LEDGER_COLUMNS])
    return _joined(frames[0]), _joined(frames[1])


def _joined(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [frame for frame in frames if len(frame)]
    return pd.concat(frames, ignore_index=True) if frames else _empty_ledger()


def _per_minute(send_s: np.ndarray, size_bytes: np.ndarray) -> pd.DataFrame:
    """Payloads summed per minute of their send time: time_s, bytes, records (NaN = not sent)."""
    minute, sums = minute_sums(send_s, size_bytes)
    return minute_rows(sums)


def minute_sums(send_s: np.ndarray, size_bytes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The minutes payloads were sent in (NaN = not sent), and per minute (bytes, records,
    bytes x send time, send time) summed: sums that add up over parts of the payloads (a
    streamed run's chunks, `sim.metrics.tally`)."""
    sent = ~np.isnan(send_s)
    t = send_s[sent]
    size = np.asarray(size_bytes, dtype=np.float64)[sent]
    minute, index = np.unique(np.floor(t / MINUTE_S).astype(np.int64), return_inverse=True)
    sums = np.stack([np.bincount(index, weights=size, minlength=len(minute)),
                     np.bincount(index, minlength=len(minute)).astype(np.float64),
                     np.bincount(index, weights=size * t, minlength=len(minute)),
                     np.bincount(index, weights=t, minlength=len(minute))], axis=1)
    return minute, sums


def minute_rows(sums: np.ndarray) -> pd.DataFrame:
    """The ledger's time_s, bytes and records of each minute's `minute_sums` (minutes without
    a payload left out); time_s is the byte-weighted mean send time."""
    sums = sums[sums[:, 1] > 0]
    if len(sums) == 0:
        return pd.DataFrame({"time_s": [], "bytes": [], "records": []}, dtype=np.float64)
    nbytes, records, weighted, times = sums.T
    with np.errstate(invalid="ignore", divide="ignore"):
        time_s = np.where(nbytes > 0, weighted / nbytes, times / records)
    return pd.DataFrame({"time_s": time_s, "bytes": nbytes, "records": records})


def _bulk_rows(record: RunRecord) -> pd.DataFrame:
    transfers = record.transfers
    if transfers.empty:
        return _empty_ledger()
    scenario = record.scenario
    frame = pd.DataFrame({
        "time_s": transfers["start_s"].astype(np.float64), "from_site": transfers["from_site"],
        "to_site": transfers["to_site"], "data_class": transfers["data_class"], "traffic_class": "",
        "bytes": transfers["bytes"].astype(np.float64), "records": transfers["records"].astype(np.float64),
        "purpose": transfers["purpose"],
        "link": [link_name(scenario, a, b) for a, b in zip(transfers["from_site"], transfers["to_site"], strict=True)],
        "dataset": transfers["dataset"].fillna("") if "dataset" in transfers else "",
    })
    return frame[LEDGER_COLUMNS]


def _empty_ledger() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=object) for c in LEDGER_COLUMNS})
    return frame.astype({"time_s": np.float64, "bytes": np.float64, "records": np.float64})


# ------------------------------------------------------------------------------------------
# Exposure and data at rest
# ------------------------------------------------------------------------------------------


def data_class(scenario: Scenario, name: str) -> DataClass:
    return scenario.privacy.data_classes.get(name, UNDECLARED_CLASS)


def _zones(ledger: pd.DataFrame, scenario: Scenario) -> tuple[pd.Series, pd.Series]:
    zones = {name: site.zone for name, site in scenario.sites.items()}
    return ledger["from_site"].map(zones), ledger["to_site"].map(zones)


def exposed_rows(ledger: pd.DataFrame, scenario: Scenario) -> pd.Series:
    """Which ledger rows a third party gets to see (boolean mask; see the module doc)."""
    src, dst = _zones(ledger, scenario)
    uploads = (src == PRIVATE) & (dst == THIRD_PARTY)
    generated = (src == THIRD_PARTY) & (dst == PRIVATE) & (ledger["purpose"] == RESPONSE_PURPOSE)
    return uploads | generated


def third_party_holdings(ledger: pd.DataFrame, scenario: Scenario) -> pd.DataFrame:
    """Data resting at third-party sites: site, data_class, time_s, bytes, records, exposed."""
    src, dst = _zones(ledger, scenario)
    exposed = exposed_rows(ledger, scenario)
    holder = ledger["to_site"].where(dst == THIRD_PARTY, ledger["from_site"])
    classes = set(ledger.loc[exposed, "data_class"])
    copies = (src == THIRD_PARTY) & (dst == THIRD_PARTY) & ledger["data_class"].isin(classes)
    keep = exposed | copies
    return pd.DataFrame({
        "site": holder[keep], "data_class": ledger.loc[keep, "data_class"],
        "time_s": ledger.loc[keep, "time_s"], "bytes": ledger.loc[keep, "bytes"],
        "records": ledger.loc[keep, "records"], "exposed": exposed[keep],
    }).reset_index(drop=True)


def at_rest(ledger: pd.DataFrame, scenario: Scenario, horizon_s: float) -> pd.DataFrame:
    """GB-days of data resting at each third-party site, per data class, within the horizon."""
    holdings = third_party_holdings(ledger, scenario)
    retention = holdings["data_class"].map(lambda c: data_class(scenario, c).retention).astype(float)
    held_s = np.clip(np.minimum(retention, horizon_s - holdings["time_s"]), 0.0, None)
    gb_days = holdings["bytes"] / BYTES_PER_GB * held_s / DAY_S
    frame = holdings.assign(gb_days=gb_days)
    return frame.groupby(["site", "data_class"], as_index=False, sort=True)["gb_days"].sum()


def customer_records(scenario: Scenario, name: str, records: float) -> int:
    """The customer records that rows of data class `name` carrying `records` expose (none
    for an anonymised class: its rows are aggregates)."""
    return 0 if data_class(scenario, name).anonymised else int(round(records))


def traffic_class_exposure(ledger: pd.DataFrame, scenario: Scenario) -> dict[str, dict[str, Any]]:
    """Per traffic class: the bytes, records and score its requests' and responses' exposed
    rows carry (records and score as `exposure` counts them)."""
    rows = ledger[exposed_rows(ledger, scenario)]
    out: dict[str, dict[str, Any]] = {}
    for name in scenario.workload.class_names():
        by_class = rows[rows["traffic_class"] == name].groupby("data_class")[["bytes", "records"]].sum()
        records = {c: customer_records(scenario, str(c), float(n)) for c, n in by_class["records"].items()}
        out[name] = {
            "exposed_bytes": float(by_class["bytes"].sum()),
            "exposed_records": int(sum(records.values())),
            "exposure_score": float(sum(n * data_class(scenario, c).sensitivity for c, n in records.items())),
        }
    return out


PURPOSE_GROUPS = {REQUEST_PURPOSE: "serving", RESPONSE_PURPOSE: "serving", "monitoring": "monitoring",
                  "training data": "retraining"}


def purpose_group(purpose: str) -> str:
    """The use a transfer served: serving, monitoring, retraining, development (or its purpose)."""
    if purpose.startswith("development"):
        return "development"
    return PURPOSE_GROUPS.get(purpose, purpose)


def distinct_records(rows: pd.DataFrame, scenario: Scenario) -> pd.Series:
    """Per exposed row, the records it shows a third party for the first time: all of them for
    payloads and transfers of new records (`dataset` ''); for a named data set, its records
    once per third party and data class (on the first row of the largest upload), 0 on every
    other row."""
    _, dst = _zones(rows, scenario)
    holder = rows["to_site"].where(dst == THIRD_PARTY, rows["from_site"])
    named = rows["dataset"].fillna("").astype(str) != ""
    out = rows["records"].astype(float).where(~named, 0.0)
    if named.any():
        keys = pd.DataFrame({"holder": holder[named], "data_class": rows.loc[named, "data_class"],
                             "dataset": rows.loc[named, "dataset"], "records": rows.loc[named, "records"]})
        first = keys.sort_values("records", ascending=False, kind="stable").drop_duplicates(
            ["holder", "data_class", "dataset"])
        out.loc[first.index] = first["records"].astype(float)
    return out


def exposure(ledger: pd.DataFrame, scenario: Scenario, horizon_s: float) -> dict[str, Any]:
    """Summary fields of exposure and data at rest (DESIGN.md §2), with per-class breakdowns.
    Records are counted once per third party (`distinct_records`); `exposed_transfers` counts
    every payload and bulk transfer that showed them."""
    rows = ledger[exposed_rows(ledger, scenario)]
    payload = rows["purpose"].isin([REQUEST_PURPOSE, RESPONSE_PURPOSE])
    transfers = int(round(float(rows.loc[payload, "records"].sum()))) + int((~payload).sum())
    rows = rows.assign(records=distinct_records(rows, scenario))
    by_purpose = rows.assign(use=rows["purpose"].map(purpose_group))
    names = sorted(set(scenario.privacy.data_classes) | set(ledger["data_class"]))
    anonymised = {c for c in names if data_class(scenario, c).anonymised}
    by_class = rows.groupby("data_class")[["bytes", "records"]].sum()
    rest = at_rest(ledger, scenario, horizon_s)
    rest_by_class = rest.groupby("data_class")["gb_days"].sum()
    sites_by_class = rest.groupby("data_class")["site"].nunique()

    def total(column: str, name: str) -> float:
        return float(by_class[column].get(name, 0.0))

    bytes_by_class = {c: total("bytes", c) for c in names}
    records_by_class = {c: customer_records(scenario, c, total("records", c)) for c in names}
    aggregates_by_class = {c: int(round(total("records", c))) for c in names if c in anonymised}
    score_by_class = {c: records_by_class[c] * data_class(scenario, c).sensitivity for c in names}
    records_by_purpose: dict[str, int] = {}
    for (use, name), group in by_purpose.groupby(["use", "data_class"]):
        records_by_purpose[str(use)] = records_by_purpose.get(str(use), 0) + customer_records(
            scenario, str(name), float(group["records"].sum()))
    return {
        "exposed_bytes": float(sum(bytes_by_class.values())),
        "exposed_records": int(sum(records_by_class.values())),
        "exposed_transfers": transfers,
        "exposed_records_by_purpose": records_by_purpose,
        "exposure_score": float(sum(score_by_class.values())),
        "third_party_gb_days": float(rest["gb_days"].sum()),
        "exposed_bytes_by_class": bytes_by_class,
        "exposed_records_by_class": records_by_class,
        "exposed_aggregates_by_class": aggregates_by_class,
        "exposure_score_by_class": score_by_class,
        "third_party_gb_days_by_class": {c: float(rest_by_class.get(c, 0.0)) for c in names},
        "third_party_sites_by_class": {c: int(sites_by_class.get(c, 0)) for c in names},
    }
