"""How the V4 network is split over the ranks (GPUs) of one engine: tensor and expert parallel.

Every rank holds the whole network except:
- attention: its query heads (`wq_b` rows, `attn_sink`) and output groups (`wo_a` rows, `wo_b`
  columns) are split; the low-rank query input `wq_a`, the single shared K=V head, its norms and
  the compressors are replicated, so every rank keeps the same sequence state;
- the lightning indexer: its heads (`wq_b` rows, `weights_proj` rows);
- the MoE: routed experts by index, E/N consecutive experts per rank; the router and the shared
  expert are replicated;
- the embedding and the lm head: rows of the vocabulary.

`placement` says for each official tensor name what rank r of N keeps; the loader reads exactly
that slice, the network builds its local shapes from the same rules, and the fit planner adds up
the same bytes. A world size that does not divide a split dimension, or that would cut the FP8
checkpoint's 128x128 scale blocks, is refused by `check_world_size`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist

from flashbeam.kernels.quant import FP8_BLOCK
from flashbeam.model.network.config import ModelConfig


class ParallelError(ValueError):
    """A tensor-parallel world size this model cannot be split into."""


@dataclass(frozen=True)
class Split:
    """A dimension of a tensor split into `units` equal units of `unit` rows (or columns) each,
    consecutive units per rank; `what` names the split dimension in errors."""

    dim: int
    units: int
    unit: int
    what: str
    quantized: bool  # stored FP8 block-scaled in quantized checkpoints


@dataclass(frozen=True)
class Placement:
    """What one rank keeps of one tensor: all of it, a slice [start, stop) along `dim`, or
    nothing (a routed expert another rank owns)."""

    kind: Literal["replicated", "slice", "absent"]
    dim: int = 0
    start: int = 0
    stop: int = 0

    def shape(self, full: tuple[int, ...]) -> tuple[int, ...] | None:
        """The kept shape of a tensor whose whole shape is `full` (None when absent)."""
        if self.kind == "absent":
            return None
        if self.kind == "replicated":
            return tuple(full)
        out = list(full)
        out[self.dim] = self.stop - self.start
        return tuple(out)


REPLICATED = Placement("replicated")
ABSENT = Placement("absent")
_EXPERT = re.compile(r"^layers\.\d+\.ffn\.experts\.(\d+)\.")


def _splits(config: ModelConfig) -> dict[str, Split]:
    """Tensor name suffix -> how it is split."""
    c = config
    heads = Split(
        0, c.num_attention_heads, c.head_dim, "attention heads (num_attention_heads)", True
    )
    groups = c.o_groups, c.o_lora_rank, "attention output groups (o_groups)"
    index_heads = "indexer heads (index_n_heads)"
    return {
        "attn.wq_b.weight": heads,
        "attn.attn_sink": Split(0, c.num_attention_heads, 1, heads.what, False),
        "attn.wo_a.weight": Split(0, *groups, True),
        "attn.wo_b.weight": Split(1, *groups, True),
        "attn.indexer.wq_b.weight": Split(0, c.index_n_heads, c.index_head_dim, index_heads, True),
        "attn.indexer.weights_proj.weight": Split(0, c.index_n_heads, 1, index_heads, False),
    }


def split_of(name: str, config: ModelConfig) -> Split | None:
    """How tensor `name` (official name) is split across ranks; None: replicated or an expert."""
    if name in ("embed.weight", "head.weight"):
        return Split(0, config.vocab_size, 1, "the vocabulary (vocab_size)", False)
    layer = re.match(r"^layers\.\d+\.(.+)$", name)
    if layer is None:
        return None
    return _splits(config).get(layer.group(1))


def placement(name: str, config: ModelConfig, rank: int, world: int) -> Placement:
    """What rank `rank` of `world` keeps of tensor `name` (official name)."""
    if world == 1:
        return REPLICATED
    expert = _EXPERT.match(name)
    if expert is not None:
        owner = int(expert.group(1)) // (config.n_routed_experts // world)
        return REPLICATED if owner == rank else ABSENT
    split = split_of(name, config)
    if split is None:
        return REPLICATED
    per_rank = split.units // world * split.unit
    return Placement("slice", split.dim, rank * per_rank, (rank + 1) * per_rank)


def local_range(units: int, rank: int, world: int) -> range:
    """The units (heads, groups, experts, vocabulary rows) rank `rank` owns."""
    per_rank = units // world
    return range(rank * per_rank, (rank + 1) * per_rank)


def world_size_problems(config: ModelConfig, world: int, quantized: bool = False) -> list[str]:
    """Why `world` ranks cannot split this model (empty when they can). `quantized`: the
    checkpoint stores the split linears FP8 with 128x128 block scales."""
    if world < 1:
        return [f"tensor_parallel must be >= 1, got {world}"]
    if world == 1:
        return []  # nothing is cut
    c = config
    problems = []
    checks = [*_splits(c).values(), split_of("embed.weight", c)]
    checks.append(Split(0, c.n_routed_experts, 1, "routed experts (n_routed_experts)", False))
    has_indexer = any(kind == "csa" for kind in c.layer_kinds)
    seen = set()
    for split in checks:
        if "indexer" in split.what and not has_indexer:
            continue
        if split.units % world and split.what not in seen:
            seen.add(split.what)
            problems.append(f"{world} does not divide the {split.units} {split.what}")
        elif (
            quantized
            and split.quantized
            and (split.units // world * split.unit) % FP8_BLOCK
            and split.what not in seen
        ):
            seen.add(split.what)
            size = split.units // world * split.unit
            problems.append(
                f"{world} ranks would cut the FP8 checkpoint's {FP8_BLOCK}-row scale blocks "
                f"of the {split.what} ({size} rows or columns per rank)"
            )
    return problems


def working_world_sizes(config: ModelConfig, quantized: bool = False, limit: int = 64) -> list[int]:
    """Every world size up to `limit` this model can be split into."""
    return [n for n in range(1, limit + 1) if not world_size_problems(config, n, quantized)]


def check_world_size(config: ModelConfig, world: int, quantized: bool = False) -> None:
    """Raise `ParallelError` naming the dimension and the sizes that work."""
    problems = world_size_problems(config, world, quantized)
    if problems:
        sizes = ", ".join(map(str, working_world_sizes(config, quantized))) or "none"
        raise ParallelError(
            f"tensor_parallel={world} cannot split this model: {'; '.join(problems)}; "
            f"tensor_parallel sizes that work: {sizes}"
        )


@dataclass(frozen=True)
class TensorParallel:
    """This rank's place in its engine's group, and the collectives the network needs. The
    network is built for one rank: local heads, groups, experts and vocabulary rows. `world` 1
    is a single device and communicates nothing."""

    rank: int = 0
    world: int = 1

    def local(self, units: int) -> range:
        return local_range(units, self.rank, self.world)

    def all_reduce_(self, t: torch.Tensor) -> torch.Tensor:
        """Sum `t` over the ranks, in place."""
        if self.world > 1:
            dist.all_reduce(t)
        return t

    def sum_fp32(self, t: torch.Tensor) -> torch.Tensor:
        """The fp32 sum over the ranks of partial results `t` (row-parallel outputs, routed
        experts), returned in fp32."""
        t = t.float() if t.dtype != torch.float32 else t.clone()
        return self.all_reduce_(t)

    def gather_last(self, t: torch.Tensor) -> torch.Tensor:
        """Every rank's `t` side by side along the last dim (vocabulary-parallel logits)."""
        if self.world == 1:
            return t
        parts = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(parts, t.contiguous())
        return torch.cat(parts, dim=-1)


SINGLE = TensorParallel()


def local_name(name: str, config: ModelConfig, rank: int, world: int) -> str:
    """The parameter name on rank `rank` of official tensor `name`: the same, except that a
    routed expert is numbered among the rank's own experts."""
    expert = _EXPERT.match(name)
    if expert is None or world == 1:
        return name
    first = local_range(config.n_routed_experts, rank, world).start
    index = int(expert.group(1))
    return name.replace(f".experts.{index}.", f".experts.{index - first}.", 1)


def shard_state_dict(
    state: dict[str, torch.Tensor], config: ModelConfig, rank: int, world: int
) -> dict[str, torch.Tensor]:
    """Rank `rank`'s parameters from a whole model's state dict (official names)."""
    out = {}
    for name, tensor in state.items():
        where = placement(name, config, rank, world)
        if where.kind == "absent":
            continue
        if where.kind == "slice":
            tensor = tensor.narrow(where.dim, where.start, where.stop - where.start)
        out[local_name(name, config, rank, world)] = tensor
    return out
