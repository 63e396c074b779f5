"""Checkpoint directories: config.json + safetensors shards, official or transformers names.

Official layout (spec §6): tensor names without a `model.` prefix, dense linears optionally FP8
e4m3 with `.scale` e8m0 block scales beside them, routed experts optionally FP4. The transformers
layouts (its in-memory names with stacked experts, and what its `save_pretrained` writes) are
stated in `checkpoint_layouts.py`. Loading detects the layout, maps everything to official
names, checks every tensor against the config and dequantizes on the way in, or keeps FP8/FP4
weights packed for the GPU kernels (`model/quantized.py`). No pickle anywhere: safetensors and
JSON only.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from flashbeam.model.checkpoint_layouts import (
    LAYOUT_NAMES,
    LAYOUTS,
    Layout,
    layout_named,
    stored_name,
)
from flashbeam.model.config import ModelConfig
from flashbeam.model.config_keys import FP8_QUANTIZATION_CONFIG
from flashbeam.model.parallel import (
    REPLICATED,
    SINGLE,
    ParallelError,
    Placement,
    TensorParallel,
    check_world_size,
    local_name,
    placement,
)
from flashbeam.model.quant import (
    FP8_BLOCK,
    QuantFormatError,
    QuantizedWeight,
    fp4_packed_shape,
    fp4_scale_shape,
    fp8_scale_shape,
)

if TYPE_CHECKING:
    from torch import nn

    from flashbeam.model.network import Transformer

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
DEFAULT_MAX_SHARD_BYTES = 4 << 30
TINY_DIR = Path(__file__).parent / "tiny"

LayoutName = Literal["official", "hf", "hf-saved"]
Quantize = Literal["fp8", "fp8+fp4"] | None

_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}
_SCALE_DTYPES = {"F8_E8M0"} | _FLOAT_DTYPES
_INDEX_DTYPES = {"I64", "I32"}
_FP8_LINEAR = re.compile(
    r"^layers\.\d+\.(attn\.(wq_a|wq_b|wkv|wo_a|wo_b)|attn\.indexer\.wq_b|ffn\.shared_experts\.w[123])"
    r"\.weight$"
)
_EXPERT = re.compile(r"^layers\.(\d+)\.ffn\.experts\.(\d+)\.(w[123])\.weight$")


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be loaded (or a model that cannot be saved) as asked."""


