"""Reading a checkpoint directory: config.json + safetensors shards in any layout of
`checkpoint.layouts`.

The reader detects the layout, maps every stored tensor to its official name and checks its
name, dtype and shape against the config (the headers only: no data is read until asked). The
official layout has dense linears optionally FP8 e4m3 with `.scale` e8m0 block scales beside
them and routed experts optionally FP4. No pickle anywhere: safetensors and JSON only.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from safetensors import SafetensorError, safe_open

from flashbeam.kernels.quant import FP8_BLOCK
from flashbeam.model.checkpoint.formats import (
    QuantFormatError,
    QuantizedWeight,
    fp4_packed_shape,
    fp4_scale_shape,
    fp8_scale_shape,
)
from flashbeam.model.checkpoint.inventory import (
    CheckpointError,
    _is_index,
    _is_mtp,
    dense_dtype,
    expected_tensors,
)
from flashbeam.model.checkpoint.layouts import (
    LAYOUTS,
    Layout,
    stored_name,
)
from flashbeam.model.network.config import ModelConfig
from flashbeam.model.network.parallel import REPLICATED, Placement, placement, split_of

INDEX_FILE = "model.safetensors.index.json"


SINGLE_FILE = "model.safetensors"


CONFIG_FILE = "config.json"


LayoutName = Literal["official", "hf", "hf-saved"]


_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}


_SCALE_DTYPES = {"F8_E8M0"} | _FLOAT_DTYPES


_INDEX_DTYPES = {"I64", "I32"}


# ---- reading -------------------------------------------------------------------------------
@dataclass(frozen=True)
class StoredTensor:
    """One tensor as a safetensors file holds it (from the header; no data read)."""

    name: str
    file: Path
    dtype: str
    shape: tuple[int, ...]

    def where(self) -> str:
        return f"tensor {self.name!r} in {self.file}"


@dataclass(frozen=True)
class CheckpointEntry:
    """One official tensor of the model and where its data sits.

    `fmt` is "dense", "fp8" or "fp4"; quantized entries carry their `scale`. `pick` selects
    one expert's rows from a transformers stacked-expert tensor: (expert, row start, row end).
    """

    name: str
    weight: StoredTensor
    fmt: Literal["dense", "fp8", "fp4"] = "dense"
    scale: StoredTensor | None = None
    pick: tuple[int, int, int] | None = None


class CheckpointReader:
    """Open shards of one checkpoint directory, validated against a config.

    `entries` maps every official name to its `CheckpointEntry`; `read(name)` returns a dense
    tensor or a `QuantizedWeight` exactly as stored, which `load_state_dict` dequantizes. A GPU
    path can take the packed `QuantizedWeight`s as they are. `read(name, part)` reads only the
    slice a tensor-parallel rank keeps (`parallel.Placement`), FP8 scale blocks sliced with
    their weight; `bytes_read` counts what was read from the files.
    """

    def __init__(self, directory: str | Path, config: ModelConfig) -> None:
        self.directory = Path(directory)
        self.bytes_read = 0
        self._stack = contextlib.ExitStack()
        try:
            self._handles: dict[Path, object] = {}
            stored = self._open_shards()
            plan = _choose_layout(stored, config)
            self.layout: LayoutName = plan.layout.name
            self.entries = _match_entries(stored, config, plan, self.directory)
        except BaseException:
            self._stack.close()
            raise

    def __enter__(self) -> CheckpointReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stack.close()

    def read(self, name: str, part: Placement = REPLICATED) -> torch.Tensor | QuantizedWeight:
        e = self.entries[name]
        if part.kind == "absent":
            raise CheckpointError(f"{e.weight.where()}: this rank keeps no part of it")
        cut = None if part.kind == "replicated" else (part.dim, part.start, part.stop)
        w = self._read(e.weight, e.pick, cut)
        if e.fmt == "dense":
            return w
        if cut is not None and e.fmt == "fp8":  # the scale blocks covering the kept rows
            dim, start, stop = cut
            if start % FP8_BLOCK or (stop % FP8_BLOCK and stop != e.weight.shape[dim]):
                raise CheckpointError(
                    f"{e.weight.where()}: a tensor-parallel rank would keep rows {start}:{stop} "
                    f"of dim {dim}, which cuts its FP8 {FP8_BLOCK}-wide scale blocks"
                )
            cut = (dim, start // FP8_BLOCK, -(-stop // FP8_BLOCK))
        elif cut is not None:
            raise CheckpointError(f"{e.weight.where()}: packed FP4 weights are not split")
        return QuantizedWeight(e.fmt, w, self._read(e.scale, None, cut))

    def read_dense(
        self, name: str, dtype: torch.dtype, part: Placement = REPLICATED
    ) -> torch.Tensor:
        """Tensor `name` (or the part of it a rank keeps) dense on CPU: floats in `dtype`
        (quantized ones dequantized), except the tensors the official format keeps in fp32,
        which stay at least fp32; indices int64."""
        value = self.read(name, part)
        target = dense_dtype(name, dtype)
        if isinstance(value, QuantizedWeight):
            try:
                return value.dequantize(target)
            except QuantFormatError as err:
                raise CheckpointError(f"{self.entries[name].weight.where()}: {err}") from None
        return value.to(target)

    def _read(self, t: StoredTensor, pick, cut=None) -> torch.Tensor:
        """The stored tensor, one transformers-stacked expert of it (`pick`), or a slice
        (`cut`: dim, start, stop) read without the rest of the tensor."""
        f = self._handles[t.file]
        try:
            if pick is not None:
                e, r0, r1 = pick
                value = f.get_slice(t.name)[e : e + 1, r0:r1].squeeze(0).contiguous()
            elif cut is not None:
                dim, start, stop = cut
                index = (slice(None),) * dim + (slice(start, stop),)
                value = f.get_slice(t.name)[index].contiguous()
            else:
                value = f.get_tensor(t.name)
        except (SafetensorError, OSError, RuntimeError, ValueError) as err:
            raise CheckpointError(f"{t.where()}: cannot read its data ({err})") from None
        self.bytes_read += value.numel() * value.element_size()
        return value

    def _open_shards(self) -> dict[str, StoredTensor]:
        files = self._shard_files()
        stored: dict[str, StoredTensor] = {}
        for path, listed in files.items():
            try:
                f = self._stack.enter_context(safe_open(str(path), framework="pt"))
                names = list(f.keys())
                infos = {n: (f.get_slice(n).get_dtype(), f.get_slice(n).get_shape()) for n in names}
            except (SafetensorError, OSError, RuntimeError) as err:
                raise CheckpointError(
                    f"shard {path} is truncated or corrupt ({err}); re-download or re-save it"
                ) from None
            self._handles[path] = f
            for n in listed:
                if n not in infos:
                    raise CheckpointError(
                        f"tensor {n!r}: {self.directory / INDEX_FILE} places it in {path}, "
                        "which does not contain it"
                    )
            for n, (dt, shape) in infos.items():
                if n in stored:
                    raise CheckpointError(
                        f"tensor {n!r} appears twice: in {stored[n].file} and in {path}"
                    )
                stored[n] = StoredTensor(n, path, dt, tuple(shape))
        return stored

    def _shard_files(self) -> dict[Path, list[str]]:
        """Shard path -> tensor names the index places there (empty for a single file)."""
        d = self.directory
        if not d.is_dir():
            raise CheckpointError(f"{d}: not a checkpoint directory (it does not exist)")
        index = d / INDEX_FILE
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text()).get("weight_map")
            except (json.JSONDecodeError, AttributeError):
                weight_map = None
            if not isinstance(weight_map, dict):
                raise CheckpointError(
                    f"{index}: not a safetensors index (needs a JSON object with a 'weight_map')"
                )
            files: dict[Path, list[str]] = {}
            for name, file in weight_map.items():
                files.setdefault(d / file, []).append(name)
            for path, names in files.items():
                if not path.is_file():
                    raise CheckpointError(
                        f"shard {path} is listed in {index} (for {len(names)} tensors, e.g. "
                        f"{names[0]!r}) but is missing"
                    )
            return files
        if (d / SINGLE_FILE).is_file():
            return {d / SINGLE_FILE: []}
        raise CheckpointError(f"{d}: has neither {INDEX_FILE} nor {SINGLE_FILE}")


@dataclass
class _NamePlan:
    """Where one layout stores each official tensor of a config: `single` maps a stored name
    to its official name, `stacked` a stacked tensor to the (official, expert, part) it holds."""

    layout: Layout
    single: dict[str, str]
    stacked: dict[str, list[tuple[str, int, int]]]

    @classmethod
    def build(cls, layout: Layout, expected: dict[str, tuple[int, ...]]) -> _NamePlan:
        single: dict[str, str] = {}
        stacked: dict[str, list[tuple[str, int, int]]] = {}
        for official in expected:
            name = stored_name(official, layout)
            if isinstance(name, str):
                single[name] = official
            else:
                where, _, expert = name
                stacked.setdefault(where.name, []).append((official, expert, where.part))
        return cls(layout, single, stacked)

    def scale_of(self, name: str) -> str | None:
        """The stored name of weight `name`'s quantization scale (None: read dense only)."""
        suffix = self.layout.scale_suffix
        if suffix is None or not name.endswith(".weight"):
            return None
        return name[: -len(".weight")] + suffix

    def unknown(self, stored: dict[str, StoredTensor]) -> list[str]:
        """Stored tensors this layout does not name (MTP tensors are ignored)."""
        scales = {self.scale_of(n) for n in self.single} - {None}
        known = self.single.keys() | self.stacked.keys() | scales
        return [n for n in stored if n not in known and not _is_mtp(n)]


