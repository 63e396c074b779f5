"""The runner: all tensor work of the engine, driven by plain data.

It owns every tensor the engine keeps between steps, keyed by ids the engine chose:
- the `SequenceState` of each sequence still prefilling (immutable, so a restored snapshot is
  shared, never copied);
- the packed `DecodeBatch` of the generating sequences, and which sequence each row holds;
- the prefix snapshots the engine's cache indexes (compact copies: exactly their bytes).

Its calls take sequence ids, token lists, chunk sizes and snapshot ids, and return logits and
byte counts; it decides nothing (admission, eviction and sampling are the engine's), so every
call can be replayed on another copy of the runner to the same effect.

With `graph_sizes`, the generating sequences live in the arena of a `DecodeGraphs` instead of a
packed `DecodeBatch`, and each decode step replays a CUDA graph (`decode_graphs`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from flashbeam.model.engine.decode_graphs import DecodeGraphs
from flashbeam.model.engine.ranks import RankFailure
from flashbeam.model.network.decode import DecodeBatch
from flashbeam.model.network.state import SequenceState
from flashbeam.model.network.transformer import Transformer

# Out of memory or a dead rank is not one request's fault: the engine stops and fails everything
# pending.
FATAL_ERRORS: tuple[type[BaseException], ...] = (MemoryError, torch.OutOfMemoryError, RankFailure)


class ModelRunner:
    def __init__(self, model: Transformer, graph_sizes: Sequence[int] | None = None) -> None:
        """`graph_sizes`: decode from CUDA graphs captured for these batch sizes (on a CPU
        model, the same static steps run eagerly)."""
        self.model: Transformer | None = model.eval()
        self.graphs = DecodeGraphs(model, graph_sizes) if graph_sizes else None
        self._states: dict[int, SequenceState] = {}
        self._max_length: dict[int, int] = {}
        self._snapshots: dict[int, SequenceState] = {}
        self._batch: DecodeBatch | None = None
        self._rows: list[int] = []  # the sequence id of each row of `_batch`
        self._leaving: set[int] = set()  # rows of released sequences, dropped at the next decode

    # ---- sequences -----------------------------------------------------------------------------
    def add(self, seq_id: int, restore: int | None, max_length: int) -> None:
        """Start sequence `seq_id` from snapshot `restore` (None: the empty state); it may grow
        to `max_length` positions."""
        if restore is None:
            self._states[seq_id] = self.model.empty_state()
        else:
            self._states[seq_id] = self._snapshots[restore]
        self._max_length[seq_id] = max_length

    def release(self, seq_ids: list[int]) -> None:
        """Free the sequences' state (a row of the decode batch leaves it at the next decode)."""
        for seq_id in seq_ids:
            self._states.pop(seq_id, None)
            self._max_length.pop(seq_id, None)
        self._leaving.update(i for i in seq_ids if i in self._rows)
        if self._leaving and self._leaving.issuperset(self._rows):
            self._drop_batch()

    def drop_snapshots(self, snapshot_ids: list[int]) -> None:
        for snapshot_id in snapshot_ids:
            self._snapshots.pop(snapshot_id, None)

    def snapshot(self, snapshot_id: int) -> SequenceState:
        return self._snapshots[snapshot_id]

    @property
    def snapshot_ids(self) -> set[int]:
        return set(self._snapshots)

    @property
    def sequences(self) -> set[int]:
        """Ids of the sequences whose state is held (prefilling, or rows of the batch)."""
        return set(self._states) | (set(self._rows) - self._leaving)

    def clear(self) -> None:
        """Free every state, the decode batch and the snapshots."""
        self._states, self._max_length, self._snapshots = {}, {}, {}
        self._drop_batch()
        if self.graphs is not None:
            self.graphs.clear()

    def _drop_batch(self) -> None:
        """Forget the generating sequences' rows (the graphs' arena stays for the next ones)."""
        self._batch, self._rows, self._leaving = None, [], set()
        if self.graphs is not None:
            self.graphs.live = 0

    def close(self) -> None:
        """Free everything, the model included."""
        self.clear()
        device = self.model.device if self.model is not None else None
        self.model = self.graphs = None  # the graphs hold the model too
        if device is not None and device.type == "cuda":
            torch.cuda.empty_cache()

    def state_bytes(self, length: int) -> int:
        """The bytes of a snapshot after `length` tokens (`SequenceState.nbytes`), from the
        shapes alone: the scheduler budgets the cache with it before the snapshot exists."""
        item = self.model.embed.weight.element_size()
        total = 0
        for block in self.model.layers:
            attn = block.attn
            total += min(length, attn.window - 1) * attn.head_dim * item
            indexer = attn.indexer.compressor if attn.indexer is not None else None
            for comp in (attn.compressor, indexer):
                if comp is None:
                    continue
                total += length // comp.ratio * comp.dim * item  # the entries
                total += 2 * (length % comp.ratio) * comp.wkv.out_features * 4  # partial window
                if comp.overlap and length >= comp.ratio:  # the last window's A halves
                    total += 2 * comp.ratio * comp.dim * 4
        return total

    # ---- compute -------------------------------------------------------------------------------
    @torch.inference_mode()
    def prefill(
        self, seq_ids: list[int], tokens: list[list[int]], snapshots: list[list[tuple[int, int]]]
    ) -> tuple[torch.Tensor, dict[int, int]]:
        """Run one chunk of equal length per sequence -> (next-token logits [B, V], bytes of each
        snapshot taken). `snapshots[b]` lists (tokens of the chunk after which, snapshot id);
        states inside the chunk are kept by the forward pass itself, which is not cut there.
        On failure nothing changes: every state is as before the call."""
        states = [self._states[i] for i in seq_ids]
        ids = torch.tensor(tokens, device=self.model.device)
        size = ids.shape[1]
        keep_at = [[n for n, _ in snaps if n < size] for snaps in snapshots]
        if any(keep_at):
            logits, new, kept = self.model.forward_step(
                ids, states, last_only=True, keep_at=keep_at
            )
        else:
            logits, new = self.model.forward_step(ids, states, last_only=True)
            kept = [[] for _ in seq_ids]
        nbytes: dict[int, int] = {}
        for seq_id, state, snaps, inside in zip(seq_ids, new, snapshots, kept):
            self._states[seq_id] = state
            inside = iter(inside)
            for n, snapshot_id in snaps:
                snap = (state if n == size else next(inside)).compact()
                self._snapshots[snapshot_id] = snap
                nbytes[snapshot_id] = snap.nbytes
        return logits[:, -1], nbytes

    @torch.inference_mode()
    def decode(self, seq_ids: list[int], tokens: list[int]) -> torch.Tensor:
        """One token for each generating sequence -> next-token logits [B, V], in the order of
        `seq_ids`, which must name every generating sequence. Sequences decoding for the first
        time join the packed batch here. On failure the batch is dropped (its state is
        unusable): its sequences must be released."""
        try:
            keep, joining = self._changes(seq_ids)
            if self.graphs is not None:
                self._pack_graphed(keep, joining)
            else:
                self._pack(keep, joining)
            row_of = {seq_id: row for row, seq_id in enumerate(self._rows)}
            ordered = [0] * len(self._rows)
            for seq_id, token in zip(seq_ids, tokens):
                ordered[row_of[seq_id]] = token
            if self.graphs is not None:
                logits = self.graphs.step(ordered)
            else:
                ids = torch.tensor(ordered, device=self.model.device).unsqueeze(1)
                logits = self.model.decode_step(ids, self._batch)[:, -1]
        except BaseException:
            self._drop_batch()
            raise
        return logits[[row_of[i] for i in seq_ids]]

    def _changes(self, seq_ids: list[int]) -> tuple[list[int], list[int]]:
        """(rows that stay, ascending; ids of the sequences joining the batch)."""
        keep = [row for row, seq_id in enumerate(self._rows) if seq_id not in self._leaving]
        present = {self._rows[row] for row in keep}
        joining = [i for i in seq_ids if i not in present]
        if len(keep) + len(joining) != len(seq_ids) or any(i not in self._states for i in joining):
            raise ValueError(
                f"decode must name every generating sequence once: batch rows "
                f"{sorted(present)}, asked for {seq_ids}"
            )
        return keep, joining

    def _pack_graphed(self, keep: list[int], joining: list[int]) -> None:
        """`_pack` for the graphs' arena: the rows that stay move forward in place, and those
        joining are copied in after them, with room for their longest growth."""
        if len(keep) < len(self._rows):
            self.graphs.keep(keep)
        if joining:
            states = [self._states.pop(i) for i in joining]
            length = max(max(self._max_length[i], s.length + 1) for i, s in zip(joining, states))
            self.graphs.append(states, length)
        self._rows = [self._rows[row] for row in keep] + joining
        self._leaving = set()

    def _pack(self, keep: list[int], joining: list[int]) -> None:
        """Drop the rows of released sequences; append the states of those joining."""
        rows = [self._rows[row] for row in keep]
        parts = []
        if keep and len(keep) < len(self._rows):
            parts.append(self._batch.select(torch.tensor(keep, device=self.model.device)))
        elif keep:
            parts.append(self._batch)
        if joining:
            states = [self._states.pop(i) for i in joining]
            room = max(self._max_length[i] - s.length for i, s in zip(joining, states))
            parts.append(DecodeBatch.build(self.model, states, extra_tokens=max(room, 1)))
        self._rows = rows + joining
        self._leaving = set()
        self._batch = DecodeBatch.concat(parts) if parts else None
