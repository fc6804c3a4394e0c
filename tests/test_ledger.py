"""The privacy ledger and exposure: what crosses which site boundary, and how it scores.

A small two-site world is computed by hand: clients in a private `office` send one request a
second (constant arrivals, t_k = k for k = 0..3599 over a 1 h horizon) to one L4 in a
third-party `cloud` over a 20 ms, 1 Gbps link. Service is deterministic (0.5 s), prompts are
100 tokens and outputs 50, at 4 bytes per token plus 1024 bytes of overhead: each request is
1424 bytes, each response 1224 bytes, and every request completes (the last at 3599.51 s).
The four seed scenarios then check the placements' stories over their full day.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import sim
from sim.metrics import exposure, privacy_ledger
from sim.metrics.ledger import LEDGER_COLUMNS
from sim.record import RunRecord
from sim.result import Result, collect
from sim.world import World

SCENARIOS = Path(__file__).parent.parent / "scenarios"
SEED_SCENARIOS = {
    "s1": "s1_local.yaml", "s2": "s2_cloud_training.yaml", "s3": "s3_local_training.yaml",
    "s4": "s4_cloud_served_local_inference.yaml",
}
SENSITIVE = ("prompt", "response", "labelled_sample")

N = 3600  # requests: one a second for an hour
REQUEST_BYTES = 100 * 4 + 1024
RESPONSE_BYTES = 50 * 4 + 1024
ONE_WAY_S = 0.010
SERVICE_S = 0.5
UPLINK_S = REQUEST_BYTES / 1.25e8  # 1 Gbps = 1.25e8 bytes/s


def two_site_doc() -> dict[str, Any]:
    """Clients in a private office, inference on one L4 in a third-party cloud (see the module doc)."""
    return {
        "name": "two-site",
        "horizon": "1h",
        "sites": {
            "office": {"zone": "private"},
            "cloud": {"zone": "third_party", "provider": "aws",
                      "pools": [{"name": "serving", "gpu": "l4", "count": 1, "roles": ["serving"]}]},
        },
        "links": {"wan": {"ends": ["office", "cloud"], "rtt": "20ms", "bandwidth": "1Gbps"}},
        "model": {"id": "llama-3.1-8b", "service_time": {"dist": "deterministic", "mean": SERVICE_S}},
        "workload": {
            "origin": "office",
            "arrivals": {"process": "constant", "rate_per_s": 1},
            "prompt_tokens": {"dist": "fixed", "value": 100},
            "output_tokens": {"dist": "fixed", "value": 50},
        },
        "placement": {"inference": "cloud", "model_registry": "cloud"},
        "privacy": {"data_classes": {
            "prompt": {"sensitivity": 2.0, "retention": "30min"},
            "response": {"sensitivity": 0.5, "retention": "30d"},
        }},
    }


def run(doc: dict[str, Any] | Path, overrides: list[str] | None = None) -> tuple[RunRecord, Result]:
    record = World(sim.load_scenario(doc, overrides or [])).run()
    return record, collect(record)


def summary_of(record: RunRecord) -> dict[str, Any]:
    return exposure(privacy_ledger(record), record.scenario, record.scenario.horizon)


@pytest.fixture(scope="module")
def two_site() -> tuple[RunRecord, dict[str, Any]]:
    record, _ = run(two_site_doc())
    return record, summary_of(record)


@pytest.fixture(scope="module")
def seeds() -> dict[str, tuple[RunRecord, Result]]:
    """The four seed scenarios, one full day each (about 1.5 s apiece)."""
    return {key: run(SCENARIOS / name) for key, name in SEED_SCENARIOS.items()}


# ------------------------------------------------------------------------------------------
# The hand-computed two-site world
# ------------------------------------------------------------------------------------------


def test_ledger_rows_are_per_minute_and_direction(two_site: tuple[RunRecord, dict[str, Any]]) -> None:
    """Payloads are summed per minute and direction: 60 requests of 1424 bytes up, 60 responses
    of 1224 bytes down, in each of the 60 minutes; a request row's time is the mean send time
    of its minute (29.5 s for the first), a response row's the mean completion time
    (29.5 + 0.01 one way + 1424 / 1.25e8 s on the wire + 0.5 s of service)."""
    record, _ = two_site
    ledger = privacy_ledger(record)
    assert list(ledger.columns) == LEDGER_COLUMNS
    up = ledger[ledger["from_site"] == "office"]
    down = ledger[ledger["from_site"] == "cloud"]
    assert len(up) == len(down) == 60
    assert (up["records"] == 60).all() and (down["records"] == 60).all()
    assert (up["bytes"] == 60 * REQUEST_BYTES).all() and (down["bytes"] == 60 * RESPONSE_BYTES).all()
    assert set(up["data_class"]) == {"prompt"} and set(down["data_class"]) == {"response"}
    assert set(ledger["link"]) == {"wan"}
    assert up["time_s"].iloc[0] == pytest.approx(29.5)
    assert down["time_s"].iloc[0] == pytest.approx(29.5 + ONE_WAY_S + UPLINK_S + SERVICE_S)


def test_exposure_score_counts_records_times_sensitivity(two_site: tuple[RunRecord, dict[str, Any]]) -> None:
    """3600 prompts (sensitivity 2) go up and the cloud generates 3600 responses (0.5):
    score = 3600 x 2 + 3600 x 0.5 = 9000; bytes = 3600 x (1424 + 1224)."""
    _, s = two_site
    assert s["exposed_records_by_class"]["prompt"] == N
    assert s["exposed_records_by_class"]["response"] == N
    assert s["exposed_records"] == 2 * N
    assert s["exposure_score_by_class"] == pytest.approx(
        {"prompt": 2.0 * N, "response": 0.5 * N, "labelled_sample": 0.0, "telemetry_aggregate": 0.0,
         "model_weights": 0.0})
    assert s["exposure_score"] == pytest.approx(9000.0)
    assert s["exposed_bytes"] == pytest.approx(N * (REQUEST_BYTES + RESPONSE_BYTES))
    assert s["third_party_sites_by_class"]["prompt"] == s["third_party_sites_by_class"]["response"] == 1


def hand_gb_days(nbytes: float, times: np.ndarray, retention_s: float, horizon_s: float = 3600.0) -> float:
    return float(sum(nbytes * min(retention_s, horizon_s - t) for t in times)) / 1e9 / 86400


def test_gb_days_cut_by_retention_and_horizon(two_site: tuple[RunRecord, dict[str, Any]]) -> None:
    """GB-days = sum over payloads of bytes/1e9 x min(retention, horizon - time)/86400.
    Prompts (retention 30 min) sent at k: 1424 x (1801 x 1800 + 1799 x 1800 / 2) byte-seconds;
    responses (retention 30 d, so the horizon cuts them) sent at k + 0.51 s (+ wire time)."""
    _, s = two_site
    k = np.arange(N, dtype=float)
    prompt = 1424 * (1801 * 1800 + 1799 * 1800 / 2) / 1e9 / 86400
    assert prompt == pytest.approx(hand_gb_days(REQUEST_BYTES, k, 1800.0))
    response = hand_gb_days(RESPONSE_BYTES, k + ONE_WAY_S + UPLINK_S + SERVICE_S, 30 * 86400.0)
    assert s["third_party_gb_days_by_class"]["prompt"] == pytest.approx(prompt, rel=1e-9)
    assert s["third_party_gb_days_by_class"]["response"] == pytest.approx(response, rel=1e-9)
    assert s["third_party_gb_days"] == pytest.approx(prompt + response, rel=1e-9)


def test_anonymised_class_adds_bytes_but_no_records_or_score() -> None:
    """Marking responses anonymised (uploaded as aggregates): their 3600 x 1224 bytes still
    count and still rest in the cloud, but they add 0 records and 0 score; the 3600 rows'
    records are reported as aggregates instead. Score = 3600 x 2 = 7200."""
    doc = two_site_doc()
    doc["privacy"]["data_classes"]["response"]["anonymised"] = True
    record, _ = run(doc)
    s = summary_of(record)
    assert s["exposed_bytes_by_class"]["response"] == pytest.approx(N * RESPONSE_BYTES)
    assert s["exposed_records_by_class"]["response"] == 0
    assert s["exposed_aggregates_by_class"]["response"] == N
    assert s["exposure_score"] == pytest.approx(2.0 * N)
    assert s["exposed_records"] == N
    assert s["third_party_gb_days_by_class"]["response"] > 0


def test_same_site_payloads_leave_no_rows() -> None:
    """Clients and inference at the same site: nothing crosses a site boundary, no rows."""
    doc = two_site_doc()
    doc["sites"]["office"]["pools"] = [{"name": "gpus", "gpu": "l4", "count": 1, "roles": ["serving"]}]
    doc["sites"]["cloud"]["pools"] = []  # a serving pool no request is routed to is refused
    doc["placement"] = {"inference": "office", "model_registry": "office"}
    record, _ = run(doc)
    ledger = privacy_ledger(record)
    assert ledger.empty and list(ledger.columns) == LEDGER_COLUMNS
    s = summary_of(record)
    assert s["exposed_bytes"] == 0 and s["exposure_score"] == 0 and s["third_party_gb_days"] == 0


def test_private_to_private_is_not_exposure() -> None:
    """Two private sites (a branch sending to a data centre of our own): the ledger has the
    payload rows, but none of them is exposure."""
    doc = two_site_doc()
    doc["sites"]["cloud"] = {"zone": "private", "pools": [{"name": "serving", "gpu": "l4", "count": 1,
                                                           "roles": ["serving"]}]}
    record, _ = run(doc)
    ledger = privacy_ledger(record)
    assert ledger["records"].sum() == 2 * N
    assert summary_of(record)["exposed_records"] == 0


# ------------------------------------------------------------------------------------------
# The seed scenarios
# ------------------------------------------------------------------------------------------


def development_records(record: RunRecord) -> float:
    """Distinct records the development experiments' data uploads carried from the premises:
    each job's data set once, however often it was uploaded again."""
    transfers = record.transfers
    mine = transfers[transfers["purpose"].str.startswith("development") & (transfers["from_site"] == "premises")]
    return float(mine.groupby("dataset")["records"].max().sum())


