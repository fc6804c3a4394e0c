"""Exposure by distinct record: a data set uploaded again adds transfers and bytes, not
records (`sim.metrics.ledger.exposure`, `distinct_records`)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import sim
from sim.metrics.ledger import LEDGER_COLUMNS, exposure

S4 = Path(__file__).parent.parent / "scenarios" / "s4_cloud_served_local_inference.yaml"
DAY_S = 86400.0


def row(t: float, data_class: str, nbytes: float, records: float, purpose: str, dataset: str = "",
        to_site: str = "cloud") -> dict[str, object]:
    return {"time_s": t, "from_site": "premises", "to_site": to_site, "data_class": data_class, "traffic_class": "",
            "bytes": nbytes, "records": records, "purpose": purpose, "link": "wan", "dataset": dataset}


def test_a_dataset_uploaded_five_times_exposes_its_records_once() -> None:
    """Five uploads of the same 20,000-record development data set (100 MB each) and one upload
    of 900 new labelled samples: 20,900 distinct records (labelled_sample sensitivity 1: score
    20,900), 600 MB, six transfers; by purpose development 20,000 and retraining 900."""
    scenario = sim.load_scenario(S4)
    rows = [row(3600.0 * k, "labelled_sample", 1e8, 20_000, "development: lora-experiment",
                "development:lora-experiment") for k in range(5)]
    rows.append(row(30_000.0, "labelled_sample", 900 * 8192.0, 900, "training data"))
    ledger = pd.DataFrame(rows)[LEDGER_COLUMNS]
    out = exposure(ledger, scenario, DAY_S)
    assert out["exposed_records"] == 20_900
    assert out["exposed_records_by_class"]["labelled_sample"] == 20_900
    assert out["exposure_score"] == pytest.approx(20_900.0)
    assert out["exposed_bytes"] == pytest.approx(5e8 + 900 * 8192.0)
    assert out["exposed_transfers"] == 6
    assert out["exposed_records_by_purpose"] == {"development": 20_000, "retraining": 900}


def test_the_same_dataset_at_two_third_parties_counts_once_at_each() -> None:
    """A data set seen by two third parties is exposed to each: its records count twice."""
    base = sim.load_scenario(S4)
    sites = dict(base.sites)
    sites["other"] = sites["cloud"]
    scenario = base.model_copy(update={"sites": sites})
    rows = [row(0.0, "labelled_sample", 1e8, 1000, "development: x", "development:x", to_site=site)
            for site in ("cloud", "cloud", "other")]
    out = exposure(pd.DataFrame(rows)[LEDGER_COLUMNS], scenario, DAY_S)
    assert out["exposed_records"] == 2000 and out["exposed_transfers"] == 3


def test_s4_counts_its_development_dataset_once() -> None:
    """S4 over a day: every development run uploads the same 20,000-record data set to the
    cloud; the distinct records exposed are the labelled sample (2400) plus 20,000 once, however
    many experiments ran, while the transfers count every upload."""
    result = sim.simulate(sim.load_scenario(S4, ["replications=1"]))
    transfers = result.tables["bulk_transfers"]
    dev = transfers[transfers["purpose"].str.startswith("development") & (transfers["to_site"] == "cloud")]
    samples = transfers[(transfers["purpose"] == "training data") & (transfers["to_site"] == "cloud")]
    summary = result.summary
    assert len(dev) >= 1 and (dev["records"] == 20_000).all()
    assert summary["exposed_records_by_purpose"]["development"] == 20_000
    assert summary["exposed_records_by_purpose"]["retraining"] == int(samples["records"].sum())
    assert summary["exposed_transfers"] >= len(dev) + len(samples)