def _choose_layout(stored: dict[str, StoredTensor], config: ModelConfig) -> _NamePlan:
    """The layout that names the most stored tensors; any tensor it does not name is an error
    naming the tensor, its file and how well each layout matched."""
    expected = expected_tensors(config)
    plans = [_NamePlan.build(layout, expected) for layout in LAYOUTS]
    unknown = [plan.unknown(stored) for plan in plans]
    best = min(range(len(plans)), key=lambda i: len(unknown[i]))
    if unknown[best]:
        t = stored[unknown[best][0]]
        total = sum(1 for n in stored if not _is_mtp(n))
        tried = ", ".join(
            f"{plan.layout.describe()} {total - len(u)}/{total}" for plan, u in zip(plans, unknown)
        )
        more = f" (and {len(unknown[best]) - 1} more)" if len(unknown[best]) > 1 else ""
        raise CheckpointError(
            f"unknown {t.where()}{more}: not a tensor of this model ({config.num_hidden_layers} "
            f"layers, compress_ratios {config.compress_ratios}) in the "
            f"{plans[best].layout.describe()} layout; tensors named per layout tried: {tried}"
        )
    return plans[best]


def _match_entries(
    stored: dict[str, StoredTensor], config: ModelConfig, plan: _NamePlan, directory: Path
) -> dict[str, CheckpointEntry]:
    """Map stored tensors to official names and check names, dtypes and shapes."""
    expected = expected_tensors(config)
    entries: dict[str, CheckpointEntry] = {}
    for name, held in plan.stacked.items():
        if name in stored:
            entries.update(_stacked_entries(stored[name], held, expected))
    for name, official in plan.single.items():
        t = stored.get(name)
        if t is None:
            continue
        scale_name = plan.scale_of(name)
        scale = stored.get(scale_name) if scale_name else None
        entries[official] = _entry(official, t, scale, expected[official])
    missing = [n for n in expected if n not in entries]
    if missing:
        shown = ", ".join(repr(_shown_name(n, plan.layout)) for n in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise CheckpointError(f"missing tensor {shown}{more}: not found in any file of {directory}")
    return entries


def _shown_name(official: str, layout: Layout) -> str:
    """The name official tensor `official` has in a checkpoint of `layout`."""
    name = stored_name(official, layout)
    if isinstance(name, str):
        return name
    where, _, expert = name
    return f"{where.name} (expert {expert} of {official})"


def _entry(
    name: str, t: StoredTensor, scale: StoredTensor | None, shape: tuple[int, ...]
) -> CheckpointEntry:
    """Check one stored tensor (and its scale) against its expected dense shape."""
    if _is_index(name):
        if t.dtype not in _INDEX_DTYPES:
            raise CheckpointError(f"{t.where()} has unsupported dtype {t.dtype}; expected I64")
        _check_shape(t, shape)
        return CheckpointEntry(name, t)
    if t.dtype in _FLOAT_DTYPES:
        if scale is not None:
            raise CheckpointError(
                f"{scale.where()} is a quantization scale, but its weight is stored dense "
                f"({t.dtype}); drop the scale or store the weight quantized"
            )
        _check_shape(t, shape)
        return CheckpointEntry(name, t)
    fmt = {"F8_E4M3": "fp8", "I8": "fp4", "U8": "fp4"}.get(t.dtype) if len(shape) == 2 else None
    if fmt is None:
        quantized = ", or F8_E4M3 / I8 (FP4) with a scale" if len(shape) == 2 else ""
        raise CheckpointError(
            f"{t.where()} has unsupported dtype {t.dtype}; expected {sorted(_FLOAT_DTYPES)}"
            + quantized
        )
    if scale is None:
        raise CheckpointError(f"{t.where()} is {fmt.upper()} ({t.dtype}) but has no scale tensor")
    if scale.dtype not in _SCALE_DTYPES:
        raise CheckpointError(
            f"{scale.where()} has unsupported dtype {scale.dtype}; expected F8_E8M0"
        )
    if fmt == "fp8":
        _check_shape(t, shape)
        _check_shape(scale, fp8_scale_shape(shape))
    else:
        if shape[1] % 2:
            raise CheckpointError(f"{t.where()}: FP4 needs an even input dim, config has {shape}")
        _check_shape(t, fp4_packed_shape(shape), note=f" (FP4 packed, dense {list(shape)})")
        _check_shape(scale, fp4_scale_shape(shape))
    return CheckpointEntry(name, t, fmt, scale)


def _check_shape(t: StoredTensor, shape: tuple[int, ...], note: str = "") -> None:
    if tuple(t.shape) != tuple(shape):
        raise CheckpointError(
            f"{t.where()} has shape {list(t.shape)}, expected {list(shape)}{note} for this config"
        )


def _stacked_entries(
    t: StoredTensor,
    held: list[tuple[str, int, int]],
    expected: dict[str, tuple[int, ...]],
) -> dict[str, CheckpointEntry]:
    """A stacked-experts tensor [E, parts * rows, cols] -> one entry per official expert weight."""
    rows, cols = expected[held[0][0]]
    experts = 1 + max(expert for _, expert, _ in held)
    parts = 1 + max(part for _, _, part in held)
    if t.dtype not in _FLOAT_DTYPES:
        raise CheckpointError(
            f"{t.where()} has unsupported dtype {t.dtype}; stacked experts must be dense "
            f"({sorted(_FLOAT_DTYPES)})"
        )
    _check_shape(t, (experts, parts * rows, cols))
    return {
        official: CheckpointEntry(official, t, pick=(expert, part * rows, (part + 1) * rows))
        for official, expert, part in held
    }


@dataclass(frozen=True)
class SplitReads:
    """Bytes read from a checkpoint: `whole` per tensor, and what each of the ranks reads of
    the tensors split across them (`split`), each rank opening the files itself."""

    whole: dict[str, int]
    split: frozenset[str]
    per_rank: list[int]

    @property
    def split_bytes(self) -> int:
        return sum(self.whole[n] for n in self.split)


def split_reads(directory: str | Path, config: ModelConfig, world: int) -> SplitReads:
    """Read every tensor whole once, then each rank's slices of the split ones."""
    whole = {}
    with CheckpointReader(directory, config) as reader:
        for name in reader.entries:
            reader.bytes_read = 0
            reader.read(name)
            whole[name] = reader.bytes_read
    split = frozenset(n for n in whole if split_of(n, config) or ".ffn.experts." in n)
    per_rank = []
    for rank in range(world):
        with CheckpointReader(directory, config) as reader:
            for name in split:
                part = placement(name, config, rank, world)
                if part.kind != "absent":
                    reader.read(name, part)
            per_rank.append(reader.bytes_read)
    return SplitReads(whole, split, per_rank)
