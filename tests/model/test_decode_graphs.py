"""Decode from CUDA graphs: the static step it captures computes what the eager step computes,
reads nothing back from the device, and the arena keeps every sequence's state through joins,
leaves, padding and growth. On CPU the static steps run eagerly over the same padded rows; the
capture itself is checked on a GPU."""

import gc
import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from flashbeam import kernels
from flashbeam.kernels.indexer import select_topk
from flashbeam.model import Engine, Request, Tokenizer, load_model, tiny_config
from flashbeam.model.checkpoint.random_init import random_model
from flashbeam.model.engine.bench_graphs import bench_decode_graphs
from flashbeam.model.engine.decode_graphs import graph_sizes
from flashbeam.model.engine.runner import ModelRunner
from flashbeam.model.network.decode import DecodeBatch

# The static step attends over padded widths (the whole ring, every entry slot): the same sums
# with more exact zeros, so fp32 rounding only.
STATIC = dict(rtol=1e-4, atol=2e-5)


def prompt(n, seed, vocab=500):
    return torch.randint(16, vocab, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def drive(runner, vocab):
    """Sequences join, decode, leave and join again (batch sizes 1..5, crossing the padded sizes
    and growing the arena); returns the logits of every step, one tensor per step."""
    lengths = {0: 3, 1: 37, 2: 130, 3: 9, 4: 61, 5: 150}
    live, out, step = [], [], 0

    def join(seq_id, max_length):
        runner.add(seq_id, None, max_length=max_length)
        runner.prefill([seq_id], [prompt(lengths[seq_id], seq_id, vocab)], [[]])
        live.append(seq_id)

    def decode(times):
        nonlocal step
        for _ in range(times):
            tokens = [(17 * step + 5 * i) % (vocab - 16) + 16 for i in live]
            out.append(runner.decode(list(live), tokens))
            step += 1

    join(0, 60)
    decode(2)
    join(1, 70)
    join(2, 160)  # longer than the arena so far: it grows
    decode(4)
    runner.release([0])
    live.remove(0)
    decode(2)
    for seq_id in (3, 4, 5):
        join(seq_id, 200)
    decode(6)  # five rows: the size-8 step, three rows of padding
    runner.release([1, 4])
    for seq_id in (1, 4):
        live.remove(seq_id)
    decode(3)
    return out


@pytest.mark.parametrize("preset", ["tiny", "tiny-csa", "tiny-hca", "tiny-rates"])
def test_static_steps_in_the_arena_match_eager_decode(preset):
    model = random_model(tiny_config(preset), seed=0)
    vocab = model.config.vocab_size
    with torch.inference_mode():
        eager = drive(ModelRunner(model), vocab)
        graphed_runner = ModelRunner(model, graph_sizes=[1, 2, 4, 8])
        graphed = drive(graphed_runner, vocab)
    assert len(graphed) == len(eager)
    for want, got in zip(eager, graphed):
        torch.testing.assert_close(got, want, **STATIC)
    stats = graphed_runner.graphs.stats
    assert stats["eager_steps"] == len(eager) and stats["replays"] == stats["captures"] == 0
    assert stats["arena_builds"] >= 3  # first rows, the longer sequence, more rows


def test_the_kernel_path_of_the_static_step_matches_eager_decode():
    """The Triton kernels (interpreted here) take a key pool and a bounded indexer width."""
    model = random_model(tiny_config("tiny-rates"), seed=1)
    vocab = model.config.vocab_size
    with torch.inference_mode(), kernels.use_backend("triton"):
        eager = drive(ModelRunner(model), vocab)
        graphed = drive(ModelRunner(model, graph_sizes=[2, 8]), vocab)
    for want, got in zip(eager, graphed):
        torch.testing.assert_close(got, want, **STATIC)


class ValueReads(TorchDispatchMode):
    """Counts the operations that read a tensor's values back to the host (`.item()`,
    `int(t)`, `bool(t)`) or size their output by them (`nonzero`, `unique`)."""

    READS = {"_local_scalar_dense", "item", "is_nonzero", "equal", "nonzero", "unique",
             "_unique2", "unique_consecutive"}  # fmt: skip

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ in self.READS:
            self.seen.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_the_static_step_reads_nothing_back_from_the_device(backend):
    """What a CUDA graph cannot record: on both paths (the Triton wrappers here with interpreted
    kernels) the static step makes no such read, while the eager step, which sizes its work by
    the counts, does."""
    model = random_model(tiny_config("tiny-rates"), seed=2)
    vocab = model.config.vocab_size
    with torch.inference_mode(), kernels.use_backend(backend):
        states = [
            model.forward_step(torch.tensor([prompt(n, n, vocab)]), [model.empty_state()])[1][0]
            for n in (5, 40)
        ]
        ids = torch.zeros(2, 1, dtype=torch.long)
        reads = {}
        for static in (True, False):
            batch = DecodeBatch.build(model, states, length=200)
            with ValueReads() as mode:
                model.decode_step(ids, batch, static=static)
            reads[static] = mode.seen
    assert reads[True] == [] and reads[False]


def test_sync_free_top_k_picks_exactly_what_the_sorting_top_k_picks():
    gen = torch.Generator().manual_seed(0)
    # Few distinct values: ties everywhere, signed zeros, -inf past each row's count.
    scores = torch.randint(-3, 4, (64, 40), generator=gen).float() * 0.5
    scores[scores == 0] = torch.where(
        torch.rand(int((scores == 0).sum()), generator=gen) < 0.5, 0.0, -0.0
    )
    count = torch.randint(0, 41, (64,), generator=gen)
    scores[torch.arange(40)[None, :] >= count[:, None]] = float("-inf")
    start = torch.randint(0, 100, (64,), generator=gen)
    for k in (1, 7, 40, 50):
        want = select_topk(scores, start, count, k)
        got = select_topk(scores, start, count, k, sync_free=True)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_graph_sizes_cover_every_batch_up_to_the_largest():
    assert graph_sizes(1) == [1]
    assert graph_sizes(64) == [1, 2, 4, 8, 16, 32, 64]
    assert graph_sizes(48) == [1, 2, 4, 8, 16, 32, 48]


def test_an_engine_on_the_static_steps_gives_the_eager_engines_outputs(checkpoint):
    model = load_model(checkpoint)
    requests = [
        Request(id=f"g{i}", prompt_token_ids=prompt(20 + 9 * i, i), max_tokens=5 + 2 * i)
        for i in range(6)
    ] + [Request(id="s", prompt_token_ids=prompt(30, 9), max_tokens=8, temperature=0.9, seed=7)]
    eager = Engine(model, load_tokenizer(checkpoint)).generate(requests)
    runner = ModelRunner(model, graph_sizes=graph_sizes(4))
    static = Engine(model, load_tokenizer(checkpoint), max_batch_size=4, runner=runner)
    got = static.generate(requests)
    assert [r.token_ids for r in got] == [r.token_ids for r in eager]
    assert runner.graphs.stats["eager_steps"] > 0
    static.close()


def test_closing_an_engine_frees_the_arena_and_the_model(checkpoint):
    model = load_model(checkpoint)
    runner = ModelRunner(model, graph_sizes=[1, 2])
    engine = Engine(model, load_tokenizer(checkpoint), max_batch_size=2, runner=runner)
    engine.generate([Request(id="a", prompt_token_ids=prompt(20, 1), max_tokens=3)])
    graphs, model = runner.graphs, weakref.ref(model)
    assert graphs.rows > 0
    engine.close()
    assert graphs.rows == 0 and graphs.live == 0
    del graphs
    gc.collect()
    assert model() is None


def test_cuda_graphs_are_refused_where_they_cannot_run(checkpoint):
    model = load_model(checkpoint)
    with pytest.raises(ValueError, match="cuda_graphs needs the model on one CUDA device"):
        Engine(model, load_tokenizer(checkpoint), cuda_graphs=True)


def load_tokenizer(checkpoint):
    return Tokenizer.from_file(checkpoint)


NEEDS_GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@NEEDS_GPU
@pytest.mark.parametrize("preset", ["tiny", "tiny-rates"])
def test_recorded_graphs_replay_the_eager_decode_on_a_gpu(preset):
    """fp32, so the only differences are the order of sums (padded sizes pick other GEMM
    tilings): the recorded steps must give the eager logits through joins, leaves and growth."""
    model = random_model(tiny_config(preset), seed=0).cuda()
    vocab = model.config.vocab_size
    with torch.inference_mode():
        eager = drive(ModelRunner(model), vocab)
        runner = ModelRunner(model, graph_sizes=[1, 2, 4, 8])
        graphed = drive(runner, vocab)
    for want, got in zip(eager, graphed):
        torch.testing.assert_close(got, want, **STATIC)
    stats = runner.graphs.stats
    assert stats["replays"] == len(eager) and stats["eager_steps"] == 0
    assert stats["captures"] >= 4


@NEEDS_GPU
@pytest.mark.parametrize("batch", [1, 8, 24])
def test_cuda_graph_decode_gives_the_eager_tokens_on_a_gpu(batch):
    requests = [
        Request(id=f"r{i}", prompt_token_ids=prompt(40 + 13 * i, i), max_tokens=12 + i % 5)
        for i in range(batch)
    ]
    results = {}
    for graphs in (False, True):
        engine = Engine.load("tiny", device="cuda", cuda_graphs=graphs, max_batch_size=16)
        results[graphs] = [r.token_ids for r in engine.generate(requests)]
        if graphs:
            stats = engine.runner.graphs.stats
            assert stats["captures"] > 0 and stats["replays"] > 0
        engine.close()
    assert results[True] == results[False]


def test_the_decode_graphs_benchmark_reports_both_runs_per_batch_size():
    result = bench_decode_graphs(batches=(1, 3), steps=3, prompt_len=20, dtype="float32", threads=1)
    assert result["device"] == "cpu" and result["captured"] is False
    assert [r["batch"] for r in result["results"]] == [1, 3]
    for row in result["results"]:
        assert row["eager_tokens_per_s"] > 0 and row["graphs_tokens_per_s"] > 0
        assert row["token_agreement"] == 1.0 and row["graph_replays"] == 0
