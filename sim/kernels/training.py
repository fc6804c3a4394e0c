"""Training time: how long a fine-tuning job holds its GPUs.

    FLOPs      = k x params x tokens,   k = 6 for full fine-tuning (forward + backward of all
                 weights), k = 4 for LoRA (the frozen weights still run forward and propagate
                 gradients to activations, but no weight gradients: about 2/3 of full)
    tokens     = samples x tokens_per_sample x epochs
    throughput = gpus x peak(bf16) x training_mfu x (scaling_efficiency if gpus > 1 else 1)
    time       = FLOPs / throughput

The rule 6 x N x D is the standard approximation (FACTS §4a); training MFU defaults per GPU and
method in the catalog (`training.mfu` for full fine-tuning, `training.lora_mfu` for LoRA;
35-45% for well-tuned dense training, FACTS §4a). Artifacts: full weights at the
serving precision, or a LoRA adapter of rank r on the attention and MLP projections, stored in
bf16: 2 bytes x r x (in + out) per adapted matrix per layer.
"""

from __future__ import annotations

from sim.catalog import GPU, Model

TRAINING_FLOPS_PER_PARAM_TOKEN = {"full": 6.0, "lora": 4.0}


def training_mfu(gpu: GPU, method: str, full: float | None = None, lora: float | None = None) -> float:
    """The MFU a fine-tuning job of `method` reaches on `gpu` (`full` / `lora` override the
    catalog's; evaluations run forward passes at the full fine-tuning MFU)."""
    if method == "lora":
        return lora if lora is not None else gpu.training.lora_mfu
    return full if full is not None else gpu.training.mfu


def training_tokens(samples: float, tokens_per_sample: int, epochs: float) -> float:
    return samples * tokens_per_sample * epochs


def training_time_s(model: Model, gpu: GPU, method: str, tokens: float, gpus: int, training_mfu: float,
                    scaling_efficiency: float) -> float:
    flops = TRAINING_FLOPS_PER_PARAM_TOKEN[method] * model.params * tokens
    efficiency = scaling_efficiency if gpus > 1 else 1.0
    throughput = gpus * gpu.peak("bf16") * training_mfu * efficiency
    return flops / throughput


def adapter_bytes(model: Model, rank: int) -> float:
    """A LoRA adapter on q, k, v, o and the gated MLP's three matrices, in bf16."""
    if model.kind != "transformer":
        return 2.0 * rank * 2 * 1024 * model.layers  # a small head adapter for classic models
    h = model.hidden or 0
    q = (model.heads or 0) * (model.head_dim or 0)
    kv = (model.kv_heads or 0) * (model.head_dim or 0)
    ffn = model.expert_ffn if model.is_moe else model.ffn
    ffn = ffn or 0
    experts = model.experts or 1
    per_layer = (h + q) + 2 * (h + kv) + (q + h) + experts * 3 * (h + ffn)
    return 2.0 * rank * per_layer * model.layers
