"""Mixture of experts: sqrt-softplus router (learned top-k or token-id hash), clamped SwiGLU."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from flashbeam.model.network.config import ModelConfig
from flashbeam.model.network.layers import cast, fp32
from flashbeam.model.network.parallel import SINGLE, TensorParallel
from flashbeam.model.network.quantized import PackedExperts

# Up to this many tokens (decode steps), routing runs as dense matmuls over all experts.
DENSE_ROUTING_TOKENS = 256
# The dense path keeps a side-by-side copy of the expert weights up to this size (small models).
STACKED_CACHE_BYTES = 64 << 20


class Gate(nn.Module):
    """Router. Scores are sqrt(softplus(x·Wᵀ)) in fp32 (bf16 logits flip top-k choices); the
    selection bias only picks
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
        scores = F.softplus(F.linear(fp32(x), fp32(self.weight))).sqrt()
        if self.hashed:
            chosen = self.tid2eid[ids]
        else:
            chosen = (scores + fp32(self.bias)).topk(self.topk, dim=-1).indices
        weights = scores.gather(1, chosen)
        weights = weights / weights.sum(dim=-1, keepdim=True).clamp_min(1e-20)
        return chosen, weights * self.route_scale


class Expert(nn.Module):
    """SwiGLU with the V4 clamp: gate <= limit (from above only), up in [-limit, limit]; the shared
    expert is clamped too."""

    def __init__(self, dim: int, inter: int, limit: float) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, inter, bias=False)
        self.w2 = nn.Linear(inter, dim, bias=False)
        self.w3 = nn.Linear(dim, inter, bias=False)
        self.limit = limit

    def forward(self, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        gate = fp32(self.w1(x)).clamp(max=self.limit)
        up = fp32(self.w3(x)).clamp(-self.limit, self.limit)
        h = F.silu(gate) * up
        if weight is not None:  # the routing weight scales the fp32 intermediate, before w2
            h = h * weight.unsqueeze(-1)
        return self.w2(cast(h, x.dtype))


class MoE(nn.Module):
    """Router, routed experts and the shared expert. With several ranks, each holds E/N
    consecutive routed experts (`experts[i]` is expert `first_expert + i`) and runs them for the
    tokens routed to them; the routed sums are added over the ranks in fp32, and the router and
    the shared expert, whole on every rank, give every rank the same output."""

    def __init__(self, config: ModelConfig, layer: int, tp: TensorParallel = SINGLE) -> None:
        super().__init__()
        dim, inter, limit = config.hidden_size, config.moe_intermediate_size, config.swiglu_limit
        self.tp = tp
        self.gate = Gate(config, hashed=config.is_hash_layer(layer))
        local = tp.local(config.n_routed_experts)
        self.first_expert, self.local_experts = local.start, len(local)
        self.experts = nn.ModuleList(Expert(dim, inter, limit) for _ in local)
        self.shared_experts = Expert(dim, inter, limit)

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat, ids = x.reshape(-1, shape[-1]), ids.reshape(-1)
        chosen, weights = self.gate(flat, ids)
        if self.tp.world > 1:
            chosen, weights = self._this_ranks(chosen, weights)
        if isinstance(self.experts, PackedExperts):  # kept FP8/FP4 (GPU): the fused kernel
            routed = self.experts(flat, chosen.clamp(min=0), weights)
        elif flat.shape[0] <= DENSE_ROUTING_TOKENS:
            routed = self._all_experts(flat, chosen, weights)
        else:
            routed = self._grouped_experts(flat, chosen, weights)
        if self.tp.world > 1:
            routed = self.tp.sum_fp32(routed)
        # Routed sum in fp32, plus the shared expert, one cast at the end (bf16 sums drift).
        return cast(routed + fp32(self.shared_experts(flat)), x.dtype).view(shape)

    def _this_ranks(self, chosen, weights):
        """Routes to this rank's experts as local indices; the others' become -1, weight 0."""
        local = chosen - self.first_expert
        mine = (local >= 0) & (local < self.local_experts)
        return torch.where(mine, local, -1), torch.where(mine, weights, 0.0)

    def _grouped_experts(self, flat, chosen, weights) -> torch.Tensor:
        """Each expert runs once on the tokens routed to it."""
        routed = torch.zeros(flat.shape, dtype=torch.float32, device=flat.device)
        for e in torch.unique(chosen[chosen >= 0]).tolist():
            token, slot = torch.nonzero(chosen == e, as_tuple=True)
            out = self.experts[e](flat[token], weights[token, slot])
            routed.index_add_(0, token, out.float())
        return routed

    def _all_experts(self, flat, chosen, weights) -> torch.Tensor:
        """A few tokens (decode): every expert on every token in two matmuls over the experts'
        weights laid side by side, with zero weight where the token is not routed; cheaper
        than a Python loop over experts."""
        limit, experts = self.experts[0].limit, len(self.experts)
        up_proj, down_proj = self._side_by_side()
        route = torch.zeros(flat.shape[0], experts, device=flat.device)
        route.scatter_add_(1, chosen.clamp(min=0), weights)  # another rank's: weight 0
        gate_up = fp32(F.linear(flat, up_proj)).unflatten(-1, (experts, 2, -1))
        gate = gate_up[..., 0, :].clamp(max=limit)
        up = gate_up[..., 1, :].clamp(-limit, limit)
        h = F.silu(gate) * up * route.unsqueeze(-1)
        return fp32(F.linear(cast(h.flatten(1), flat.dtype), down_proj))

    def _side_by_side(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(w1 and w3 of every expert stacked [E*2*I, D], w2 of every expert side by side
        [D, E*I]). Without autograd, and when the copy is small (up to STACKED_CACHE_BYTES),
        they are built once and reused until a weight changes."""

        def build():
            up = torch.cat([torch.cat((e.w1.weight, e.w3.weight)) for e in self.experts])
            return up, torch.cat([e.w2.weight for e in self.experts], dim=1)

        first = self.experts[0].w1.weight
        size = 3 * first.numel() * first.element_size() * len(self.experts)
        if torch.is_grad_enabled() or size > STACKED_CACHE_BYTES:
            return build()
        # Inference tensors keep no version counter; they only change by replacement.
        key = tuple(
            (w.data_ptr(), None if w.is_inference() else w._version)
            for e in self.experts
            for w in (e.w1.weight, e.w2.weight, e.w3.weight)
        )
        cached = self.__dict__.get("_stacked")
        if cached is None or cached[0] != key:
            cached = (key, *build())
            self.__dict__["_stacked"] = cached
        return cached[1], cached[2]