# ---- the tensor inventory ------------------------------------------------------------------
def expected_tensors(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Official tensor name -> dense shape for every backbone tensor of `config` (spec §6.3)."""
    c = config
    D, N, H, d = c.hidden_size, c.hc_mult, c.num_attention_heads, c.head_dim
    I, E, V = c.moe_intermediate_size, c.n_routed_experts, c.vocab_size
    hc_rows = (2 + N) * N
    out: dict[str, tuple[int, ...]] = {
        "embed.weight": (V, D),
        "head.weight": (V, D),
        "norm.weight": (D,),
        "hc_head_fn": (N, N * D),
        "hc_head_base": (N,),
        "hc_head_scale": (1,),
    }
    for L, kind in enumerate(c.layer_kinds):
        ratio = c.layer_ratio(L)
        p = f"layers.{L}."
        for part in ("attn", "ffn"):
            out[f"{p}{part}_norm.weight"] = (D,)
            out[f"{p}hc_{part}_fn"] = (hc_rows, N * D)
            out[f"{p}hc_{part}_base"] = (hc_rows,)
            out[f"{p}hc_{part}_scale"] = (3,)
        a = p + "attn."
        out[a + "attn_sink"] = (H,)
        out[a + "wq_a.weight"] = (c.q_lora_rank, D)
        out[a + "q_norm.weight"] = (c.q_lora_rank,)
        out[a + "wq_b.weight"] = (H * d, c.q_lora_rank)
        out[a + "wkv.weight"] = (d, D)
        out[a + "kv_norm.weight"] = (d,)
        out[a + "wo_a.weight"] = (c.o_groups * c.o_lora_rank, H * d // c.o_groups)
        out[a + "wo_b.weight"] = (D, c.o_groups * c.o_lora_rank)
        if ratio:
            out.update(_compressor(a + "compressor.", ratio, kind == "csa", d, D))
        if kind == "csa":
            di = c.index_head_dim
            out[a + "indexer.wq_b.weight"] = (c.index_n_heads * di, c.q_lora_rank)
            out[a + "indexer.weights_proj.weight"] = (c.index_n_heads, D)
            out.update(_compressor(a + "indexer.compressor.", ratio, True, di, D))
        f = p + "ffn."
        out[f + "gate.weight"] = (E, D)
        if c.is_hash_layer(L):
            out[f + "gate.tid2eid"] = (V, c.num_experts_per_tok)
        else:
            out[f + "gate.bias"] = (E,)
        for prefix in [f + "shared_experts."] + [f"{f}experts.{e}." for e in range(E)]:
            out[prefix + "w1.weight"] = (I, D)
            out[prefix + "w2.weight"] = (D, I)
            out[prefix + "w3.weight"] = (I, D)
    return out


def _compressor(
    prefix: str, ratio: int, overlap: bool, dim: int, D: int
) -> dict[str, tuple[int, ...]]:
    width = (2 if overlap else 1) * dim  # CSA windows overlap: two halves per entry
    return {
        prefix + "wkv.weight": (width, D),
        prefix + "wgate.weight": (width, D),
        prefix + "ape": (ratio, width),
        prefix + "norm.weight": (dim,),
    }


def _keeps_fp32(name: str) -> bool:
    """Tensors the official checkpoint stores in fp32 whatever the model dtype (spec §6.2)."""
    leaf = name.rsplit(".", 1)[-1]
    return leaf in ("attn_sink", "ape", "bias") or leaf.startswith("hc_")


def _is_index(name: str) -> bool:
    return name.endswith(".tid2eid")


def _is_mtp(name: str) -> bool:
    return name.startswith(("mtp.", "model.mtp."))


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
            if start % FP8_BLOCK[dim] or (stop % FP8_BLOCK[dim] and stop != e.weight.shape[dim]):
                raise CheckpointError(
                    f"{e.weight.where()}: a tensor-parallel rank would keep rows {start}:{stop} "
                    f"of dim {dim}, which cuts its FP8 {FP8_BLOCK[dim]}-wide scale blocks"
                )
            cut = (dim, start // FP8_BLOCK[dim], -(-stop // FP8_BLOCK[dim]))
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


def load_state_dict(
    directory: str | Path,
    config: ModelConfig,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> dict[str, torch.Tensor]:
    """Every backbone tensor of a checkpoint under its official name, dense.

    Quantized weights are dequantized on CPU into `dtype`; dense floats become `dtype`, except
    the tensors the official format keeps in fp32 (mHC, sinks, ape, gate bias), which stay at
    least fp32. `mtp.*` tensors are ignored. Raises `CheckpointError` naming tensor and file.
    """
    with CheckpointReader(directory, config) as reader:
        return {name: reader.read_dense(name, dtype).to(device) for name in reader.entries}


def dense_dtype(name: str, dtype: torch.dtype) -> torch.dtype:
    """The dtype `read_dense` gives tensor `name` when floats are loaded as `dtype`."""
    if _is_index(name):
        return torch.int64
    if _keeps_fp32(name) and dtype.itemsize < 4:
        return torch.float32
    return dtype


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
    _write_shards(groups, directory, max_shard_bytes)
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


def quantized_format(name: str, quantize: Quantize) -> Literal["fp8", "fp4"] | None:
    """How `save_checkpoint(quantize=...)` stores official tensor `name` (None: as it is)."""
    if quantize and _FP8_LINEAR.match(name):
        return "fp8"
    if quantize and _EXPERT.match(name):
        return "fp4" if quantize == "fp8+fp4" else "fp8"
    return None


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


def _write_shards(
    groups: list[dict[str, torch.Tensor]], directory: Path, max_shard_bytes: int
) -> None:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    total = 0
    for g in groups:
        nbytes = sum(t.numel() * t.element_size() for t in g.values())
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1].update({k: v.contiguous() for k, v in g.items()})
        size += nbytes
        total += nbytes
    for old in [directory / INDEX_FILE, directory / SINGLE_FILE]:
        old.unlink(missing_ok=True)
    for old in directory.glob("model-*-of-*.safetensors"):
        old.unlink()
    meta = {"format": "pt"}
    if len(shards) == 1:
        save_file(shards[0], str(directory / SINGLE_FILE), metadata=meta)
        return
    weight_map = {}
    for k, shard in enumerate(shards, 1):
        file = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(directory / file), metadata=meta)
        weight_map.update({name: file for name in shard})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")


# ---- the model -----------------------------------------------------------------------------
def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory, or "tiny" for the one embedded in the package."""
    if str(path) == "tiny":
        if not (TINY_DIR / CONFIG_FILE).is_file():
            raise CheckpointError(
                f"the embedded tiny checkpoint is missing: {TINY_DIR} has no {CONFIG_FILE}; "
                "the package was built without it (write it with save_checkpoint)"
            )
        return TINY_DIR
    return Path(path)


def load_model(
    path: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    keep_quantized: bool | None = None,
    kv_quant_sim: bool | None = None,
    tp: TensorParallel = SINGLE,
) -> Transformer:
    """Load a checkpoint directory (any layout of `checkpoint_layouts`) into a `Transformer`,
    or, with `tp`, one tensor-parallel rank's share of it (`model.parallel`): only the slices
    that rank keeps are read, FP8 scale blocks with their rows.

    `kv_quant_sim` (None: as the config says, default off) rounds cached KV and the indexer's
    queries and keys the way the official runtime stores them (`ModelConfig.kv_quant_sim`).

    `keep_quantized` (None: yes on CUDA, no elsewhere) keeps FP8 linears and FP8/FP4 routed
    experts packed with their scales for the GPU kernels (`model/quantized.py`); otherwise every
    weight is dequantized into `dtype`. Before loading onto a GPU, the weights' size is checked
    against its free memory (`CheckpointError` with the numbers when they do not fit).
    """
    # Imported here: both import this module (the network through moe/attention -> quantized).
    from flashbeam.model import quantized
    from flashbeam.model.network import Transformer

    directory = resolve_checkpoint(path)
    config = ModelConfig.from_file(directory / CONFIG_FILE)
    if kv_quant_sim is not None:
        config = config.replace(kv_quant_sim=kv_quant_sim)
    device = torch.device(device)
    keep = device.type == "cuda" if keep_quantized is None else keep_quantized
    with CheckpointReader(directory, config) as reader:
        fp8 = any(e.fmt == "fp8" for e in reader.entries.values())
        try:
            check_world_size(config, tp.world, quantized=fp8)
        except ParallelError as e:
            raise CheckpointError(f"{directory}: {e}") from None

        def part(name: str) -> Placement:
            return placement(name, config, tp.rank, tp.world)

        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            entries = reader.entries.values()
            quantized.check_fits(entries, dtype, keep, free, device, directory, part)
        if keep:
            return quantized.load_packed_model(reader, config, device, dtype, tp)
        state = {
            local_name(name, config, tp.rank, tp.world): reader.read_dense(name, dtype, part(name))
            for name in reader.entries
            if part(name).kind != "absent"
        }
    model = Transformer(config, tp)
    model.to(dtype)
    _load_strict(model, state, directory)
    return model.to(device).eval()


def _load_strict(model: nn.Module, state: dict[str, torch.Tensor], directory: Path) -> None:
    own = model.state_dict()
    unknown = sorted(set(state) - set(own))
    missing = sorted(set(own) - set(state))
    if unknown or missing:
        raise CheckpointError(
            f"{directory}: checkpoint and network disagree: network lacks {unknown[:3]}, "
            f"checkpoint lacks {missing[:3]}"
        )
    model.load_state_dict(state, strict=True)
