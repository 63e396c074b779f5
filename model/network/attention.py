"""V4 attention: low-rank q, one shared K=V head, sliding window, CSA and HCA compression.

Every layer attends over the union of its sliding window and (for compressed layers) compressed
entries in one joint softmax with a per-head sink. Two ways to compute it:
- with the Triton kernels (GPU), the queries of all sequences in a step are flattened and given
  per-query index lists into one pool of key vectors (`kernels.sparse_attention`), for prefill
  chunks and batched decode alike;
- on the torch path, the same softmax over separate key sets (`attend_parts`): a prefill chunk's
  queries in blocks over a band of window keys plus their entries, a decode step's over the
  batched window ring plus the entries. Gathering every query's window would copy it per query.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from flashbeam import kernels
from flashbeam.model.network.compression import Compressor, Indexer
from flashbeam.model.network.config import ModelConfig
from flashbeam.model.network.kv_quant import fp8_simulate
from flashbeam.model.network.layers import RMSNorm, RopeTable, apply_rope, cast, fp32, rms_normalize
from flashbeam.model.network.parallel import SINGLE, TensorParallel
from flashbeam.model.network.quantized import FP8Linear
from flashbeam.model.network.state import LayerState

# With autograd on (training), whole fresh sequences up to this length use one fused masked
# attention (torch SDPA), fast to differentiate. Inference takes the paths above; they sum in
# different orders, so prefill, decode and cache hits agree to fp32 rounding (the tests allow
# 1e-5, and 2e-5 for the packed decode batch).
DENSE_MAX_TOKENS = 2048


def sdpa_with_sink(
    q: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor, sink: torch.Tensor, scale: float
) -> torch.Tensor:
    """Attention of q [B,S,H,d] over shared keys = values [B,T,d] where mask [B,S,T] is True,
    with a per-head sink logit in the softmax denominator; fp32, returns [B,S,H,d] in q's dtype.

    The sink rides along as one extra key through torch's fused attention: each query gets an
    extra component 1 and the sink key is zero except `sink_h / scale` there, so its logit is
    sink_h. Keys serve as values; the sink key's value is zero in the first d components, the
    only ones kept. (Equal q/k/v widths and an additive mask keep CPU on the fused kernel.)
    """
    bsz, seq, heads, dim = q.shape
    count = keys.shape[1]
    qf, kf = q.float(), keys.float()
    q_aug = torch.cat((qf, qf.new_ones(bsz, seq, heads, 1)), dim=-1).transpose(1, 2)
    k_aug = torch.cat((kf, kf.new_zeros(bsz, count, 1)), dim=-1)
    k_aug = k_aug.unsqueeze(1).expand(bsz, heads, count, dim + 1)
    sink_key = torch.cat((kf.new_zeros(heads, dim), sink.float()[:, None] / scale), dim=-1)
    k_aug = torch.cat((k_aug, sink_key.view(1, heads, 1, dim + 1).expand(bsz, -1, -1, -1)), 2)
    bias = torch.zeros(bsz, 1, seq, count + 1, device=q.device)
    bias[..., :count].masked_fill_(~mask.unsqueeze(1), float("-inf"))
    out = F.scaled_dot_product_attention(q_aug, k_aug, k_aug, attn_mask=bias, scale=scale)
    return out[..., :dim].transpose(1, 2).to(q.dtype)


def attend_parts(
    q: torch.Tensor,
    parts: list[tuple[torch.Tensor, torch.Tensor]],
    sink: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """Queries q [R,H,d] attend over the union of several key sets, one softmax across all of
    them with the per-head sink in the denominator, fp32 (the function of
    `kernels.sparse_attention`, without gathering every query's keys into one list).

    A part is (keys = values [G,T,d], valid [G,M|1,T]) for a grouping of the R*H query rows into
    G groups of M consecutive rows that share those keys: G = R (each query its own keys), or
    fewer, larger groups (a block of queries and all their heads over one band of keys).
    """
    rows, heads, dim = q.shape
    qf = fp32(q)
    parts = [part for part in parts if part[0].shape[-2]]  # a part with no keys adds nothing
    logits = []
    for keys, valid in parts:
        groups = keys.shape[0]
        scores = torch.matmul(qf.reshape(groups, -1, dim), fp32(keys).transpose(-1, -2))
        scores = scores.mul_(scale).masked_fill_(~valid, float("-inf"))
        logits.append(scores.view(rows, heads, -1))
    top = torch.stack([s.amax(dim=-1) for s in logits]).amax(dim=0)
    top = torch.maximum(top, sink)  # finite: the sink is
    denom = torch.exp(sink - top)
    out = None
    for scores, (keys, _) in zip(logits, parts):
        probs = torch.exp(scores - top[..., None])
        denom = denom + probs.sum(dim=-1)
        part = torch.matmul(probs.view(keys.shape[0], -1, keys.shape[1]), fp32(keys))
        out = part.view(rows, heads, dim) if out is None else out + part.view(rows, heads, dim)
    return cast(out / denom[..., None], q.dtype)


class Attention(nn.Module):
    """One layer's attention on one rank: its share of the query heads and output groups (all
    of them on a single device); the K=V head and the compressors are whole on every rank."""

    def __init__(self, config: ModelConfig, layer: int, tp: TensorParallel = SINGLE) -> None:
        super().__init__()
        self.config, self.tp = config, tp
        self.kind, self.ratio = config.layer_kinds[layer], config.layer_ratio(layer)
        self.heads, self.head_dim = config.num_attention_heads // tp.world, config.head_dim
        self.groups = config.o_groups // tp.world
        self.window = config.sliding_window
        d, q_rank = config.hidden_size, config.q_lora_rank
        self.wq_a = nn.Linear(d, q_rank, bias=False)
        self.q_norm = RMSNorm(q_rank, config.rms_norm_eps)
        self.wq_b = nn.Linear(q_rank, self.heads * self.head_dim, bias=False)
        self.wkv = nn.Linear(d, self.head_dim, bias=False)
        self.kv_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
        group_in = self.heads * self.head_dim // self.groups
        self.wo_a = nn.Linear(group_in, self.groups * config.o_lora_rank, bias=False)
        self.wo_b = nn.Linear(self.groups * config.o_lora_rank, d, bias=False)
        self.attn_sink = nn.Parameter(torch.zeros(self.heads))
        self.compressor = (
            Compressor(config, self.ratio, self.head_dim, overlap=self.kind == "csa")
            if self.ratio
            else None
        )
        self.indexer = Indexer(config, tp) if self.kind == "csa" else None
        self.rope = RopeTable(config, compressed=self.ratio > 0)

    def empty_state(self, device: torch.device, dtype: torch.dtype) -> LayerState:
        window = torch.zeros(0, self.head_dim, device=device, dtype=dtype)
        comp = self.compressor.empty_state(device, dtype) if self.compressor else None
        idx = self.indexer.compressor.empty_state(device, dtype) if self.indexer else None
        return LayerState(window, comp, idx)

    def forward(
        self,
        x: torch.Tensor,
        starts: list[int],
        states: list[LayerState],
        tail: int | None = None,
        keep_at: list[list[int]] | None = None,
    ) -> tuple[torch.Tensor, list[LayerState], list[list[LayerState]] | None]:
        """Attend for x [B,S,D] (sequence b continuing at starts[b]); returns the outputs, the
        new states and, with `keep_at`, each sequence's states after the given numbers of this
        step's tokens (snapshots inside a prefill chunk; else None). With `tail`, every position
        still enters the state but only the last `tail` positions query and get outputs
        ([B,tail,D]): a prefill whose other outputs nothing reads (the last layer when only the
        next token's logits are wanted)."""
        bsz, seq, _ = x.shape
        positions = torch.tensor(starts, device=x.device)[:, None] + torch.arange(
            seq, device=x.device
        )
        tail = seq if tail is None else min(tail, seq)
        qr, q, kv, (cos, sin) = self.project_in(x, positions, tail)

        comp = idx = [None] * bsz
        comp_kept = idx_kept = None
        if self.compressor is not None:
            comp, comp_kept = self.compressor(x, starts, [s.compressor for s in states], keep_at)
        if self.indexer is not None:
            idx, idx_kept = self.indexer.compressor(x, starts, [s.indexer for s in states], keep_at)

        windows = [
            torch.cat((s.window, kv[b])) if s.window.shape[0] else kv[b]
            for b, s in enumerate(states)
        ]
        entries = [c.entries for c in comp] if self.compressor is not None else []
        q_positions, q_rope = (
            positions[:, seq - tail :],
            (cos[:, seq - tail :], sin[:, seq - tail :]),
        )
        picked = None
        if self.indexer is not None:
            width = min(self.config.index_topk, max(e.shape[0] for e in entries))
            if width > 0:
                picked = self.indexer.select(
                    x[:, seq - tail :], qr, q_rope, q_positions, idx, width
                )
        dense = torch.is_grad_enabled() and not any(starts) and tail == seq
        if dense and seq <= DENSE_MAX_TOKENS:
            out = self._dense_attention(q, kv, entries, positions, picked)
        elif kernels.uses_triton(q):
            out = self._sparse_attention(q, windows, entries, starts, q_positions, picked, seq)
        else:
            out = self._banded_attention(q, kv, states, entries, q_positions, picked)
        new_states = [
            LayerState(self._window_after(w, w.shape[0]), comp[b], idx[b])
            for b, w in enumerate(windows)
        ]
        kept = None
        if keep_at is not None:
            kept = [
                [
                    LayerState(
                        self._window_after(w, w.shape[0] - seq + k),
                        comp_kept[b][i] if comp_kept else None,
                        idx_kept[b][i] if idx_kept else None,
                    )
                    for i, k in enumerate(keep_at[b])
                ]
                for b, w in enumerate(windows)
            ]
        return self.project_out(out, q_rope), new_states, kept

    def _window_after(self, rows: torch.Tensor, end: int) -> torch.Tensor:
        """The window state once the first `end` of these key rows are in: the last W-1."""
        keep = self.window - 1
        return rows[max(0, end - keep) : end] if keep else rows[:0]

    def project_in(
        self, x: torch.Tensor, positions: torch.Tensor, tail: int | None = None, rope=None
    ):
        """(qr, roped per-head-normalised q [B,tail,H,d] of the last `tail` positions (default
        all), roped kv [B,S,d] of all, rope cos/sin of all; `rope` if given, computed once
        for several layers)."""
        bsz, seq, _ = x.shape
        tail = seq if tail is None else tail
        cos, sin = self.rope.angles(positions) if rope is None else rope
        qr = self.q_norm(self.wq_a(x[:, seq - tail :]))
        q = self.wq_b(qr).view(bsz, tail, self.heads, self.head_dim)
        q = rms_normalize(q, self.config.rms_norm_eps)
        q_cos, q_sin = cos[:, seq - tail :], sin[:, seq - tail :]
        q = apply_rope(q, q_cos.unsqueeze(2), q_sin.unsqueeze(2))
        kv = apply_rope(self.kv_norm(self.wkv(x)), cos, sin)
        if self.config.kv_quant_sim:
            kv = fp8_simulate(kv, self.head_dim - self.config.qk_rope_head_dim)
        return qr, q, kv, (cos, sin)

    def _sparse_attention(self, q, windows, entries, starts, positions, picked, chunk):
        """Each query (at `positions`, among the last of this step's `chunk` tokens) attends to
        its own index list into one pool of key vectors."""
        bsz, seq = q.shape[:2]
        pool, indices, entry_base = self._gather_plan(windows, entries, starts, positions, chunk)
        if picked is not None:
            picked = torch.where(picked >= 0, picked + entry_base[:, None, None], picked)
            indices = torch.cat((indices, picked), dim=-1)
        out = kernels.sparse_attention(
            q.reshape(bsz * seq, self.heads, self.head_dim),
            pool,
            indices.reshape(bsz * seq, -1).to(torch.int32),
            self.attn_sink.float(),
            self.head_dim**-0.5,
        )
        return out.view(bsz, seq, self.heads, self.head_dim)

    def _banded_attention(self, q, kv, states, entries, positions, picked):
        """The torch path of `_sparse_attention` for a prefill chunk: blocks of queries attend
        over a dense band of window keys (no per-query gather of the window), and the entries
        (the indexer's CSA picks, or every HCA entry completed by the query's position) join
        the same softmax (`attend_parts`).

        q [B,Tq,H,d] are the chunk's last Tq positions, kv [B,S,d] the chunk's keys; each
        sequence's window state holds the keys of its W-1 positions before the chunk.
        """
        bsz, tq, heads, dim = q.shape
        seq, w = kv.shape[1], self.window
        device = q.device
        # window keys: W-1 rows of history (zeros where a sequence has fewer), then the chunk,
        # from the row the first query's window starts at
        history = kv.new_zeros(bsz, w - 1, dim)
        missing = []
        for b, state in enumerate(states):
            n = state.window.shape[0]
            if n:
                history[b, w - 1 - n :] = state.window
            missing.append(w - 1 - n)
        keys = torch.cat((history, kv), dim=1)[:, seq - tq :]  # [B, tq + w - 1, d]
        # blocks of a quarter window: each scores w + block - 1 keys for its w visible ones
        # (a fifth wasted at most), in few enough batched products
        block = max(1, min(tq, -(-w // 4)))
        blocks = -(-tq // block)
        padded = blocks * block
        keys = F.pad(keys, (0, 0, 0, padded - tq))
        bands = keys.unfold(1, block + w - 1, block).transpose(-1, -2)  # [B, nb, block+w-1, d]
        # query i of a block sees band rows i .. i+w-1 that are not history padding
        i = torch.arange(block, device=device)[:, None]
        j = torch.arange(block + w - 1, device=device)
        in_band = (j >= i) & (j <= i + w - 1)  # [block, block+w-1]
        row = seq - tq + torch.arange(blocks, device=device)[:, None] * block + j  # [nb, K]
        real = row >= torch.tensor(missing, device=device)[:, None, None]  # [B, nb, K]
        valid = (in_band & real[:, :, None, :]).repeat_interleave(heads, dim=2)
        parts = [(bands.flatten(0, 1), valid.flatten(0, 1))]
        q = F.pad(q, (0, 0, 0, 0, 0, padded - tq))
        if entries:
            stacked = nn.utils.rnn.pad_sequence(entries, batch_first=True)  # [B, E, d]
            if picked is not None:  # CSA: each query's picks
                picked = F.pad(picked, (0, 0, 0, padded - tq), value=-1)
                rows = torch.arange(bsz, device=device)[:, None, None]
                chosen = stacked[rows, picked.clamp(min=0)]  # [B, Qp, k, d]
                parts.append((chosen.flatten(0, 1), (picked >= 0).flatten(0, 1)[:, None]))
            else:  # HCA: the entries completed by each query's position
                done = (F.pad(positions, (0, padded - tq)) + 1) // self.ratio  # [B, Qp]
                seen = torch.arange(stacked.shape[1], device=device) < done[..., None]
                valid = seen.repeat_interleave(heads, dim=1)  # [B, Qp*H, E]
                parts.append((stacked, valid))
        out = attend_parts(
            q.reshape(bsz * padded, heads, dim), parts, fp32(self.attn_sink), dim**-0.5
        )
        return out.view(bsz, padded, heads, dim)[:, :tq]

    def _dense_attention(self, q, kv, entries, positions, picked):
        """Fresh sequences of one length (a whole-sequence forward, training): the same joint
        softmax as the sparse path, as one masked fused attention over window keys + all entries."""
        seq = q.shape[1]
        pos = positions[0]
        visible = (pos[None, :] <= pos[:, None]) & (pos[None, :] > pos[:, None] - self.window)
        keys = kv
        mask = visible.expand(q.shape[0], seq, seq)
        if entries:
            stacked = torch.stack(entries)
            count = stacked.shape[1]
            if picked is not None:  # CSA: the indexer's picks
                chosen = torch.zeros(
                    *picked.shape[:2], count + 1, dtype=torch.bool, device=q.device
                )
                chosen.scatter_(-1, torch.where(picked >= 0, picked, count), True)
                entry_mask = chosen[..., :count]
            else:  # HCA: every completed entry
                w = torch.arange(count, device=q.device)
                entry_mask = (w < ((pos + 1) // self.ratio)[:, None]).expand(q.shape[0], -1, -1)
            keys = torch.cat((kv, stacked), dim=1)
            mask = torch.cat((mask, entry_mask), dim=-1)
        return sdpa_with_sink(q, keys, mask, self.attn_sink, self.head_dim**-0.5)

    def _gather_plan(self, windows, entries, starts, positions, chunk):
        """One key pool for the whole step and each query's window (+ HCA entry) indices into it.

        Pool layout per sequence b: its window rows (positions starts[b]-n_b .. end), then its
        compressed entries (whose pool offsets are returned too). -1 marks a slot a query must
        not see.
        """
        device = positions.device
        pieces = [t for b, w in enumerate(windows) for t in (w, *(entries[b : b + 1]))]
        pool = torch.cat(pieces)
        sizes = [
            w.shape[0] + (entries[b].shape[0] if entries else 0) for b, w in enumerate(windows)
        ]
        base = torch.tensor([0] + sizes[:-1], device=device).cumsum(0)
        first_pos = torch.tensor(
            [s - (w.shape[0] - chunk) for s, w in zip(starts, windows)], device=device
        )
        key_pos = (
            positions.unsqueeze(-1) - self.window + 1 + torch.arange(self.window, device=device)
        )
        win_idx = base[:, None, None] + key_pos - first_pos[:, None, None]
        indices = torch.where(key_pos >= 0, win_idx, torch.full_like(win_idx, -1))
        entry_base = base + torch.tensor([w.shape[0] for w in windows], device=device)
        if self.kind == "hca":
            count = max(e.shape[0] for e in entries)
            w = torch.arange(count, device=device)
            visible = w < ((positions + 1) // self.ratio).unsqueeze(-1)
            ent_idx = entry_base[:, None, None] + w
            indices = torch.cat((indices, torch.where(visible, ent_idx, -1)), dim=-1)
        return pool, indices, entry_base

    def project_out(self, out: torch.Tensor, rope) -> torch.Tensor:
        """De-rotate the output's rope dims at the query position (values carry the keys' rope,
        the query position undoes it), then the grouped low-rank projection: each head group through
        its own rows
        of wo_a, then wo_b. With several ranks, each holds some groups and the columns of wo_b
        they feed: the partial outputs are summed over the ranks in fp32."""
        cos, sin = rope
        out = apply_rope(out, cos.unsqueeze(2), sin.unsqueeze(2), inverse=True)
        bsz, seq = out.shape[:2]
        groups = self.groups
        grouped = out.reshape(bsz, seq, groups, -1)
        if isinstance(self.wo_a, FP8Linear):  # kept FP8 (GPU)
            z = self.wo_a.grouped(grouped)
        else:
            wo_a = self.wo_a.weight.view(groups, self.config.o_lora_rank, -1)
            z = torch.einsum("bsgi,gri->bsgr", grouped, wo_a)
        out = self.wo_b(z.flatten(2))
        return out if self.tp.world == 1 else cast(self.tp.sum_fp32(out), out.dtype)
