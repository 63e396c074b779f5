"""Loading a network whose FP8 linears and FP8/FP4 routed experts stay packed, as stored.

`load_model(..., keep_quantized=True)` (the default on CUDA) builds the network with an
`FP8Linear` for each FP8 dense linear of the checkpoint and a `PackedExperts` for each layer
whose routed experts are stored FP8 or FP4 (`network.quantized`); everything else is dense. The
model is assembled on the meta device and filled tensor by tensor, so no dense copy of a packed
weight is ever made, and its memory is about the checkpoint's size. `held_bytes` and
`check_fits` say beforehand how much that is.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from flashbeam.kernels import ExpertWeights
from flashbeam.model.checkpoint.formats import e8m0_from_exponent
from flashbeam.model.checkpoint.inventory import CheckpointError, dense_dtype, quantized_format
from flashbeam.model.checkpoint.reader import CheckpointEntry, CheckpointReader
from flashbeam.model.network.config import ModelConfig
from flashbeam.model.network.layers import RopeTable, rope_inv_freq
from flashbeam.model.network.parallel import (
    REPLICATED,
    SINGLE,
    Placement,
    TensorParallel,
    local_name,
    placement,
)
from flashbeam.model.network.quantized import FP8Linear, PackedExperts
from flashbeam.model.network.transformer import Transformer

if TYPE_CHECKING:
    from pathlib import Path

PackedKind = Literal["linear", "expert"]


# ---- what stays packed, and how much memory that takes ---------------------------------------
def packed_kind(entry: CheckpointEntry) -> PackedKind | None:
    """How a packed model holds a checkpoint tensor: in an `FP8Linear`, in `PackedExperts`, or
    dense (None; quantized tensors elsewhere in the network are dequantized)."""
    # Under "fp8+fp4" the official inventory marks dense linears "fp8" and routed experts "fp4".
    role = quantized_format(entry.name, "fp8+fp4")
    if role == "fp8" and entry.fmt == "fp8":
        return "linear"
    if role == "fp4" and entry.fmt != "dense":
        return "expert"
    return None


def held_bytes(
    entries: Iterable[CheckpointEntry],
    dtype: torch.dtype,
    keep_quantized: bool,
    part: Callable[[str], Placement] | None = None,
) -> int:
    """Bytes of the weights `load_model` will hold for these checkpoint tensors: packed ones at
    one byte per stored element and per e8m0 scale, the rest dense as `dense_dtype` gives them
    (`dtype`; fp32 for the tensors the official format keeps fp32; indices int64). `part`
    (tensor name -> what a tensor-parallel rank keeps) counts one rank's share."""
    total = 0
    for e in entries:
        where = part(e.name) if part is not None else REPLICATED
        if where.kind == "absent":
            continue
        if where.kind == "slice":  # a slice of a dense or FP8 tensor: its share of the bytes
            share = (where.stop - where.start) / e.weight.shape[where.dim]
            whole = held_bytes([e], dtype, keep_quantized)
            total += int(round(whole * share))
            continue
        if keep_quantized and packed_kind(e) is not None:
            total += _numel(e.weight.shape) + _numel(e.scale.shape)
            continue
        if e.pick is not None:  # rows of a transformers stacked-expert tensor
            numel = (e.pick[2] - e.pick[1]) * e.weight.shape[-1]
        elif e.fmt == "fp4":  # two values per stored byte
            numel = 2 * _numel(e.weight.shape)
        else:
            numel = _numel(e.weight.shape)
        total += numel * dense_dtype(e.name, dtype).itemsize
    return total


def check_fits(
    entries: Iterable[CheckpointEntry],
    dtype: torch.dtype,
    keep_quantized: bool,
    free_bytes: int,
    device: torch.device,
    directory: str | Path,
    part: Callable[[str], Placement] | None = None,
) -> None:
    """Raise `CheckpointError` with the numbers when the weights (this rank's `part` of them)
    will not fit `free_bytes`."""
    entries = list(entries)
    needed = held_bytes(entries, dtype, keep_quantized, part)
    if needed <= free_bytes:
        return
    held = "FP8/FP4 kept packed" if keep_quantized else f"dequantized to {dtype}"
    hint = ""
    packed = held_bytes(entries, dtype, True, part)
    if not keep_quantized and packed < needed:
        hint = f"; kept quantized (keep_quantized=True) it would need {_gib(packed)}"
    spread = (
        "more GPUs (engine.tensor_parallel; `flashbeam plan` says how many)"
        if part is None
        else "more GPUs for this engine (`flashbeam plan` says how many)"
    )
    raise CheckpointError(
        f"{directory}: the model needs {_gib(needed)} for its weights ({held}) on {device}, "
        f"the GPU has {_gib(free_bytes)} free{hint}; free memory on that GPU, use a GPU with "
        f"more memory, spread the model over {spread}, or a smaller model"
    )


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB ({n:,} bytes)"


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


