"""Mixture of experts: sqrt-softplus router (learned top-k or token-id hash), clamped SwiGLU."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .quantized import PackedExperts

# Up to this many tokens (decode steps), routing runs as dense matmuls over all experts.
DENSE_ROUTING_TOKENS = 256


class Gate(nn.Module):
    """Router. Scores are sqrt(softplus(x·Wᵀ)) in fp32 (pitfall 16); the selection bias only picks
    experts, hash layers pick by `tid2eid[token_id]`; weights are normalised then scaled."""

    def __init__(self, config: ModelConfig, hashed: bool) -> None:
        super().__init__()
        self.topk = config.num_experts_per_tok
        self.route_scale = config.routed_scaling_factor
        self.hashed = hashed
        self.weight = nn.Parameter(torch.zeros(config.n_routed_experts, config.hidden_size))
        if hashed:
            tid2eid = torch.zeros(config.vocab_size, self.topk, dtype=torch.int64)
            self.register_buffer("tid2eid", tid2eid)
        else:
            self.bias = nn.Parameter(torch.zeros(config.n_routed_experts))

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [T,D], ids [T] -> (expert ids [T,k], weights [T,k] fp32)."""
        scores = F.softplus(F.linear(x.float(), self.weight.float())).sqrt()
        if self.hashed:
            chosen = self.tid2eid[ids]
        else:
            chosen = (scores + self.bias.float()).topk(self.topk, dim=-1).indices
        weights = scores.gather(1, chosen)
        weights = weights / weights.sum(dim=-1, keepdim=True).clamp_min(1e-20)
        return chosen, weights * self.route_scale


class Expert(nn.Module):
    """SwiGLU with the V4 clamp: gate <= limit, up in [-limit, limit] (pitfall 18)."""

    def __init__(self, dim: int, inter: int, limit: float) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, inter, bias=False)
        self.w2 = nn.Linear(inter, dim, bias=False)
        self.w3 = nn.Linear(dim, inter, bias=False)
        self.limit = limit

    def forward(self, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        gate = self.w1(x).float().clamp(max=self.limit)
        up = self.w3(x).float().clamp(-self.limit, self.limit)
        h = F.silu(gate) * up
        if weight is not None:  # routing weight goes in before the down projection (pitfall 19)
            h = h * weight.unsqueeze(-1)
        return self.w2(h.to(x.dtype))


class MoE(nn.Module):
    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        dim, inter, limit = config.hidden_size, config.moe_intermediate_size, config.swiglu_limit
        self.gate = Gate(config, hashed=config.is_hash_layer(layer))
        self.experts = nn.ModuleList(
            Expert(dim, inter, limit) for _ in range(config.n_routed_experts)
        )
        self.shared_experts = Expert(dim, inter, limit)

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat, ids = x.reshape(-1, shape[-1]), ids.reshape(-1)
        chosen, weights = self.gate(flat, ids)
        if isinstance(self.experts, PackedExperts):  # kept FP8/FP4 (GPU): the fused kernel
            routed = self.experts(flat, chosen, weights)
        elif flat.shape[0] <= DENSE_ROUTING_TOKENS:
            routed = self._all_experts(flat, chosen, weights)
        else:
            routed = self._grouped_experts(flat, chosen, weights)
        # Routed sum in fp32, plus the shared expert, one cast at the end (pitfall 20).
        return (routed + self.shared_experts(flat).float()).to(x.dtype).view(shape)

    def _grouped_experts(self, flat, chosen, weights) -> torch.Tensor:
        """Each expert runs once on the tokens routed to it."""
        routed = torch.zeros(flat.shape, dtype=torch.float32, device=flat.device)
        for e in torch.unique(chosen).tolist():
            token, slot = torch.nonzero(chosen == e, as_tuple=True)
            out = self.experts[e](flat[token], weights[token, slot])
            routed.index_add_(0, token, out.float())
        return routed

    def _all_experts(self, flat, chosen, weights) -> torch.Tensor:
        """A few tokens (decode): every expert on every token in three batched matmuls, with
        zero weight where the token is not routed; cheaper than a Python loop over experts."""
        first = self.experts[0]
        w1 = torch.stack([e.w1.weight for e in self.experts])
        w3 = torch.stack([e.w3.weight for e in self.experts])
        w2 = torch.stack([e.w2.weight for e in self.experts])
        route = torch.zeros(flat.shape[0], len(self.experts), device=flat.device)
        route.scatter_add_(1, chosen, weights)
        gate = torch.einsum("td,eid->tei", flat, w1).float().clamp(max=first.limit)
        up = torch.einsum("td,eid->tei", flat, w3).float().clamp(-first.limit, first.limit)
        h = F.silu(gate) * up * route.unsqueeze(-1)
        return torch.einsum("tei,edi->td", h.to(flat.dtype), w2).float()
