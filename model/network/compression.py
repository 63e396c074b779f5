"""Compression of the KV stream into entries, and the lightning indexer that picks among them.

- `Compressor`: gated pooling of every `ratio` tokens into one entry (CSA windows overlap: an
  entry pools the previous window's A halves and its own B halves); HCA and the indexer's keys
  use it too.
- `Indexer`: scores a CSA layer's entries per query with its own heads and keeps the top
  `index_topk`; with several ranks, the heads' scores are summed over the ranks first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from flashbeam import kernels
from flashbeam.model.network.config import ModelConfig
from flashbeam.model.network.kv_quant import fp4_simulate, fp8_simulate, hadamard_rotate
from flashbeam.model.network.layers import RMSNorm, RopeTable, apply_rope, fp32
from flashbeam.model.network.parallel import SINGLE, TensorParallel
from flashbeam.model.network.state import CompressorState


class Compressor(nn.Module):
    """Gated pooling of every `ratio` tokens into one entry of width `dim`.

    CSA compressors (the layer's and its indexer's, whatever their ratio) overlap their windows:
    an entry pools the A halves of the previous window's tokens and the B halves of its own
    (2 * ratio slots, softmax per channel). HCA compressors pool their own window only.
    """

    def __init__(
        self, config: ModelConfig, ratio: int, dim: int, overlap: bool, indexer: bool = False
    ) -> None:
        super().__init__()
        self.ratio, self.dim = ratio, dim
        self.overlap = overlap
        # kv_quant_sim: the indexer's keys are rotated and FP4-rounded, the main entries FP8-round
        # their no-rope dims, as the official runtime stores them
        self.quant_sim = ("fp4" if indexer else "fp8") if config.kv_quant_sim else None
        self.nope = dim - config.qk_rope_head_dim
        width = (2 if self.overlap else 1) * dim
        self.wkv = nn.Linear(config.hidden_size, width, bias=False)
        self.wgate = nn.Linear(config.hidden_size, width, bias=False)
        self.ape = nn.Parameter(torch.zeros(ratio, width))
        self.norm = RMSNorm(dim, config.rms_norm_eps)
        self.rope = RopeTable(config, compressed=True)

    def empty_state(self, device: torch.device, dtype: torch.dtype) -> CompressorState:
        width = self.wkv.out_features
        empty = torch.zeros(0, width, device=device, dtype=torch.float32)
        return CompressorState(torch.zeros(0, self.dim, device=device, dtype=dtype), empty, empty)

    def forward(
        self,
        x: torch.Tensor,
        starts: list[int],
        states: list[CompressorState],
        keep_at: list[list[int]] | None = None,
    ) -> tuple[list[CompressorState], list[list[CompressorState]] | None]:
        """Append the tokens of x [B,S,D] (sequence b starting at starts[b]) to each state;
        returns the new states and, with `keep_at`, each sequence's states after the given
        numbers of this step's tokens (snapshots inside a prefill chunk: slices of what the step
        computes; else None).

        Per sequence only the bookkeeping runs (buffer rows, which windows complete); the pooling
        of every window completed in this step, over all sequences, is one batched computation.
        """
        seq = x.shape[1]
        positions = torch.tensor(starts, device=x.device)[:, None] + torch.arange(
            seq, device=x.device
        )
        kv, gate = self.project(x, positions)
        held = {state.buf_kv.shape[0] for state in states}
        if len(held) == 1:
            steps = self._steps_aligned(kv, gate, starts, states, held.pop(), x.dtype)
        else:
            steps = self._steps(kv, gate, starts, states, x.dtype)
        final = [self._state_after(step, seq) for step in steps]
        if keep_at is None:
            return final, None
        return final, [[self._state_after(st, k) for k in ks] for st, ks in zip(steps, keep_at)]

    def _steps(self, kv, gate, starts, states, dtype):
        """Per sequence: (state, rows it held before this step, its rows [held+S, c] as kv and
        gate, its complete windows [n, r, c] as kv and gate, their pooled entries [n, dim];
        None when no sequence completes a window)."""
        r, d = self.ratio, self.dim
        rows, windows_kv, windows_gate, prior_kv, prior_gate, firsts, counts = (
            [] for _ in range(7)
        )
        prev_kv, prev_gate = self._batched_prev(states, kv) if self.overlap else (None, None)
        for b, (start, state) in enumerate(zip(starts, states)):
            rows_kv = torch.cat((state.buf_kv, kv[b])) if state.buf_kv.shape[0] else kv[b]
            rows_gate = torch.cat((state.buf_gate, gate[b])) if state.buf_gate.shape[0] else gate[b]
            n = rows_kv.shape[0] // r
            rows.append((rows_kv, rows_gate))
            counts.append(n)
            windows_kv.append(rows_kv[: n * r].view(n, r, rows_kv.shape[1]))
            windows_gate.append(rows_gate[: n * r].view(n, r, rows_gate.shape[1]))
            if n == 0:
                continue
            firsts.append(torch.arange(start // r, start // r + n, device=kv.device))
            if self.overlap:  # each window pools the A halves of the one before it first
                prior_kv.append(torch.cat((prev_kv[b], windows_kv[-1][:-1, :, :d])))
                prior_gate.append(torch.cat((prev_gate[b], windows_gate[-1][:-1, :, :d])))
        if firsts:
            win_kv = torch.cat([w for w in windows_kv if w.shape[0]])
            win_gate = torch.cat([w for w in windows_gate if w.shape[0]])
            prior = (torch.cat(prior_kv), torch.cat(prior_gate)) if self.overlap else None
            pooled = self.pool(win_kv, win_gate, prior, torch.cat(firsts), dtype).split(counts)
        else:
            pooled = [None] * len(states)
        return [
            (state, state.buf_kv.shape[0], *rows_b, wk, wg, new)
            for state, rows_b, wk, wg, new in zip(states, rows, windows_kv, windows_gate, pooled)
        ]

    def _steps_aligned(self, kv, gate, starts, states, held, dtype):
        """`_steps` when every sequence holds the same number of buffered rows, so all complete
        the same number of windows (a prefill of fresh or equally advanced sequences): windows
        are cut and joined with their prior halves as whole-batch tensors, and per sequence only
        views are taken (`SequenceState.compact` copies what a cache keeps)."""
        r, bsz = self.ratio, kv.shape[0]
        if held:
            kv = torch.cat((torch.stack([s.buf_kv for s in states]), kv), dim=1)
            gate = torch.cat((torch.stack([s.buf_gate for s in states]), gate), dim=1)
        n = kv.shape[1] // r
        done = n * r
        win_kv = kv[:, :done].unflatten(1, (n, r))  # [B, n, r, c]
        win_gate = gate[:, :done].unflatten(1, (n, r))
        pooled = [None] * bsz
        if n:
            prior = None
            if self.overlap:  # each window pools the A halves of the one before it first
                d = self.dim
                prev_kv, prev_gate = self._batched_prev(states, win_kv)
                prior = (
                    torch.cat((prev_kv, win_kv[:, :-1, :, :d]), dim=1).flatten(0, 1),
                    torch.cat((prev_gate, win_gate[:, :-1, :, :d]), dim=1).flatten(0, 1),
                )
            # the buffered rows precede the chunk: the first window completed starts at
            # (start - held), i.e. window start // r
            first = torch.tensor([start // r for start in starts], device=kv.device)
            ids = (first[:, None] + torch.arange(n, device=kv.device)).flatten()
            pooled = self.pool(win_kv.flatten(0, 1), win_gate.flatten(0, 1), prior, ids, dtype)
            pooled = pooled.view(bsz, n, -1)
        return [
            (s, held, kv[b], gate[b], win_kv[b], win_gate[b], pooled[b])
            for b, s in enumerate(states)
        ]

    def _state_after(self, step, tokens: int) -> CompressorState:
        """A sequence's state after `tokens` of this step's tokens, from its `_steps` entry."""
        state, held, rows_kv, rows_gate, win_kv, win_gate, new = step
        r, rows = self.ratio, held + tokens
        n = rows // r  # windows complete by then (this step's windows, in order)
        entries, last_kv, last_gate = state.entries, state.prev_kv, state.prev_gate
        if n:
            entries = torch.cat((entries, new[:n])) if entries.shape[0] else new[:n]
            if self.overlap:
                last_kv, last_gate = win_kv[n - 1, :, : self.dim], win_gate[n - 1, :, : self.dim]
        return CompressorState(
            entries, rows_kv[n * r : rows], rows_gate[n * r : rows], last_kv, last_gate
        )

    def _batched_prev(self, states, like):
        """The A halves [B, 1, r, d] (fp32 kv, gate) of each sequence's last window before this
        step; a sequence with none gets zeros with gate -inf (weight 0). `like`: any tensor of
        the step's projections (device and dtype)."""
        bsz, r, d = len(states), self.ratio, self.dim
        prev_kv = like.new_zeros(bsz, 1, r, d)
        prev_gate = like.new_full((bsz, 1, r, d), float("-inf"))
        for b, s in enumerate(states):
            if s.prev_kv is not None:
                prev_kv[b, 0], prev_gate[b, 0] = s.prev_kv, s.prev_gate
        return prev_kv, prev_gate

    def pool(self, win_kv, win_gate, prior, window_ids, dtype) -> torch.Tensor:
        """Entries [n, dim] of complete windows: gated softmax pooling per channel, norm, and
        rope at each window's first position. win_* are [n, r, c*dim] projections (gate incl.
        position bias); `prior` holds the previous windows' A halves when overlapping."""
        if self.overlap:
            d = self.dim
            slots_kv = torch.cat((prior[0], win_kv[..., d:]), dim=1)
            slots_gate = torch.cat((prior[1], win_gate[..., d:]), dim=1)
        else:
            slots_kv, slots_gate = win_kv, win_gate
        pooled = (slots_kv * slots_gate.softmax(dim=1)).sum(dim=1)
        entries = self.norm(pooled.to(dtype))
        cos, sin = self.rope.angles(window_ids * self.ratio)
        entries = apply_rope(entries, cos, sin)
        if self.quant_sim == "fp8":
            return fp8_simulate(entries, self.nope)
        if self.quant_sim == "fp4":
            return fp4_simulate(hadamard_rotate(entries))
        return entries

    def project(
        self, x: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """fp32 projections (in bf16 the pooled entries drift from the official model); gate logits
        get the position bias of each slot."""
        xf = fp32(x)
        kv = F.linear(xf, fp32(self.wkv.weight))
        gate = F.linear(xf, fp32(self.wgate.weight))
        return kv, gate + fp32(self.ape)[positions % self.ratio]


class Indexer(nn.Module):
    """Lightning indexer: scores compressed entries per query, keeps the top `index_topk`."""

    def __init__(self, config: ModelConfig, tp: TensorParallel = SINGLE) -> None:
        super().__init__()
        self.tp = tp
        self.heads = config.index_n_heads // tp.world  # this rank's heads
        self.dim, self.topk = config.index_head_dim, config.index_topk
        # Each head's weight is scaled by the number of all heads, on every rank.
        self.head_scale = self.dim**-0.5 * config.index_n_heads**-0.5
        self.wq_b = nn.Linear(config.q_lora_rank, self.heads * self.dim, bias=False)
        self.weights_proj = nn.Linear(config.hidden_size, self.heads, bias=False)
        self.compressor = Compressor(
            config, config.csa_compress_ratio, self.dim, overlap=True, indexer=True
        )
        self.quant_sim = config.kv_quant_sim

    def queries(self, x, qr, rope) -> tuple[torch.Tensor, torch.Tensor]:
        """Roped indexer queries [B,S,heads,dim] and head weights [B,S,heads] (fp32)."""
        bsz, seq, _ = x.shape
        q = self.wq_b(qr).view(bsz, seq, self.heads, self.dim)
        cos, sin = rope
        q = apply_rope(q, cos.unsqueeze(2), sin.unsqueeze(2))
        if self.quant_sim:  # rotated like the keys, so the scores are unchanged but for rounding
            q = fp4_simulate(hadamard_rotate(q))
        return q, fp32(self.weights_proj(x)) * self.head_scale

    @property
    def reduce_scores(self):
        """Sums the other ranks' heads into this rank's scores before top-k (None: one rank)."""
        return self.tp.all_reduce_ if self.tp.world > 1 else None

    def select(
        self,
        x: torch.Tensor,
        qr: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        positions: torch.Tensor,
        states: list[CompressorState],
        width: int,
    ) -> torch.Tensor:
        """Top-`width` entry indices per query [B,S,width], relative to each sequence (-1: none)."""
        bsz, seq, _ = x.shape
        q, weights = self.queries(x, qr, rope)
        counts = [s.entries.shape[0] for s in states]
        offsets = torch.tensor([0] + counts[:-1], device=x.device).cumsum(0)
        keys = torch.cat([s.entries for s in states])
        start = offsets[:, None].expand(bsz, seq)
        end = start + (positions + 1) // self.compressor.ratio
        idx, _ = kernels.indexer_topk(
            q.reshape(bsz * seq, self.heads, self.dim),
            weights.reshape(bsz * seq, self.heads),
            keys,
            start.reshape(-1),
            end.reshape(-1),
            width,
            self.reduce_scores,
        )
        idx = idx.view(bsz, seq, width).long()
        return torch.where(idx >= 0, idx - start.unsqueeze(-1), idx)
