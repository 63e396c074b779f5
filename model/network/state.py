"""Per-sequence decoding state of every layer, as immutable snapshots.

The state after L tokens is everything later tokens need: the sliding-window KV of the
last `sliding_window - 1` positions, and for compressed layers the compressed entries, the raw
projections of the partial window and, for the overlapping compressors (CSA main and
indexer), the A halves of the last complete window.

Tensors here are never modified in place: a forward step returns new state objects. So a
`SequenceState` *is* its own snapshot — keeping a reference is enough for exact prefix reuse,
at any token position. A fresh state's tensors may be views into a step's larger tensors (the
chunk's keys, every window pooled in the step), which a reference keeps alive; `compact()` gives
a state that holds exactly its `nbytes`, which is what a byte-budgeted cache must keep.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch


@dataclass(frozen=True)
class CompressorState:
    """State of one compressor (ratio r, entry width d_c, c = 2 halves when overlapping)."""

    entries: torch.Tensor  # [n_entries, d_c], activation dtype, normed and roped
    buf_kv: torch.Tensor  # [L mod r, c*d_c] fp32 projections of the partial window
    buf_gate: torch.Tensor  # [L mod r, c*d_c] fp32 gate logits (+ position bias)
    prev_kv: torch.Tensor | None = None  # [r, d_c] fp32 A halves of the last complete window
    prev_gate: torch.Tensor | None = None

    @property
    def nbytes(self) -> int:
        tensors = (self.entries, self.buf_kv, self.buf_gate, self.prev_kv, self.prev_gate)
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)


@dataclass(frozen=True)
class LayerState:
    window: torch.Tensor  # [min(L, sliding_window - 1), head_dim] roped KV of the latest positions
    compressor: CompressorState | None = None
    indexer: CompressorState | None = None

    @property
    def nbytes(self) -> int:
        n = self.window.numel() * self.window.element_size()
        for part in (self.compressor, self.indexer):
            if part is not None:
                n += part.nbytes
        return n


@dataclass(frozen=True)
class SequenceState:
    """Everything the network needs to continue a sequence after `length` tokens."""

    length: int
    layers: tuple[LayerState, ...]

    @property
    def nbytes(self) -> int:
        return sum(layer.nbytes for layer in self.layers)

    def compact(self) -> SequenceState:
        """This state with every tensor that views a larger storage copied out (the others are
        shared), so that keeping it retains `nbytes` and no more."""
        return SequenceState(self.length, tuple(_compact(layer) for layer in self.layers))


def _compact(part):
    """A copy of a state dataclass whose view tensors own their storage; nested parts too."""
    changes = {}
    for field in fields(part):
        value = getattr(part, field.name)
        if isinstance(value, torch.Tensor):
            if value.untyped_storage().nbytes() > value.numel() * value.element_size():
                changes[field.name] = value.clone()
        elif value is not None:
            changes[field.name] = _compact(value)
    return replace(part, **changes) if changes else part
