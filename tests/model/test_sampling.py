import math

import pytest
import torch

from flashbeam.model.engine.request import Request
from flashbeam.model.engine.sampling import (
    SamplingError,
    SamplingParams,
    make_generator,
    sample_next,
)

INF = float("inf")
PROBS = [0.5, 0.3, 0.15, 0.05]


def frequencies(logits_row, params, draws=20000, seed=0):
    """Token frequencies over `draws` rows sampled in one batch, each with its own generator."""
    logits = torch.tensor([logits_row] * draws, dtype=torch.float32)
    generators = [make_generator(seed + i, "r") for i in range(draws)]
    tokens = sample_next(logits, [params] * draws, generators)
    return (torch.bincount(tokens, minlength=len(logits_row)).double() / draws).tolist()


def log_probs(probs):
    return [math.log(p) if p > 0 else -INF for p in probs]


def assert_close(freq, expected, tol=0.015):
    assert len(freq) == len(expected)
    for f, e in zip(freq, expected):
        assert abs(f - e) <= tol, (freq, expected)


def test_greedy_takes_the_argmax_and_the_lowest_id_on_ties():
    logits = torch.tensor([[0.1, 2.0, 2.0, -1.0], [-INF, -INF, 3.0, 3.0], [5.0, 4.0, 3.0, 2.0]])
    tokens = sample_next(logits, [SamplingParams()] * 3, [None] * 3)
    assert tokens.dtype == torch.long and tokens.tolist() == [1, 2, 0]


def test_temperature_one_follows_the_softmax():
    assert_close(frequencies(log_probs(PROBS), SamplingParams(temperature=1.0)), PROBS)


def test_temperature_sharpens_and_flattens():
    logits = log_probs(PROBS)
    for t in (0.5, 2.0):
        weights = [p ** (1 / t) for p in PROBS]
        expected = [w / sum(weights) for w in weights]
        assert_close(frequencies(logits, SamplingParams(temperature=t)), expected)
    # a tiny temperature is greedy in effect, with no overflow
    assert frequencies(logits, SamplingParams(temperature=1e-30), draws=200)[0] == 1.0


def test_top_k_support():
    freq = frequencies(log_probs(PROBS), SamplingParams(temperature=1.0, top_k=2))
    assert freq[2] == freq[3] == 0
    assert_close(freq, [0.5 / 0.8, 0.3 / 0.8, 0, 0])
    # ties at the cut keep the lower id
    freq = frequencies([1.0, 0.0, 1.0, 1.0], SamplingParams(temperature=1.0, top_k=2), draws=2000)
    assert freq[1] == freq[3] == 0 and freq[0] > 0 and freq[2] > 0


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = log_probs(PROBS)
    freq = frequencies(logits, SamplingParams(temperature=1.0, top_p=0.7))  # 0.5 + 0.3 >= 0.7
    assert freq[2] == freq[3] == 0
    assert_close(freq, [0.625, 0.375, 0, 0])
    freq = frequencies(logits, SamplingParams(temperature=1.0, top_p=0.85))  # needs 3 tokens
    assert freq[3] == 0 and freq[2] > 0
    # a p below the top token's probability still keeps that one token
    assert frequencies(logits, SamplingParams(temperature=1.0, top_p=0.01), draws=500)[0] == 1.0


def test_top_k_then_top_p():
    # top_k=3 renormalises to [0.526, 0.316, 0.158]; top_p=0.8 then keeps two of them
    freq = frequencies(log_probs(PROBS), SamplingParams(temperature=1.0, top_k=3, top_p=0.8))
    assert freq[2] == freq[3] == 0
    assert_close(freq, [0.625, 0.375, 0, 0])


def test_masked_tokens_are_never_sampled():
    logits = [0.0, -INF, 0.0, -INF, 5.0, -INF]
    for params in (SamplingParams(temperature=3.0), SamplingParams(temperature=1.0, top_p=0.999)):
        freq = frequencies(logits, params, draws=5000)
        assert freq[1] == freq[3] == freq[5] == 0 and freq[0] > 0 and freq[2] > 0
    # a single allowed token is always chosen
    single = [-INF] * 5 + [-2.0]
    assert frequencies(single, SamplingParams(temperature=1.0, top_k=3), draws=100)[5] == 1.0


def test_a_row_with_no_allowed_token_raises():
    logits = torch.tensor([[0.0, 1.0], [-INF, -INF], [1.0, float("nan")]])
    with pytest.raises(SamplingError, match=r"rows \[1, 2\]") as info:
        sample_next(logits, [SamplingParams(temperature=1.0)] * 3, [make_generator(0, "r")] * 3)
    assert info.value.rows == [1, 2]


def test_argument_errors():
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=-1)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0)
    with pytest.raises(ValueError, match="top_k"):
        SamplingParams(top_k=-1)
    with pytest.raises(ValueError, match="one SamplingParams"):
        sample_next(torch.zeros(2, 3), [SamplingParams()], [None, None])
    with pytest.raises(ValueError, match="no generator"):
        sample_next(torch.zeros(1, 3), [SamplingParams(temperature=1.0)], [None])


def test_seeds_reproduce_and_default_to_the_request_id():
    logits = torch.randn(1, 50, generator=torch.Generator().manual_seed(1))
    params = [SamplingParams(temperature=1.0)]

    def run(seed, request_id):
        g = make_generator(seed, request_id)
        return [sample_next(logits, params, [g]).item() for _ in range(30)]

    assert run(7, "a") == run(7, "b")  # an explicit seed alone decides
    assert run(7, "a") != run(8, "a")
    assert run(None, "a") == run(None, "a")  # reruns reproduce
    assert run(None, "a") != run(None, "b")
    req = Request(id="x", temperature=0.7, top_p=0.9, top_k=5, seed=3)
    assert SamplingParams(req.temperature, req.top_p, req.top_k, req.seed) == SamplingParams(
        0.7, 0.9, 5, 3
    )


def test_a_row_samples_the_same_alone_or_in_any_batch():
    torch.manual_seed(0)
    vocab = 1000
    rows = torch.randn(6, vocab) * 3
    rows[2, ::3] = -INF
    params = [
        SamplingParams(temperature=0.8, top_p=0.9, seed=1),
        SamplingParams(),
        SamplingParams(temperature=1.3, top_k=20, seed=2),
        SamplingParams(temperature=1.0, seed=3),
        SamplingParams(temperature=0.5, top_k=50, top_p=0.5, seed=4),
        SamplingParams(temperature=2.0, top_p=0.3, seed=5),
    ]
    ids = [f"req{i}" for i in range(6)]

    def generators(indices):
        return [make_generator(params[i].seed, ids[i]) for i in indices]

    alone = []
    for i in range(6):
        g = generators([i])
        alone.append([sample_next(rows[i : i + 1], [params[i]], g).item() for _ in range(20)])
    # a repeated row gets its own generator with the same seed, so it matches too
    for indices in ([0, 1, 2, 3, 4, 5], [5, 3, 1], [4, 0, 0, 2]):
        gens = generators(indices)
        batch = rows[indices]
        together = [sample_next(batch, [params[i] for i in indices], gens) for _ in range(20)]
        for pos, i in enumerate(indices):
            assert [t[pos].item() for t in together] == alone[i]