@pytest.mark.parametrize("key", ["s1", "s3"])
def test_local_placements_expose_nothing_sensitive(seeds: dict[str, tuple[RunRecord, Result]], key: str) -> None:
    """S1 and S3 keep prompts, responses and labelled samples on the premises: no record or
    byte of a sensitive class reaches a third-party zone, and the score is 0."""
    record, _ = seeds[key]
    s = summary_of(record)
    for name in SENSITIVE:
        assert s["exposed_records_by_class"][name] == 0
        assert s["exposed_bytes_by_class"][name] == 0
    assert s["exposure_score"] == 0


def test_cloud_placement_exposes_every_prompt_and_response(seeds: dict[str, tuple[RunRecord, Result]]) -> None:
    """S2 serves from the cloud: every prompt sent and every response completed is exposed,
    and the 8000 labelled samples its retraining uploads (training_sample 1.0), plus the
    distinct records of the development experiments' data sets."""
    record, result = seeds["s2"]
    s = summary_of(record)
    assert s["exposed_records_by_class"]["prompt"] == result.summary["requests_total"]
    assert s["exposed_records_by_class"]["response"] == result.summary["requests_completed"]
    development = development_records(record)
    assert s["exposed_records_by_class"]["labelled_sample"] == record.scenario.lifecycle.retraining.samples + development
    assert s["exposed_bytes_by_class"]["prompt"] == pytest.approx(record.requests.request_bytes.sum())


