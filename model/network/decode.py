"""Batched decode: the state of every generating sequence as one set of padded tensors.

Prefill works on immutable per-sequence `SequenceState`s (so any position can be snapshotted for
prefix reuse). Once a sequence generates, nothing snapshots it any more, so the engine moves its
state into a `DecodeBatch`, where each decode step updates all sequences with a handful of
batched, in-place tensor operations instead of a few per sequence:

- the sliding window is a ring of `sliding_window` slots (slot = position mod window);
- a compressor keeps its entries in a padded [B, capacity, d] tensor with a count per row, its
  partial window in [B, ratio, width] (slot = position mod ratio) and, when overlapping, the A
  halves of the last complete window.

It computes the same function as `Transformer.forward_step` (tests compare the two).

A *static* step (`StepShared(..., static=True)`) computes the same function without reading
anything back from the device and with shapes fixed by the batch's capacity: every row pools a
window and keeps it only where the window completed, the indexer scores every entry slot, and
the ring is used whole. CUDA graphs capture it; it assumes the entry capacity already covers
every row's growth (see `DecodeBatch.build(..., length=)`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from flashbeam import kernels
from flashbeam.kernels.indexer import score_padded, select_topk
from flashbeam.model.network.attention import Attention, attend_parts
from flashbeam.model.network.compression import Compressor
from flashbeam.model.network.layers import fp32
from flashbeam.model.network.state import CompressorState, SequenceState


@dataclass
class CompressorBatch:
    entries: torch.Tensor  # [B, capacity, dim]
    count: torch.Tensor  # [B] entries in use
    buf_kv: torch.Tensor  # [B, ratio, width] fp32, slot = position mod ratio
    buf_gate: torch.Tensor
    prev_kv: torch.Tensor | None  # [B, ratio, dim] fp32 (overlap only); gate -inf when none
    prev_gate: torch.Tensor | None

    @classmethod
    def build(cls, comp: Compressor, states: list[CompressorState], capacity: int):
        b, r, dim = len(states), comp.ratio, comp.dim
        first = states[0].entries
        width = comp.wkv.out_features
        entries = first.new_zeros(b, capacity, dim)
        buf_kv = torch.zeros(b, r, width, device=first.device)
        buf_gate = torch.zeros(b, r, width, device=first.device)
        prev_kv = prev_gate = None
        if comp.overlap:
            prev_kv = torch.zeros(b, r, dim, device=first.device)
            prev_gate = torch.full((b, r, dim), float("-inf"), device=first.device)
        for i, s in enumerate(states):
            entries[i, : s.entries.shape[0]] = s.entries
            buf_kv[i, : s.buf_kv.shape[0]] = s.buf_kv
            buf_gate[i, : s.buf_gate.shape[0]] = s.buf_gate
            if s.prev_kv is not None:
                prev_kv[i], prev_gate[i] = s.prev_kv, s.prev_gate
        count = torch.tensor([s.entries.shape[0] for s in states], device=first.device)
        return cls(entries, count, buf_kv, buf_gate, prev_kv, prev_gate)

    def append(
        self, comp: Compressor, x: torch.Tensor, pos: torch.Tensor, static: bool = False
    ) -> None:
        """Add one token per row (x [B,1,D] at positions pos [B]); pool the windows it completes."""
        rows = torch.arange(x.shape[0], device=x.device)
        kv, gate = comp.project(x[:, 0], pos)
        slot = pos % comp.ratio
        self.buf_kv[rows, slot] = kv
        self.buf_gate[rows, slot] = gate
        if static:
            self._pool_where_complete(comp, rows, slot == comp.ratio - 1, pos)
            return
        done = torch.nonzero(slot == comp.ratio - 1).flatten()
        if done.numel() == 0:
            return
        win_kv, win_gate = self.buf_kv[done], self.buf_gate[done]
        prior = (self.prev_kv[done], self.prev_gate[done]) if comp.overlap else None
        new = comp.pool(win_kv, win_gate, prior, pos[done] // comp.ratio, self.entries.dtype)
        self._reserve(int(self.count[done].max()) + 1)
        self.entries[done, self.count[done]] = new
        self.count[done] += 1
        if comp.overlap:
            self.prev_kv[done] = win_kv[..., : comp.dim]
            self.prev_gate[done] = win_gate[..., : comp.dim]

    def _pool_where_complete(self, comp, rows, done, pos) -> None:
        """Every row pools its window; only the rows whose window just completed keep the entry
        (and move it to the overlap halves). The write index is clamped so that rows that only
        pad a batch can never step past the capacity."""
        prior = (self.prev_kv, self.prev_gate) if comp.overlap else None
        new = comp.pool(self.buf_kv, self.buf_gate, prior, pos // comp.ratio, self.entries.dtype)
        at = self.count.clamp(max=self.entries.shape[1] - 1)
        self.entries[rows, at] = torch.where(done[:, None], new, self.entries[rows, at])
        self.count.add_(done.to(self.count.dtype))
        if comp.overlap:
            keep = done[:, None, None]
            self.prev_kv.copy_(torch.where(keep, self.buf_kv[..., : comp.dim], self.prev_kv))
            self.prev_gate.copy_(torch.where(keep, self.buf_gate[..., : comp.dim], self.prev_gate))

    def tensors(self) -> list[torch.Tensor]:
        """Every state tensor, rows first, in a fixed order."""
        optional = [t for t in (self.prev_kv, self.prev_gate) if t is not None]
        return [self.entries, self.count, self.buf_kv, self.buf_gate, *optional]

    def _reserve(self, needed: int, exact: bool = False) -> None:
        """Room for `needed` entries per row (doubling, unless `exact`)."""
        have = self.entries.shape[1]
        if needed > have:
            size = needed if exact else max(needed, 2 * have)
            grown = self.entries.new_zeros(self.entries.shape[0], size, self.entries.shape[2])
            grown[:, :have] = self.entries
            self.entries = grown


@dataclass
class LayerBatch:
    window: torch.Tensor  # [B, sliding_window, head_dim] ring, slot = position mod window
    compressor: CompressorBatch | None
    indexer: CompressorBatch | None


class DecodeBatch:
    """Decode state of B sequences; `positions[b]` is the position of row b's next token."""

    def __init__(self, positions: torch.Tensor, layers: list[LayerBatch]) -> None:
        self.positions = positions
        self.layers = layers

    def __len__(self) -> int:
        return int(self.positions.shape[0])

    @classmethod
    def build(
        cls,
        model,
        states: list[SequenceState],
        extra_tokens: int = 64,
        length: int | None = None,
    ) -> DecodeBatch:
        """Pack per-sequence states; room for `extra_tokens` more tokens before regrowing, or
        (`length`) entry capacity for sequences of up to `length` tokens."""
        device = model.device
        longest = length if length is not None else max(s.length for s in states) + extra_tokens
        layers = []
        for i, block in enumerate(model.layers):
            attn: Attention = block.attn
            per_seq = [s.layers[i] for s in states]
            window = _ring(per_seq, states, attn.window, attn.head_dim, model.dtype, device)
            comp = idx = None
            if attn.compressor is not None:
                cap = longest // attn.ratio + 1
                comp = CompressorBatch.build(attn.compressor, [s.compressor for s in per_seq], cap)
            if attn.indexer is not None:
                cap = longest // attn.indexer.compressor.ratio + 1
                idx = CompressorBatch.build(
                    attn.indexer.compressor, [s.indexer for s in per_seq], cap
                )
            layers.append(LayerBatch(window, comp, idx))
        positions = torch.tensor([s.length for s in states], device=device)
        return cls(positions, layers)

    def tensors(self) -> list[torch.Tensor]:
        """Every state tensor (each with the rows first), in a fixed order."""
        out = [self.positions]
        for layer in self.layers:
            out.append(layer.window)
            out += [
                t for c in (layer.compressor, layer.indexer) if c is not None for t in c.tensors()
            ]
        return out

    def map(self, fn) -> DecodeBatch:
        """A batch of the same structure whose every tensor is `fn(tensor)`."""

        def each(c: CompressorBatch | None) -> CompressorBatch | None:
            if c is None:
                return None
            prev = (fn(c.prev_kv), fn(c.prev_gate)) if c.prev_kv is not None else (None, None)
            return CompressorBatch(fn(c.entries), fn(c.count), fn(c.buf_kv), fn(c.buf_gate), *prev)

        layers = [
            LayerBatch(fn(l.window), each(l.compressor), each(l.indexer)) for l in self.layers
        ]
        return DecodeBatch(fn(self.positions), layers)

    def select(self, keep: torch.Tensor) -> DecodeBatch:
        """The rows `keep` (indices), in that order."""
        return self.map(lambda t: t[keep])

    @staticmethod
    def concat(batches: list[DecodeBatch]) -> DecodeBatch:
        """Rows of all batches, in order (entry capacities padded to the largest)."""
        if len(batches) == 1:
            return batches[0]

        def join(parts: list[CompressorBatch | None]) -> CompressorBatch | None:
            if parts[0] is None:
                return None
            cap = max(p.entries.shape[1] for p in parts)
            for p in parts:
                p._reserve(cap, exact=True)
            overlap = parts[0].prev_kv is not None
            return CompressorBatch(
                torch.cat([p.entries for p in parts]),
                torch.cat([p.count for p in parts]),
                torch.cat([p.buf_kv for p in parts]),
                torch.cat([p.buf_gate for p in parts]),
                torch.cat([p.prev_kv for p in parts]) if overlap else None,
                torch.cat([p.prev_gate for p in parts]) if overlap else None,
            )

        layers = []
        for per_layer in zip(*(b.layers for b in batches)):
            window = torch.cat([l.window for l in per_layer])
            comp = join([l.compressor for l in per_layer])
            idx = join([l.indexer for l in per_layer])
            layers.append(LayerBatch(window, comp, idx))
        return DecodeBatch(torch.cat([b.positions for b in batches]), layers)


