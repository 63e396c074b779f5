"""Decode steps replayed from CUDA graphs, one graph per batch size.

At small batch sizes a decode step is dominated by launching its kernels (a few hundred per
layer), not by running them; a CUDA graph launches the whole recorded step at once. A graph
replays fixed kernels on fixed memory, so here the decode state lives in one arena: a
`DecodeBatch` with room for `rows` sequences of up to `length` tokens, whose first rows hold
the generating sequences. A step of n sequences replays the graph captured for the smallest
size >= n over the arena's first `size` rows; the rows past n only pad the batch (their outputs
are dropped, and the static step keeps their writes inside the arena). A sequence joins by
copying its packed state into the next free row, and leaving rows are closed up by moving the
rows after them forward.

The arena grows (doubling rows or length) when a joining sequence does not fit; that moves its
tensors, so the graphs are captured again when next needed. Batches larger than every size run
the same static step eagerly, as does a size whose capture failed (with a warning). Off CUDA
there are no graphs: each size's step runs eagerly over the same padded rows, which is how the
CPU tests check everything but the capture itself.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from flashbeam.model.network.decode import DecodeBatch
from flashbeam.model.network.state import SequenceState
from flashbeam.model.network.transformer import Transformer

log = logging.getLogger(__name__)

# Warm-up steps before a capture: the first runs compile the Triton kernels and let cuBLAS and
# the caching allocator set up, none of which may happen while a graph is being recorded.
WARMUP_STEPS = 2


def graph_sizes(max_batch_size: int) -> list[int]:
    """The batch sizes to capture: powers of two below `max_batch_size`, and it."""
    sizes, size = [], 1
    while size < max_batch_size:
        sizes.append(size)
        size *= 2
    return [*sizes, max_batch_size]


@dataclass
class _Step:
    """The step of one batch size: its views of the arena, and its graph once captured."""

    batch: DecodeBatch
    tokens: torch.Tensor
    graph: torch.cuda.CUDAGraph | None = None
    logits: torch.Tensor | None = None  # the graph's output buffer


class DecodeGraphs:
    def __init__(self, model: Transformer, sizes: Sequence[int]) -> None:
        if not sizes or min(sizes) < 1:
            raise ValueError(f"graph batch sizes must be >= 1, got {list(sizes)}")
        self.model = model
        self.sizes = sorted(set(sizes))
        self.capture = model.device.type == "cuda"
        self.live = 0  # rows in use: the generating sequences, in row order
        self.length = 0  # tokens each row has room for
        self._arena: DecodeBatch | None = None
        self._tokens: torch.Tensor | None = None
        self._steps: dict[int, _Step] = {}
        self._eager_sizes: set[int] = set()  # capture failed: run eagerly
        self._pool = None
        self.stats = {"captures": 0, "replays": 0, "eager_steps": 0, "arena_builds": 0}

    @property
    def rows(self) -> int:
        """Sequences the arena has room for."""
        return 0 if self._arena is None else len(self._arena)

    # ---- rows ----------------------------------------------------------------------------------
    def keep(self, rows: list[int]) -> None:
        """Keep only the live rows `rows` (ascending), moved forward to the first places."""
        if rows != list(range(len(rows))):
            index = torch.tensor(rows, device=self.model.device)
            for tensor in self._arena.tensors():
                tensor[: len(rows)] = tensor[index]
        self.live = len(rows)

    def append(self, states: list[SequenceState], length: int) -> None:
        """Add sequences after the live rows; each may grow to `length` tokens."""
        needed = self.live + len(states)
        self._reserve(needed, length)
        joining = DecodeBatch.build(self.model, states, length=self.length)
        for arena, part in zip(self._arena.tensors(), joining.tensors()):
            arena[self.live : needed] = part
        self.live = needed

    def clear(self) -> None:
        """Free the arena and every graph."""
        self._arena = self._tokens = self._pool = None
        self._steps = {}
        self.live = self.length = 0

    # ---- compute -------------------------------------------------------------------------------
    def step(self, tokens: list[int]) -> torch.Tensor:
        """One token for each live row (in row order) -> next-token logits [live, V]."""
        n = self.live
        if len(tokens) != n:
            raise ValueError(f"expected {n} tokens, one per live row, got {len(tokens)}")
        self._tokens[:n, 0] = torch.tensor(tokens, device=self._tokens.device)
        size = next((s for s in self.sizes if s >= n), n)
        step = self._step(size)
        if step.graph is not None:
            step.graph.replay()
            self.stats["replays"] += 1
            return step.logits[:n, -1]
        self.stats["eager_steps"] += 1
        return self.model.decode_step(step.tokens, step.batch, static=True)[:n, -1]

    def _step(self, size: int) -> _Step:
        step = self._steps.get(size)
        if step is None:
            step = _Step(self._arena.map(lambda t: t[:size]), self._tokens[:size])
            if self.capture and size in self.sizes and size not in self._eager_sizes:
                self._capture(step, size)
            self._steps[size] = step
        return step

    def _capture(self, step: _Step, size: int) -> None:
        device = self.model.device
        scratch = step.batch.map(torch.clone)  # warm-up steps must not touch the live rows
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_STEPS):
                self.model.decode_step(step.tokens, scratch, static=True)
        torch.cuda.current_stream(device).wait_stream(side)
        del scratch
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        try:
            # thread_local: other threads of the process (a pipeline's workers) may use CUDA
            # while the engine's thread records.
            with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
                logits = self.model.decode_step(step.tokens, step.batch, static=True)
        except torch.OutOfMemoryError:
            raise
        except Exception as error:  # an op that cannot be recorded: this size runs eagerly
            log.warning("decode batch size %d runs without a CUDA graph: %s", size, error)
            self._eager_sizes.add(size)
            return
        step.graph, step.logits = graph, logits
        self.stats["captures"] += 1

    # ---- the arena -----------------------------------------------------------------------------
    def _reserve(self, rows: int, length: int) -> None:
        """Room for `rows` sequences of `length` tokens, keeping the live rows."""
        if self._arena is not None and rows <= self.rows and length <= self.length:
            return
        size = next((s for s in self.sizes if s >= rows), rows)
        new_rows = max(size, 2 * self.rows if rows > self.rows else self.rows)
        new_length = max(length, 2 * self.length if length > self.length else self.length)
        template = DecodeBatch.build(self.model, [self.model.empty_state()], length=new_length)
        arena = template.map(lambda t: t.new_zeros((new_rows, *t.shape[1:])))
        if self._arena is not None:
            for new, old in zip(arena.tensors(), self._arena.tensors()):
                new[(slice(0, self.live), *(slice(0, n) for n in old.shape[1:]))] = old[: self.live]
        tokens = torch.zeros(new_rows, 1, dtype=torch.long, device=self.model.device)
        self._arena, self._tokens, self.length = arena, tokens, new_length
        self._steps, self._pool = {}, None  # the graphs point into the old arena
        self.stats["arena_builds"] += 1