def test_cloud_served_local_inference_exposes_only_what_it_uploads(
        seeds: dict[str, tuple[RunRecord, Result]]) -> None:
    """S4 infers on premises: no prompt or response leaves; its retraining uploads
    samples x training_sample = 8000 x 0.3 = 2400 labelled samples, and its development
    experiments upload their data; monitoring may send telemetry aggregates; nothing else is
    exposed (the weights it pulls back are not)."""
    record, _ = seeds["s4"]
    s = summary_of(record)
    development = development_records(record)
    assert s["exposed_records_by_class"]["prompt"] == s["exposed_records_by_class"]["response"] == 0
    assert s["exposed_records_by_class"]["labelled_sample"] == 2400 + development
    exposed = {c for c, b in s["exposed_bytes_by_class"].items() if b > 0}
    assert exposed <= {"labelled_sample", "telemetry_aggregate"}
    # aggregates are anonymised: no score
    assert s["exposure_score"] == pytest.approx((2400 + development) * 1.0 + 0.0)


@pytest.mark.parametrize("key", ["s2", "s4"])
def test_ledger_bytes_equal_what_the_links_carried(seeds: dict[str, tuple[RunRecord, Result]], key: str) -> None:
    """Per link direction, the ledger's bytes equal the request payloads the uplink carried
    (those sent to a pool by the horizon: they have one), plus the responses the downlink
    carried back (completed requests with a client arrival time), plus the bulk transfers'
    bytes."""
    record, result = seeds[key]
    ledger = privacy_ledger(record)
    carried: dict[tuple[str, str], float] = {}
    scenario = record.scenario
    requests = record.requests
    origin, site = scenario.workload.origin, scenario.placement.inference
    if origin != site:
        carried[(origin, site)] = float(requests.request_bytes[requests.pool >= 0].sum())
        back = result.requests["done_s"].notna().to_numpy()
        carried[(site, origin)] = float(requests.response_bytes[back].sum())
    for transfer in record.transfers.itertuples():
        pair = (transfer.from_site, transfer.to_site)
        carried[pair] = carried.get(pair, 0.0) + transfer.bytes
    in_ledger = ledger.groupby(["from_site", "to_site"])["bytes"].sum().to_dict()
    assert in_ledger == pytest.approx(carried)
