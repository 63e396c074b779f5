"""Random checkpoints written straight in the official quantized layout, at any size.

`write_random_checkpoint(..., quantize=...)` builds a dense fp32 model and quantizes it: fine for
test configs, impossible at V4-Flash's dimensions (one layer's routed experts are 6.4 G
parameters). Here every tensor of the inventory is drawn directly in the format the official
checkpoint stores it, one at a time, and written shard by shard:

- FP8 dense linears: N(0, 1) values cast to e4m3, with one power-of-two block scale near
  1/sqrt(fan_in), so the weight they stand for is ~ N(0, 1/fan_in);
- FP4 routed experts: uniformly random e2m1 codes (two per byte), with one power-of-two scale
  per 32 inputs that gives the same spread;
- the rest dense, as `random_dense` draws them: bf16, or fp32 where the official format keeps
  fp32 (mHC, sinks, ape, router bias); hash tables a random distinct expert set per token.

The values are not a trained model's, but every byte a kernel reads has the official layout and
size, which is what a throughput benchmark needs. Drawing on a GPU (`device`) is what makes a
multi-gigabyte checkpoint quick to write.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import torch

from flashbeam.kernels.quant import FP4_VALUES
from flashbeam.model.checkpoint.formats import (
    e8m0_from_exponent,
    fp4_packed_shape,
    fp4_scale_shape,
    fp8_scale_shape,
)
from flashbeam.model.checkpoint.inventory import _keeps_fp32, expected_tensors, quantized_format
from flashbeam.model.checkpoint.random_init import random_dense, save_random_tokenizer
from flashbeam.model.checkpoint.reader import CONFIG_FILE
from flashbeam.model.checkpoint.saving import DEFAULT_MAX_SHARD_BYTES, write_shards
from flashbeam.model.network.config import ModelConfig
from flashbeam.model.network.config_keys import FP8_QUANTIZATION_CONFIG

ExpertFormat = Literal["fp4", "fp8"]

# Root mean square of an e2m1 value when all 16 codes are equally likely.
_E2M1_RMS = math.sqrt(sum(v * v for v in FP4_VALUES) / len(FP4_VALUES))


def quantized_config(config: ModelConfig, experts: ExpertFormat = "fp4") -> ModelConfig:
    """`config` as the official checkpoint describes itself: FP8 linears, `experts` experts."""
    return config.replace(quantization=dict(FP8_QUANTIZATION_CONFIG), expert_dtype=experts)


def write_random_packed_checkpoint(
    directory: str | Path,
    config: ModelConfig,
    experts: ExpertFormat = "fp4",
    seed: int = 0,
    device: str | torch.device = "cpu",
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
) -> Path:
    """A complete checkpoint directory of `config` (tokenizer included) with random weights in
    the official layout: FP8 dense linears and `experts` routed experts. Values are drawn on
    `device` and written one shard at a time; config.json is written last, so a directory that
    has it holds a finished checkpoint."""
    if experts not in ("fp4", "fp8"):
        raise ValueError(f"experts {experts!r}: choose 'fp4' (the official layout) or 'fp8'")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).unlink(missing_ok=True)
    saved = quantized_config(config, experts)
    gen = torch.Generator(torch.device(device)).manual_seed(seed)
    write_shards(_stored_groups(saved, experts, gen), directory, max_shard_bytes)
    save_random_tokenizer(directory, config.vocab_size)
    (directory / CONFIG_FILE).write_text(json.dumps(saved.to_official_dict(), indent=2) + "\n")
    return directory


def _stored_groups(
    config: ModelConfig, experts: ExpertFormat, gen: torch.Generator
) -> Iterator[dict[str, torch.Tensor]]:
    """Each tensor of the inventory as stored (a quantized weight with its scale), on the CPU."""
    quantize = "fp8+fp4" if experts == "fp4" else "fp8"
    for name, shape in expected_tensors(config).items():
        fmt = quantized_format(name, quantize)
        if fmt is None:
            yield {name: _dense(name, shape, config, gen).cpu()}
            continue
        weight, scale = _fp8(shape, gen) if fmt == "fp8" else _fp4(shape, gen)
        yield {name: weight.cpu(), name.removesuffix(".weight") + ".scale": scale.cpu()}


def _dense(
    name: str, shape: tuple[int, ...], config: ModelConfig, gen: torch.Generator
) -> torch.Tensor:
    if name.endswith(".tid2eid"):  # k distinct experts per token: the first k of a random order
        order = torch.rand(shape[0], config.n_routed_experts, generator=gen, device=gen.device)
        return order.argsort(dim=1)[:, : shape[1]].to(torch.int64)
    values = random_dense(name, shape, gen)
    return values if _keeps_fp32(name) else values.to(torch.bfloat16)


def _fp8(shape: tuple[int, ...], gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    rows, cols = shape
    weight = torch.randn(shape, generator=gen, device=gen.device).to(torch.float8_e4m3fn)
    exponent = round(math.log2(1 / math.sqrt(cols)))
    return weight, _scales(fp8_scale_shape((rows, cols)), exponent, gen.device)


def _fp4(shape: tuple[int, ...], gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    rows, cols = shape
    packed = torch.randint(
        -128, 128, fp4_packed_shape((rows, cols)), generator=gen, device=gen.device,
        dtype=torch.int8,
    )  # fmt: skip
    exponent = round(math.log2(1 / (math.sqrt(cols) * _E2M1_RMS)))
    return packed, _scales(fp4_scale_shape((rows, cols)), exponent, gen.device)


def _scales(shape: tuple[int, int], exponent: int, device: torch.device) -> torch.Tensor:
    return e8m0_from_exponent(torch.full(shape, exponent, dtype=torch.int32, device=device))