# ---- building the packed model -----------------------------------------------------------------
def load_packed_model(
    reader: CheckpointReader,
    config: ModelConfig,
    device: torch.device,
    dtype: torch.dtype,
    tp: TensorParallel = SINGLE,
) -> Transformer:
    """The network (this rank's share of it) on `device` with the packed tensors of `reader`
    as stored (see the module docstring); dense floats in `dtype`, except the tensors the
    official format keeps fp32. Only the parts the rank keeps are read."""
    with torch.device("meta"):
        model = Transformer(config, tp)
    for layer, block in enumerate(model.layers):
        experts = _packed_experts(reader, config, layer, device, tp)
        if experts is not None:
            block.ffn.experts = experts
    for name, entry in reader.entries.items():
        kind = packed_kind(entry)
        part = placement(name, config, tp.rank, tp.world)
        if kind == "expert" or part.kind == "absent":
            continue  # stacked above, or another rank's
        owner, _, leaf = local_name(name, config, tp.rank, tp.world).rpartition(".")
        if kind == "linear":
            q = reader.read(name, part)
            weight, scale = q.weight.to(device), _as_e8m0(q.scale, entry).to(device)
            parent, _, child = owner.rpartition(".")
            setattr(model.get_submodule(parent), child, FP8Linear(weight, scale))
            continue
        module = model.get_submodule(owner)
        value = reader.read_dense(name, dtype, part).to(device)
        if isinstance(getattr(module, leaf), nn.Parameter):
            value = nn.Parameter(value, requires_grad=False)
        setattr(module, leaf, value)
    _compute_rope_tables(model, device)
    unset = [
        n for n, t in itertools.chain(model.named_parameters(), model.named_buffers()) if t.is_meta
    ]
    if unset:
        raise RuntimeError(
            f"loading packed weights left {unset[:3]} unset: tensors the network computes in its "
            "constructor must be recomputed in quantized._compute_rope_tables"
        )
    return model.eval()


def _packed_experts(
    reader: CheckpointReader,
    config: ModelConfig,
    layer: int,
    device: torch.device,
    tp: TensorParallel = SINGLE,
) -> PackedExperts | None:
    """Layer `layer`'s routed experts (this rank's) stacked in their stored format (None when
    stored dense)."""
    local = tp.local(config.n_routed_experts)
    names = {
        w: [f"layers.{layer}.ffn.experts.{e}.{w}.weight" for e in local] for w in ("w1", "w2", "w3")
    }
    entries = [reader.entries[n] for ns in names.values() for n in ns]
    fmts = {e.fmt for e in entries}
    if fmts == {"dense"}:
        return None
    if len(fmts) > 1:
        raise CheckpointError(
            f"{reader.directory}: the routed experts of layer {layer} are stored in mixed formats "
            f"{sorted(fmts)}; the fused MoE kernel reads one format per layer, so load with "
            "keep_quantized=False"
        )
    stacked: dict[str, torch.Tensor] = {}
    for w, ns in names.items():
        qs = [reader.read(n) for n in ns]
        weights = [q.weight.view(torch.int8) if q.fmt == "fp4" else q.weight for q in qs]
        stacked[w] = torch.stack(weights).to(device)
        scales = [_as_e8m0(q.scale, reader.entries[n]) for q, n in zip(qs, ns)]
        stacked[f"{w}_scale"] = torch.stack(scales).to(device)
    return PackedExperts(ExpertWeights(**stacked), config.swiglu_limit)


def _as_e8m0(scale: torch.Tensor, entry: CheckpointEntry) -> torch.Tensor:
    """Scales as the kernels read them (e8m0). Float scales, which checkpoints may carry, are
    converted when they are exact powers of two."""
    if scale.dtype == torch.float8_e8m0fnu:
        return scale
    mantissa, exponent = torch.frexp(scale.float())
    exponent = exponent - 1  # scale = 0.5 * 2^exp
    if not bool(((mantissa == 0.5) & (exponent >= -127) & (exponent <= 127)).all()):
        raise CheckpointError(
            f"{entry.scale.where()}: {scale.dtype} scales that are not all powers of two cannot "
            "be read by the FP8/FP4 kernels; load with keep_quantized=False to dequantize"
        )
    return e8m0_from_exponent(exponent)


def _compute_rope_tables(model: Transformer, device: torch.device) -> None:
    """The rope frequencies are not checkpoint tensors: compute them as the modules do (fp32)."""
    for m in model.modules():
        if isinstance(m, RopeTable):
            m.inv_freq = rope_inv_freq(m.config, m.compressed).to(device)
