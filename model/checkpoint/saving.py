"""Writing a model as a checkpoint directory any of our layouts (and transformers) can load."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import save_file

from flashbeam.model.checkpoint.formats import (
    QuantFormatError,
    QuantizedWeight,
)
from flashbeam.model.checkpoint.layouts import (
    LAYOUT_NAMES,
    Layout,
    layout_named,
    stored_name,
)
from flashbeam.model.network.config import ModelConfig
from flashbeam.model.network.config_keys import FP8_QUANTIZATION_CONFIG

if TYPE_CHECKING:
    from torch import nn

from flashbeam.model.checkpoint.inventory import (
    CheckpointError,
    Quantize,
    _keeps_fp32,
    expected_tensors,
    quantized_format,
)
from flashbeam.model.checkpoint.reader import CONFIG_FILE, INDEX_FILE, SINGLE_FILE, LayoutName

DEFAULT_MAX_SHARD_BYTES = 4 << 30


# ---- writing -------------------------------------------------------------------------------
def save_checkpoint(
    model: nn.Module,
    directory: str | Path,
    layout: LayoutName = "official",
    quantize: Quantize = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write `model` (a `Transformer` with `.config`) as a loadable checkpoint directory.

    `quantize`: None keeps every tensor dense; "fp8" stores the dense linears of the official
    inventory (attention wq_a/wq_b/wkv/wo_a/wo_b, indexer wq_b, shared experts) and the routed
    experts as FP8 with `.scale` beside them; "fp8+fp4" stores the routed experts as FP4
    instead. `layout="hf"` writes transformers' in-memory names (stacked experts), "hf-saved"
    the names its `save_pretrained` writes (both dense only). `dtype` casts dense floats
    (not the fp32 ones: mHC, sinks, ape, gate bias). Files are one `model.safetensors` when
    everything fits `max_shard_bytes`, otherwise an index plus `model-0000k-of-0000n` shards;
    earlier model files in `directory` are replaced.
    """
    config = getattr(model, "config", None)
    if not isinstance(config, ModelConfig):
        raise CheckpointError("save_checkpoint needs a model with a ModelConfig `.config`")
    if layout not in LAYOUT_NAMES:
        raise CheckpointError(f"layout {layout!r}: choose one of {list(LAYOUT_NAMES)}")
    if quantize not in (None, "fp8", "fp8+fp4"):
        raise CheckpointError(f"quantize {quantize!r}: choose None, 'fp8' or 'fp8+fp4'")
    if layout != "official" and quantize:
        raise CheckpointError("the transformers layouts are written dense only; use quantize=None")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    _check_model_state(state, config)
    groups = list(_official_groups(state, quantize, dtype))
    if layout != "official":
        groups = list(_renamed_groups(groups, layout_named(layout)))
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_shards(groups, directory, max_shard_bytes)
    quant = dict(FP8_QUANTIZATION_CONFIG) if quantize else None
    expert_dtype = {"fp8": "fp8", "fp8+fp4": "fp4"}.get(quantize or "")
    saved = config.replace(quantization=quant, expert_dtype=expert_dtype)
    (directory / CONFIG_FILE).write_text(json.dumps(saved.to_official_dict(), indent=2) + "\n")
    return directory


def _check_model_state(state: dict[str, torch.Tensor], config: ModelConfig) -> None:
    expected = expected_tensors(config)
    for name, t in state.items():
        if name not in expected:
            raise CheckpointError(f"model tensor {name!r} is not in the official inventory")
        if tuple(t.shape) != expected[name]:
            raise CheckpointError(
                f"model tensor {name!r} has shape {list(t.shape)}, expected {list(expected[name])}"
            )
    missing = [n for n in expected if n not in state]
    if missing:
        raise CheckpointError(f"model has no tensor {missing[0]!r} ({len(missing)} missing)")


def _official_groups(
    state: dict[str, torch.Tensor], quantize: Quantize, dtype: torch.dtype | None
) -> Iterator[dict[str, torch.Tensor]]:
    """Tensors to write under official names, a quantized weight grouped with its scale."""
    for name, t in state.items():
        fmt = quantized_format(name, quantize)
        if fmt is not None:
            try:
                q = QuantizedWeight.quantize(t, fmt)
            except QuantFormatError as err:
                raise CheckpointError(f"cannot quantize {name!r} to {fmt}: {err}") from None
            yield {name: q.weight, name[: -len(".weight")] + ".scale": q.scale}
        elif t.is_floating_point() and dtype is not None and not _keeps_fp32(name):
            yield {name: t.to(dtype)}
        else:
            yield {name: t}


def _renamed_groups(
    groups: list[dict[str, torch.Tensor]], layout: Layout
) -> Iterator[dict[str, torch.Tensor]]:
    """Rename dense tensors into `layout`, stacking experts after all other tensors."""
    stacks: dict[str, dict[tuple[int, int], torch.Tensor]] = {}
    for g in groups:
        (official, t), *_ = g.items()
        name = stored_name(official, layout)
        if isinstance(name, str):
            yield {name: t}
        else:
            where, _, expert = name
            stacks.setdefault(where.name, {})[(expert, where.part)] = t
    for name, parts in stacks.items():
        experts = sorted({e for e, _ in parts})
        count = 1 + max(p for _, p in parts)
        yield {
            name: torch.stack([torch.cat([parts[(e, p)] for p in range(count)]) for e in experts])
        }


def write_shards(
    groups: Iterable[dict[str, torch.Tensor]], directory: Path, max_shard_bytes: int
) -> None:
    """Write tensor groups (a weight with its scale stays in one file) as `model.safetensors`,
    or as `model-0000k-of-0000n` shards plus an index when they exceed `max_shard_bytes`.

    Each shard is written as soon as it is full, so a lazy `groups` holds at most one shard in
    memory: a checkpoint larger than the host's memory can be written. Earlier model files in
    `directory` are removed first."""
    for old in [directory / INDEX_FILE, directory / SINGLE_FILE]:
        old.unlink(missing_ok=True)
    for old in [*directory.glob("model-*-of-*.safetensors"), *directory.glob("*.partial")]:
        old.unlink()
    meta = {"format": "pt"}
    written: list[tuple[Path, list[str]]] = []
    shard: dict[str, torch.Tensor] = {}
    size = total = 0
    for g in groups:
        nbytes = sum(t.numel() * t.element_size() for t in g.values())
        if shard and size + nbytes > max_shard_bytes:
            written.append(_write_partial(shard, directory, len(written), meta))
            shard, size = {}, 0
        shard.update({k: v.contiguous() for k, v in g.items()})
        size += nbytes
        total += nbytes
    if not written:
        save_file(shard, str(directory / SINGLE_FILE), metadata=meta)
        return
    written.append(_write_partial(shard, directory, len(written), meta))
    weight_map = {}
    for k, (partial, names) in enumerate(written, 1):
        file = f"model-{k:05d}-of-{len(written):05d}.safetensors"
        partial.rename(directory / file)
        weight_map.update(dict.fromkeys(names, file))
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")


def _write_partial(
    shard: dict[str, torch.Tensor], directory: Path, k: int, meta: dict[str, str]
) -> tuple[Path, list[str]]:
    """One full shard under a provisional name (the count of shards is not known yet)."""
    path = directory / f"model-{k + 1:05d}.safetensors.partial"
    save_file(shard, str(path), metadata=meta)
    return path, list(shard)
