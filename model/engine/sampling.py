"""Next-token sampling: greedy, temperature, top-k and top-p, one seeded generator per request.

Each row of a batch draws its one uniform number from its own generator and is transformed by
row-wise operations only, so a request's tokens never depend on what else is in the batch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingParams:
    """`temperature == 0` is greedy; `top_k == 0` and `top_p == 1` switch those filters off."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")


class SamplingError(ValueError):
    """Rows whose logits allow no token or are not numbers; `rows` lists them."""

    def __init__(self, message: str, rows: list[int]) -> None:
        super().__init__(message)
        self.rows = rows


def make_generator(seed: int | None, request_id: str) -> torch.Generator:
    """A CPU generator seeded by `seed`, or, without one, by a hash of the request id."""
    if seed is None:
        digest = hashlib.sha256(request_id.encode()).digest()
        seed = int.from_bytes(digest[:8], "little") & (2**63 - 1)
    return torch.Generator().manual_seed(seed)


def sample_next(
    logits: torch.Tensor,
    params: Sequence[SamplingParams],
    generators: Sequence[torch.Generator | None],
) -> torch.Tensor:
    """One token id per row of `logits` [B, V] (-inf marks forbidden tokens) -> LongTensor [B].

    Greedy rows take the argmax (lowest id on ties). Other rows divide by the temperature, keep
    the `top_k` largest, then the smallest prefix (by probability, ties by id) whose probability
    reaches `top_p`, and draw with their own generator; greedy rows may pass None for it.
    """
    if logits.dim() != 2 or len(params) != logits.shape[0] or len(generators) != len(params):
        raise ValueError(
            f"logits must be [B, V] with one SamplingParams and generator per row; got logits "
            f"{tuple(logits.shape)}, {len(params)} params, {len(generators)} generators"
        )
    logits = logits.float()
    _check_rows(logits)
    out = torch.empty(logits.shape[0], dtype=torch.long, device=logits.device)
    greedy = [i for i, p in enumerate(params) if p.temperature == 0]
    drawn = [i for i, p in enumerate(params) if p.temperature > 0]
    if greedy:
        out[greedy] = logits[greedy].argmax(dim=-1)
    if drawn:
        missing = [i for i in drawn if generators[i] is None]
        if missing:
            raise ValueError(f"rows {missing} sample with temperature > 0 but have no generator")
        out[drawn] = _draw(
            logits[drawn], [params[i] for i in drawn], [generators[i] for i in drawn]
        )
    return out


def _check_rows(logits: torch.Tensor) -> None:
    allowed = logits > float("-inf")  # False for -inf and NaN
    bad = ~allowed.any(dim=-1) | torch.isnan(logits).any(dim=-1) | torch.isposinf(logits).any(-1)
    if bad.any():
        rows = bad.nonzero().flatten().tolist()
        raise SamplingError(
            f"rows {rows} of the logits allow no token (all -inf, e.g. a grammar mask left "
            f"nothing) or hold NaN/+inf (a model failure)",
            rows,
        )


def _draw(
    logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator]
) -> torch.Tensor:
    device = logits.device
    temperature = torch.tensor([p.temperature for p in params], device=device).unsqueeze(1)
    top_k = torch.tensor([p.top_k or logits.shape[1] for p in params], device=device)
    top_p = torch.tensor([p.top_p for p in params], dtype=torch.float64, device=device)
    # Shifting by the row max first keeps a tiny temperature from overflowing to +inf.
    scaled = (logits - logits.max(dim=-1, keepdim=True).values) / temperature
    # Stable descending sort: equal logits stay in id order, so ties resolve to the lower id.
    values, ids = torch.sort(scaled, dim=-1, descending=True, stable=True)
    rank = torch.arange(logits.shape[1], device=device)
    values = values.masked_fill(rank >= top_k.unsqueeze(1), float("-inf"))
    probs = torch.softmax(values, dim=-1).double()
    before = probs.cumsum(dim=-1) - probs  # probability of the tokens ranked above each one
    keep = (before < top_p.unsqueeze(1)) | (top_p.unsqueeze(1) >= 1) | (rank == 0)
    probs = probs * keep
    cumulative = probs.cumsum(dim=-1)
    uniforms = [torch.rand((), dtype=torch.float64, generator=g).item() for g in generators]
    target = torch.tensor(uniforms, dtype=torch.float64, device=device) * cumulative[:, -1]
    pick = torch.searchsorted(cumulative, target.unsqueeze(1), right=True).squeeze(1)
    last = (probs > 0).sum(dim=-1) - 1  # kept tokens are a prefix of the sorted order
    pick = torch.minimum(pick, last)
    return ids.gather(1, pick.unsqueeze(1)).squeeze(1)
