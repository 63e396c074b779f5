"""Will a model fit N GPUs, and how many sequences at a given context: the engine's arithmetic.

Weights per GPU add up, tensor by tensor, the slice each rank keeps (`parallel.placement`) in the
format the checkpoint stores it: FP8 e4m3 with e8m0 128x128 block scales, packed FP4 with one
e8m0 scale per 32 inputs, the rest dense in the activation dtype (fp32 for the tensors the
official format keeps fp32). The state of a generating sequence is the same on every rank (the
K=V head and the compressors are replicated): per layer a ring of `sliding_window` keys, the
compressed entries (and the indexer's keys on CSA layers) and the fp32 buffers of the partial
compression window. `flashbeam plan` prints this; `Engine.load` refuses up front with the same
numbers when the weights alone do not fit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

import torch

from flashbeam.kernels.quant import FP4_BLOCK, FP8_BLOCK
from flashbeam.model.checkpoint.inventory import dense_dtype, expected_tensors, quantized_format
from flashbeam.model.checkpoint.loading import resolve_checkpoint
from flashbeam.model.checkpoint.reader import CONFIG_FILE, INDEX_FILE, SINGLE_FILE, CheckpointReader
from flashbeam.model.network.config import ModelConfig
from flashbeam.model.network.parallel import placement, working_world_sizes

GiB = 1 << 30
Format = Literal["dense", "fp8", "fp4"]


@dataclass(frozen=True)
class StoredFormats:
    """How a checkpoint stores its linears: FP8 dense linears or not, and the routed experts."""

    linears: Literal["dense", "fp8"]
    experts: Format

    @classmethod
    def of_config(cls, config: ModelConfig) -> StoredFormats:
        """As the config describes its checkpoint (`quantization_config`, `expert_dtype`)."""
        if config.quantization is None:
            return cls("dense", "dense")
        experts = "fp4" if config.expert_dtype == "fp4" else "fp8"
        return cls("fp8", experts)

    def of(self, name: str) -> Format:
        role = quantized_format(name, "fp8+fp4")  # fp8: a dense linear, fp4: a routed expert
        if role == "fp8":
            return self.linears
        if role == "fp4":
            return self.experts
        return "dense"


def stored_bytes(name: str, shape: tuple[int, ...], fmt: Format, dtype: torch.dtype) -> int:
    """Bytes of tensor `name` of dense `shape` held in `fmt` (dense ones as `dense_dtype`)."""
    numel = 1
    for s in shape:
        numel *= s
    if fmt == "fp8":
        rows, cols = shape
        return numel + -(-rows // FP8_BLOCK) * -(-cols // FP8_BLOCK)
    if fmt == "fp4":
        rows, cols = shape
        return numel // 2 + rows * -(-cols // FP4_BLOCK)
    return numel * dense_dtype(name, dtype).itemsize


FormatOf = Callable[[str], Format]  # official tensor name -> how it is stored


def weight_bytes(
    config: ModelConfig, format_of: FormatOf, dtype: torch.dtype, rank: int, world: int
) -> dict[str, int]:
    """Bytes rank `rank` of `world` holds: {"split": ..., "replicated": ..., "total": ...}."""
    split = replicated = 0
    for name, shape in expected_tensors(config).items():
        where = placement(name, config, rank, world)
        kept = where.shape(shape)
        if kept is None:
            continue
        size = stored_bytes(name, kept, format_of(name), dtype)
        if where.kind == "replicated" and ".ffn.experts." not in name:
            replicated += size
        else:  # a slice, or a routed expert this rank owns
            split += size
    return {"split": split, "replicated": replicated, "total": split + replicated}


def kv_bytes_per_token(config: ModelConfig, dtype: torch.dtype) -> float:
    """What each further token adds to a sequence's state once its window is full: the
    compressed entries, one per `ratio` tokens (and the indexer's keys on CSA layers)."""
    c, total = config, 0.0
    for layer, kind in enumerate(c.layer_kinds):
        ratio = c.layer_ratio(layer)
        if kind != "sliding":
            dims = c.head_dim + (c.index_head_dim if kind == "csa" else 0)
            total += dims * dtype.itemsize / ratio
    return total


def sequence_bytes(config: ModelConfig, tokens: int, dtype: torch.dtype) -> int:
    """Bytes of one generating sequence's state after `tokens` tokens (every rank holds it)."""
    c, item = config, dtype.itemsize
    total = 0
    for layer, kind in enumerate(c.layer_kinds):
        ratio = c.layer_ratio(layer)
        total += c.sliding_window * c.head_dim * item  # the window ring
        if kind == "sliding":
            continue
        parts = [c.head_dim] + ([c.index_head_dim] if kind == "csa" else [])
        for dim in parts:
            halves = 2 if kind == "csa" else 1  # overlapping windows keep two halves per slot
            total += (tokens // ratio + 1) * dim * item + 8  # compressed entries, their count
            total += 2 * ratio * halves * dim * 4  # fp32 kv and gate of the partial window
            if kind == "csa":
                total += 2 * ratio * dim * 4  # fp32 A halves of the last complete window
    return total


@dataclass(frozen=True)
class FitPlan:
    """The arithmetic of one deployment; `fits` says whether `concurrency` sequences of
    `context` tokens run beside the weights, the prefix cache and the reserve."""

    gpus: int
    gpu_memory: int
    context: int
    concurrency: int
    dtype: str
    linears: str
    experts: str
    weight_bytes_per_gpu: int
    split_weight_bytes_per_gpu: int
    replicated_weight_bytes_per_gpu: int
    kv_bytes_per_token: int
    kv_bytes_per_sequence: int
    cache_bytes: int
    reserve_bytes: int
    max_concurrency: int
    fits: bool
    min_gpus: int | None
    verdict: str

    def to_dict(self) -> dict:
        return asdict(self)


def plan_fit(
    config: ModelConfig,
    gpus: int,
    gpu_memory: int,
    context: int = 131072,
    concurrency: int = 1,
    dtype: torch.dtype = torch.bfloat16,
    format_of: FormatOf | None = None,
    cache_bytes: int = GiB,
    reserve_bytes: int = 4 * GiB,
) -> FitPlan:
    """Per-GPU memory of `config` over `gpus` GPUs of `gpu_memory` bytes each (one engine,
    tensor_parallel = gpus). `format_of` tells how each tensor is stored (default: as the config
    describes its checkpoint). `reserve_bytes` stands for activations, the CUDA context and the
    allocator's slack; `cache_bytes` for the engine's prefix cache."""
    format_of = format_of or StoredFormats.of_config(config).of
    names = expected_tensors(config)
    linears = sorted({format_of(n) for n in names if quantized_format(n, "fp8+fp4") == "fp8"})
    experts = sorted({format_of(n) for n in names if quantized_format(n, "fp8+fp4") == "fp4"})
    quantized = "fp8" in linears
    per_rank = [weight_bytes(config, format_of, dtype, r, gpus) for r in range(gpus)]
    weights = max(p["total"] for p in per_rank)
    per_sequence = sequence_bytes(config, context, dtype)
    free = gpu_memory - weights - cache_bytes - reserve_bytes
    max_concurrency = max(free // per_sequence, 0)
    sizes = working_world_sizes(config, quantized)
    min_gpus = _min_gpus(config, format_of, dtype, gpu_memory, cache_bytes, reserve_bytes, sizes)
    if gpus not in sizes:
        fits, verdict = (
            False,
            (
                f"tensor_parallel={gpus} cannot split this model; sizes that work: "
                + ", ".join(map(str, sizes))
            ),
        )
    elif free < per_sequence:
        need = f"needs at least {min_gpus} x {_gib(gpu_memory)}" if min_gpus else "does not fit"
        fits = False
        verdict = (
            f"does not fit: {need}; you have {gpus} x {_gib(gpu_memory)} "
            f"(weights {_gib(weights)} per GPU, one {context:,}-token sequence "
            f"{_gib(per_sequence)}, cache {_gib(cache_bytes)}, reserve {_gib(reserve_bytes)})"
        )
    elif max_concurrency < concurrency:
        fits = False
        verdict = (
            f"the weights fit, but only {max_concurrency} sequences of {context:,} tokens do, "
            f"not {concurrency}: lower the concurrency or the context, or add GPUs"
        )
    else:
        fits = True
        verdict = f"fits: {concurrency} of up to {max_concurrency} sequences of {context:,} tokens"
    return FitPlan(
        gpus=gpus,
        gpu_memory=gpu_memory,
        context=context,
        concurrency=concurrency,
        dtype=str(dtype).removeprefix("torch."),
        linears="+".join(linears) or "none",
        experts="+".join(experts) or "none",
        weight_bytes_per_gpu=weights,
        split_weight_bytes_per_gpu=max(p["split"] for p in per_rank),
        replicated_weight_bytes_per_gpu=per_rank[0]["replicated"],
        kv_bytes_per_token=round(kv_bytes_per_token(config, dtype)),
        kv_bytes_per_sequence=per_sequence,
        cache_bytes=cache_bytes,
        reserve_bytes=reserve_bytes,
        max_concurrency=int(max_concurrency),
        fits=fits,
        min_gpus=min_gpus,
        verdict=verdict,
    )


def _min_gpus(config, format_of, dtype, gpu_memory, cache_bytes, reserve_bytes, sizes):
    """The fewest GPUs of `gpu_memory` whose weights, cache and reserve leave room for a
    sequence; None when no working world size does."""
    one = sequence_bytes(config, 0, dtype)
    for n in sizes:  # every rank holds the same bytes: equal slices, equal expert counts
        weights = weight_bytes(config, format_of, dtype, 0, n)["total"]
        if weights + cache_bytes + reserve_bytes + one <= gpu_memory:
            return n
    return None


def _gib(n: int) -> str:
    return f"{n / GiB:.1f} GiB"


def model_to_plan(path: str, experts: Format | None = None) -> tuple[ModelConfig, FormatOf, str]:
    """(config, how each tensor is stored, where that came from) for `flashbeam plan PATH`:
    "tiny", a checkpoint directory (formats read from its tensors' headers) or a config.json
    (formats as it describes them). `experts` overrides the routed experts' format, for a
    config that does not say it (the initial V4-Flash config.json predates `expert_dtype`)."""
    where = resolve_checkpoint(path)
    if where.is_dir():
        config = ModelConfig.from_file(where / CONFIG_FILE)
        if (where / INDEX_FILE).is_file() or (where / SINGLE_FILE).is_file():
            with CheckpointReader(where, config) as reader:
                stored = {name: entry.fmt for name, entry in reader.entries.items()}
            format_of, source = stored.__getitem__, f"the tensors of {where}"
        else:  # a config without its weights
            format_of, source = StoredFormats.of_config(config).of, f"{where / CONFIG_FILE}"
    elif where.is_file():
        config = ModelConfig.from_file(where)
        format_of, source = StoredFormats.of_config(config).of, str(where)
    else:
        raise FileNotFoundError(f"{path}: not a checkpoint directory, a config.json or 'tiny'")
    if experts is not None:
        base = format_of

        def format_of(name: str) -> Format:
            return experts if quantized_format(name, "fp8+fp4") == "fp4" else base(name)

        source += f", experts taken as {experts}"
    return config, format_of, source


class FitError(ValueError):
    """A model that does not fit the GPUs an engine was given."""


def require_fit(directory, devices: tuple[str, ...], dtype: torch.dtype, cache_bytes: int) -> None:
    """Refuse, before loading, an engine whose weights do not fit its GPUs' free memory (the
    least free of them), naming what would fit: `flashbeam plan`'s arithmetic."""
    config, format_of, _ = model_to_plan(str(directory))
    free = min(torch.cuda.mem_get_info(torch.device(d))[0] for d in devices)
    plan = plan_fit(config, len(devices), free, context=0, dtype=dtype, format_of=format_of,
                    cache_bytes=cache_bytes, reserve_bytes=0)  # fmt: skip
    if not plan.fits:
        raise FitError(f"{directory}: {plan.verdict}")
