"""Loading a checkpoint directory (or "tiny", the embedded default) into the network.

`load_model` reads through `reader.CheckpointReader` (any layout of `layouts`, every tensor
checked against the config) and either dequantizes every weight into the activation dtype or
keeps FP8 linears and FP8/FP4 experts packed for the GPU kernels (`packed`); with a
tensor-parallel rank it reads and builds only that rank's share. No pickle anywhere:
safetensors and JSON only.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from flashbeam.model.checkpoint import packed
from flashbeam.model.checkpoint.inventory import CheckpointError
from flashbeam.model.checkpoint.reader import CONFIG_FILE, CheckpointReader
from flashbeam.model.network.config import ModelConfig
from flashbeam.model.network.parallel import (
    SINGLE,
    ParallelError,
    Placement,
    TensorParallel,
    check_world_size,
    local_name,
    placement,
)
from flashbeam.model.network.transformer import Transformer

if TYPE_CHECKING:
    from torch import nn

TINY_DIR = Path(__file__).parents[1] / "tiny"


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
    experts packed with their scales for the GPU kernels (`packed`); otherwise every
    weight is dequantized into `dtype`. Before loading onto a GPU, the weights' size is checked
    against its free memory (`CheckpointError` with the numbers when they do not fit).
    """
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
            packed.check_fits(entries, dtype, keep, free, device, directory, part)
        if keep:
            return packed.load_packed_model(reader, config, device, dtype, tp)
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
