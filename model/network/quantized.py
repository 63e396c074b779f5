"""Modules holding quantized weights as the checkpoint stores them, for the GPU kernels.

- `FP8Linear`: a dense linear kept FP8 (attention wq_a, wq_b, wkv, wo_a, wo_b, indexer wq_b,
  shared experts): e4m3 `weight` and e8m0 `scale` buffers under the official names, run by
  `kernels.fp8_linear`;
- `PackedExperts`: a layer's routed experts stored FP8 or FP4, stacked into the
  `ExpertWeights` one `kernels.fused_moe` call reads.

`checkpoint.packed` builds a network with them (`load_model(..., keep_quantized=True)`, the
default on CUDA).
"""

from __future__ import annotations

import torch
from torch import nn

from flashbeam import kernels
from flashbeam.kernels import ExpertWeights
from flashbeam.kernels.quant import FP8_BLOCK


class PackedModule(nn.Module):
    """A module holding checkpoint-format tensors: device moves are fine, dtype casts refused
    (`model.half()` would turn e4m3 bytes into plain numbers and drop their scales)."""

    def _apply(self, fn, recurse: bool = True):
        probe = torch.empty(0, dtype=torch.float8_e4m3fn)
        if fn(probe).dtype != probe.dtype:
            raise TypeError(
                f"{type(self).__name__} holds packed FP8/FP4 weights, which a dtype cast would "
                "corrupt (modules before it may already be cast: reload the model); pick the "
                "activation dtype with load_model(dtype=...), or load with keep_quantized=False "
                "for a dense model"
            )
        return super()._apply(fn, recurse)


class FP8Linear(PackedModule):
    """A bias-free linear stored FP8: e4m3 `weight` [out, in], e8m0 `scale` per 128x128 block."""

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        if weight.dtype != torch.float8_e4m3fn or scale.dtype != torch.float8_e8m0fnu:
            raise TypeError(
                f"FP8Linear needs a float8_e4m3fn weight and float8_e8m0fnu scale, got "
                f"{weight.dtype} and {scale.dtype}"
            )
        self.register_buffer("weight", weight)
        self.register_buffer("scale", scale)
        self.out_features, self.in_features = weight.shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return kernels.fp8_linear(x, self.weight, self.scale)

    def grouped(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., G, in] -> [..., G, out/G]: group g through row block g of the weight (the
        attention's grouped output projection `wo_a`)."""
        groups = x.shape[-2]
        rows = self.out_features // groups
        if rows % FP8_BLOCK == 0:  # groups own whole scale blocks: one FP8 GEMM per group
            blocks = rows // FP8_BLOCK
            return torch.stack(
                [
                    kernels.fp8_linear(
                        x[..., g, :],
                        self.weight[g * rows : (g + 1) * rows],
                        self.scale[g * blocks : (g + 1) * blocks],
                    )
                    for g in range(groups)
                ],
                dim=-2,
            )
        # Groups split scale blocks (tiny test configs): dequantize this one weight per call.
        w = kernels.dequantize_fp8_blocks(self.weight, self.scale, x.dtype)
        return torch.einsum("...gi,gri->...gr", x, w.view(groups, rows, -1))


class PackedExperts(PackedModule):
    """The routed experts of one MoE layer stacked [E, ...] in their checkpoint format (FP8 or
    FP4) with their scales; `forward` is one `kernels.fused_moe` call."""

    def __init__(self, weights: ExpertWeights, swiglu_limit: float) -> None:
        super().__init__()
        if weights.fmt == "dense":
            raise TypeError(
                "PackedExperts holds FP8 or FP4 experts; dense ones stay Expert modules"
            )
        for name in ("w1", "w2", "w3", "w1_scale", "w2_scale", "w3_scale"):
            self.register_buffer(name, getattr(weights, name))
        self.swiglu_limit = swiglu_limit
        self.weights = weights

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        self.weights = ExpertWeights(
            self.w1, self.w2, self.w3, self.w1_scale, self.w2_scale, self.w3_scale
        )
        return self

    def forward(
        self, x: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor
    ) -> torch.Tensor:
        """x [T, D], chosen experts and routing weights [T, k] -> fp32 [T, D]."""
        return kernels.fused_moe(x, topk_ids, topk_weights, self.weights, self.swiglu_limit)