def _ring(per_seq, states, window, dim, dtype, device) -> torch.Tensor:
    ring = torch.zeros(len(states), window, dim, dtype=dtype, device=device)
    for i, (layer, state) in enumerate(zip(per_seq, states)):
        n = layer.window.shape[0]
        if n:
            slots = torch.arange(state.length - n, state.length, device=device) % window
            ring[i, slots] = layer.window
    return ring


class StepShared:
    """What every layer of one decode step would otherwise recompute from the positions: row
    numbers, rope angles per rope kind, and each window size's ring slots and their validity."""

    def __init__(self, positions: torch.Tensor, static: bool = False) -> None:
        self.pos = positions
        self.static = static  # no reads from the device, shapes fixed by capacities
        self._memo: dict = {}

    def get(self, key, make):
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    def rows(self) -> torch.Tensor:
        return self.get("rows", lambda: torch.arange(self.pos.shape[0], device=self.pos.device))

    def rope(self, attn: Attention) -> tuple[torch.Tensor, torch.Tensor]:
        return self.get(("rope", attn.rope.compressed), lambda: attn.rope.angles(self.pos[:, None]))

    def ring(self, window: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(slot of this step's token [B], valid [B,1,window]: the slot holds a position >= 0)."""

        def make():
            pos = self.pos[:, None]
            slots = torch.arange(window, device=pos.device)
            return self.pos % window, (pos - (pos - slots) % window >= 0)[:, None]

        return self.get(("ring", window), make)

    def ring_in_use(self, window: int) -> int:
        """Ring slots that can hold keys this step: positions 0..p sit in slots 0..p until a
        row passes the window, so the slots past the longest row are empty (and masked)."""
        if self.static:
            return window
        return self.get(("in_use", window), lambda: min(window, int(self.pos.max()) + 1))


def decode_attention(attn: Attention, x: torch.Tensor, layer: LayerBatch, shared: StepShared):
    """One token per row through `attn`, updating `layer` in place. x [B,1,D] -> [B,1,D].

    With the Triton kernels (GPU), the ring and the entries go into one key pool addressed by
    per-row index lists (`kernels.sparse_attention`). Otherwise the attention runs directly on
    the batched tensors (`attend_parts`): no pool is copied and no window is gathered, which
    matters for wide windows (768 slots in the embedded model).
    """
    bsz, device, pos = x.shape[0], x.device, shared.pos
    rows = shared.rows()
    qr, q, kv, rope = attn.project_in(x, pos[:, None], rope=shared.rope(attn))
    w = attn.window
    slot, ring_valid = shared.ring(w)
    layer.window[rows, slot] = kv[:, 0]
    picked = visible = None
    if layer.compressor is not None:
        comp = layer.compressor
        comp.append(attn.compressor, x, pos, shared.static)
        if layer.indexer is not None:
            picked = _indexer_picks(attn, x, qr, rope, layer.indexer, pos, shared.static)
        else:  # HCA: every completed entry
            visible = torch.arange(comp.entries.shape[1], device=device) < comp.count[:, None]
    sink, scale = fp32(attn.attn_sink), attn.head_dim**-0.5
    if kernels.uses_triton(q):
        slots = torch.arange(w, device=device)
        indices = torch.where(ring_valid[:, 0], rows[:, None] * w + slots, -1)
        pool = layer.window.reshape(bsz * w, -1)
        if layer.compressor is not None:
            entries = layer.compressor.entries
            base = bsz * w + rows[:, None] * entries.shape[1]
            pool = torch.cat((pool, entries.reshape(-1, entries.shape[-1])))
            if picked is not None:
                entry_idx = torch.where(picked >= 0, base + picked, -1)
            else:
                columns = torch.arange(visible.shape[1], device=device)
                entry_idx = torch.where(visible, base + columns, -1)
            indices = torch.cat((indices, entry_idx), dim=1)
        out = kernels.sparse_attention(q[:, 0], pool, indices.to(torch.int32), sink, scale)
    else:
        used = shared.ring_in_use(w)  # short rows: only the ring's first slots hold keys
        parts = [(layer.window[:, :used], ring_valid[..., :used])]
        if picked is not None:
            entries = layer.compressor.entries
            chosen = entries[rows[:, None], picked.clamp(min=0)]  # [B, k, d]
            parts.append((chosen, (picked >= 0)[:, None]))
        elif visible is not None:
            parts.append((layer.compressor.entries, visible[:, None]))
        out = attend_parts(q[:, 0], parts, sink, scale)
    return attn.project_out(out.unsqueeze(1), rope)


def _indexer_picks(
    attn, x, qr, rope, idx: CompressorBatch, pos, static: bool = False
) -> torch.Tensor:
    """Top-k CSA entries per row (relative to the row; -1 = none). A static step scores every
    entry slot (the unused ones score -inf) and keeps `index_topk` columns whatever the counts."""
    idx.append(attn.indexer.compressor, x, pos, static)
    bsz, cap = idx.entries.shape[:2]
    filled = cap if static else int(idx.count.max())
    width = min(attn.config.index_topk, filled)
    if width == 0:
        return torch.full((bsz, 1), -1, device=x.device)
    q, weights = attn.indexer.queries(x, qr, rope)
    if not kernels.uses_triton(q):  # score the padded batch in place, no key gather
        count = idx.count
        scores = score_padded(q[:, 0], weights[:, 0], idx.entries[:, :filled], count)
        if attn.indexer.reduce_scores is not None:
            attn.indexer.reduce_scores(scores)
        picked, _ = select_topk(scores, torch.zeros_like(count), count, width, sync_free=static)
        return picked.long()
    start = torch.arange(bsz, device=x.device) * cap
    picked, _ = kernels.indexer_topk(
        q[:, 0], weights[:, 0], idx.entries.reshape(bsz * cap, -1), start, start + idx.count, width,
        attn.indexer.reduce_scores, max_count=cap if static else None,
    )  # fmt: skip
    picked = picked.long()
    return torch.where(picked >= 0, picked - start[:, None], -1)
