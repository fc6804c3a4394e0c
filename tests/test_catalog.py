"""The shipped catalog: it validates, it is complete, it is sourced, and its key numbers match FACTS."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from sim.catalog import Catalog, load_catalog, shipped_catalog

TODAY = dt.date.today()  # nothing in a catalog is dated in the future

REQUIRED_GPUS = {
    "a100-40gb",
    "a100-80gb",
    "h100-sxm",
    "h100-pcie",
    "h200",
    "l40s",
    "l4",
    "a10g",
    "t4",
    "b200",
    "mi300x",
    "rtx-4090",
}

REQUIRED_MODELS = {
    "llama-2-7b",
    "llama-2-13b",
    "llama-2-70b",
    "llama-3.1-8b",
    "llama-3.1-70b",
    "codellama-34b",
    "mistral-7b",
    "qwen2.5-7b",
    "qwen3-14b",
    "mixtral-8x7b",
    "mixtral-8x22b",
    "bert-base",
    "resnet-50",
}


def _sourced_entries(catalog: Catalog):
    """Every entry that must carry source/as_of, with a readable label."""
    for gpu_id, gpu in catalog.gpus.items():
        yield f"gpus.{gpu_id}", gpu
        for i, price in enumerate(gpu.cloud_prices):
            yield f"gpus.{gpu_id}.cloud_prices[{i}]", price
    for model_id, model in catalog.models.items():
        yield f"models.{model_id}", model
        for i, latency in enumerate(model.batch_latency):
            yield f"models.{model_id}.batch_latency[{i}]", latency
    for section in ("egress", "storage", "power", "commitments"):
        for key, price in getattr(catalog.prices, section).items():
            yield f"prices.{section}.{key}", price
    if catalog.prices.facility is not None:
        yield "prices.facility", catalog.prices.facility
    for server_id, server in catalog.servers.items():
        yield f"servers.{server_id}", server


def test_shipped_catalog_validates():
    """The three shipped YAML files load and validate against the pydantic schema."""
    catalog = shipped_catalog()
    assert isinstance(catalog, Catalog)
    assert catalog.prices.egress and catalog.prices.storage and catalog.prices.power


def test_required_gpu_ids():
    """The shipped GPU catalog has exactly the agreed set of GPU ids."""
    assert set(shipped_catalog().gpus) == REQUIRED_GPUS


def test_required_model_ids():
    """The shipped model catalog has exactly the agreed set of model ids."""
    assert set(shipped_catalog().models) == REQUIRED_MODELS


def test_required_price_keys():
    """Egress and storage cover the three big clouds; power has the four agreed profiles."""
    prices = shipped_catalog().prices
    assert set(prices.egress) == {"aws", "gcp", "azure"}
    assert set(prices.storage) == {"aws", "gcp", "azure"}
    assert set(prices.power) == {"us-industrial", "us-commercial", "eu-industrial", "hyperscale"}


def test_every_entry_is_sourced_and_dated():
    """Every GPU, cloud price, model, batch-latency and price entry names a source and a past date."""
    entries = list(_sourced_entries(shipped_catalog()))
    assert len(entries) > 25
    for label, entry in entries:
        assert entry.source.strip(), f"{label} has an empty source"
        assert isinstance(entry.as_of, dt.date), label
        assert entry.as_of <= TODAY, f"{label} is dated in the future ({entry.as_of})"


def test_estimated_fields_say_so():
    """idle_w is not in FACTS, so every GPU source marks it as an [E] estimate; training MFU says
    what it was fitted to (or that it is an estimate)."""
    for gpu_id, gpu in shipped_catalog().gpus.items():
        assert "[E]" in gpu.source, gpu_id
        assert "idle_w" in gpu.source, gpu_id
        assert gpu.training.fitted_to, gpu_id


def test_every_engine_says_where_its_factors_come_from():
    """Each engine profile has a source, a date, complete defaults and priors, and says what
    it was fitted to; per-GPU entries name catalog GPUs."""
    catalog = shipped_catalog()
    assert {"vllm", "tensorrt-llm", "lmdeploy", "llama.cpp"} <= set(catalog.engines)
    for name, engine in catalog.engines.items():
        assert engine.source.strip() and engine.as_of <= TODAY, name
        assert engine.fitted_to, name
        assert engine.priors is not None and all(v is not None for v in engine.priors.model_dump().values()), name
        assert set(engine.gpus) <= set(catalog.gpus), name
    vllm = catalog.engines["vllm"]
    assert "runs.csv" in vllm.fitted_to and "leave-one-out" in vllm.fit_error


@pytest.mark.parametrize(
    ("model_id", "kib"),
    [("llama-3.1-8b", 128), ("llama-3.1-70b", 320), ("qwen2.5-7b", 56), ("llama-2-7b", 512)],
)
def test_kv_bytes_per_token_match_facts(model_id, kib):
    """KV-cache bytes per token at bf16 equal the FACTS §2 figures (2 x layers x kv_heads x head_dim x 2 B)."""
    model = shipped_catalog().models[model_id]
    assert model.kv_bytes_per_token("bf16") == kib * 1024


def test_llama31_8b_weight_bytes():
    """Llama-3.1-8B (8.03B params) weighs about 16.06 GB at bf16."""
    model = shipped_catalog().models["llama-3.1-8b"]
    assert model.weight_bytes("bf16") == pytest.approx(16.06e9, rel=1e-3)


def test_h100_sxm_dense_peaks():
    """H100 SXM peaks are the dense datasheet values: 989 TFLOPS bf16 and 1979 TFLOPS fp8."""
    gpu = shipped_catalog().gpus["h100-sxm"]
    assert gpu.peak_flops["bf16"] == pytest.approx(989e12)
    assert gpu.peak_flops["fp8"] == pytest.approx(1979e12)
    assert gpu.memory == 81559 * 2**20  # what the driver shows: about 80 GiB, not 80e9 bytes
    assert gpu.memory_bandwidth == pytest.approx(3.35e12)


def test_precision_support_matches_hardware():
    """T4 has fp16/int8 but no bf16 or fp8; the A100s have int8 but no fp8."""
    gpus = shipped_catalog().gpus
    t4 = gpus["t4"].peak_flops
    assert "fp16" in t4 and "int8" in t4
    assert "bf16" not in t4 and "fp8" not in t4
    for gpu_id in ("a100-40gb", "a100-80gb"):
        assert "int8" in gpus[gpu_id].peak_flops and "fp8" not in gpus[gpu_id].peak_flops


def test_idle_below_tdp():
    """Every GPU idles below its TDP, and more with an engine loaded than without."""
    for gpu_id, gpu in shipped_catalog().gpus.items():
        assert 0 < gpu.idle_w <= gpu.loaded_idle_w < gpu.tdp_w, gpu_id


def test_moe_models_have_experts():
    """The Mixtral models are mixture-of-experts with 8 experts, 2 per token; dense models are not MoE."""
    models = shipped_catalog().models
    for model_id in ("mixtral-8x7b", "mixtral-8x22b"):
        model = models[model_id]
        assert model.is_moe
        assert model.experts == 8 and model.experts_per_token == 2 and model.expert_ffn
    assert not models["llama-3.1-8b"].is_moe


def test_classic_models_have_flops_and_batch_latency():
    """BERT-base and ResNet-50 are classic models with per-item FLOPs and batch latency on T4."""
    catalog = shipped_catalog()
    for model_id in ("bert-base", "resnet-50"):
        model = catalog.models[model_id]
        assert model.kind == "classic"
        assert model.flops_per_item and model.flops_per_item > 0
        gpus = {latency.gpu for latency in model.batch_latency}
        assert "t4" in gpus and gpus <= set(catalog.gpus)


def test_override_changes_only_named_field():
    """A user catalog overriding l4's training MFU changes that field and keeps the l4's other numbers."""
    shipped = shipped_catalog().gpus["l4"]
    merged = load_catalog({"gpus": {"l4": {"training": {"mfu": 0.33}}}}).gpus["l4"]
    assert merged.training.mfu == 0.33
    assert merged.training.lora_mfu == shipped.training.lora_mfu
    assert merged.memory == shipped.memory
    assert merged.peak_flops == shipped.peak_flops
    assert merged.cloud_prices == shipped.cloud_prices
    assert shipped_catalog().gpus["l4"].training.mfu == shipped.training.mfu


def test_engine_override_changes_only_named_factor():
    """A user catalog overriding one vllm factor on one GPU keeps the engine's other factors and
    leaves other GPUs on the defaults."""
    shipped = shipped_catalog().engines["vllm"]
    merged = load_catalog({"engines": {"vllm": {"gpus": {"l4": {"bandwidth": 0.5}}}}}).engines["vllm"]
    assert merged.factors("l4")["bandwidth"] == 0.5
    assert merged.factors("l4")["overhead_s"] == shipped.factors("l4")["overhead_s"]
    assert merged.factors("h100-sxm") == shipped.factors("h100-sxm")


def test_engine_factors_for_an_unknown_gpu_are_rejected():
    """Per-GPU engine factors must name a catalog GPU."""
    with pytest.raises(ValidationError, match="unknown GPU"):
        load_catalog({"engines": {"vllm": {"gpus": {"h900": {"bandwidth": 0.5}}}}})


def test_user_catalog_can_add_a_gpu():
    """A user catalog may add a GPU id the shipped catalog lacks; the shipped GPUs remain."""
    new_gpu = {
        "name": "Example accelerator",
        "vendor": "example",
        "peak_flops": {"bf16": 500e12},
        "memory": "96GB",
        "memory_bandwidth": "4TB/s",
        "tdp_w": 600,
        "idle_w": 60,
        "loaded_idle_w": 90,
        "interconnect_bandwidth": "400GB/s",
        "purchase_usd": 20000,
        "server": "hgx-8",
        "training": {"mfu": 0.4, "lora_mfu": 0.35},
        "source": "test fixture",
        "as_of": "2026-11-01",
    }
    catalog = load_catalog({"gpus": {"my-accel": new_gpu}})
    assert catalog.gpus["my-accel"].memory == pytest.approx(96e9)
    assert catalog.gpus["my-accel"].training.lora_mfu == pytest.approx(0.35)
    assert REQUIRED_GPUS.issubset(catalog.gpus)


def test_negative_memory_override_rejected():
    """An override giving a GPU negative memory fails validation."""
    with pytest.raises(ValidationError):
        load_catalog({"gpus": {"l4": {"memory": "-24GB"}}})


def test_engine_factors_in_the_catalog_are_the_roofline_profile_fields():
    """A catalog engine's factors (what `deploysim catalog engines` lists, without numba) are the
    roofline's `EngineProfile` fields, in its order: a factor added to one is added to both."""
    from sim.catalog import EngineFactors
    from sim.kernels.roofline import PROFILE_FIELDS

    assert tuple(EngineFactors.model_fields) == PROFILE_FIELDS
