"""Engine.generate: continuous batching, chunked prefill, exact prefix reuse, sampling, failures."""

import torch

from flashbeam.model import Engine, Request


def make_engine(checkpoint, **options):
    return Engine.load(checkpoint, **options)


def tokens(n, seed):
    return torch.randint(16, 500, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def doc_questions(docs=2, questions=3, doc_len=150, q_len=5):
    """Document first, question last; interleaved so the engine must reorder them."""
    ds = [tokens(doc_len + d, seed=100 + d) for d in range(docs)]
    return [
        Request(
            id=f"d{d}q{q}", prompt_token_ids=ds[d] + tokens(q_len, seed=10 * d + q), max_tokens=6
        )
        for q in range(questions)
        for d in range(docs)
    ]


def test_results_come_back_in_request_order_with_usage(checkpoint):
    engine = make_engine(checkpoint)
    reqs = [
        Request(id=f"r{i}", prompt_token_ids=tokens(20 + 7 * i, i), max_tokens=4 + i)
        for i in range(5)
    ]
    results = engine.generate(reqs)
    assert [r.id for r in results] == [r.id for r in reqs]
    for req, res in zip(reqs, results):
        assert res.finish_reason in ("stop", "length")
        assert res.usage.prompt_tokens == len(req.prompt_token_ids)
        assert (
            res.usage.prompt_cache_hit_tokens + res.usage.prompt_cache_miss_tokens
            == res.usage.prompt_tokens
        )
        assert res.usage.completion_tokens == len(res.token_ids) <= req.max_tokens
        if res.finish_reason == "length":
            assert len(res.token_ids) == req.max_tokens


def test_shared_prefixes_hit_the_cache_and_match_recomputation(checkpoint):
    reqs = doc_questions()
    cached = make_engine(checkpoint).generate(reqs)
    uncached = make_engine(checkpoint, cache_bytes=0).generate(reqs)
    assert [r.token_ids for r in cached] == [r.token_ids for r in uncached]
    hits = {r.id: r.usage.prompt_cache_hit_tokens for r in cached}
    # Documents of 150 and 151 tokens: the shared prefix ends mid compression window.
    for d, doc_len in ((0, 150), (1, 151)):
        assert sorted(hits[f"d{d}q{q}"] for q in range(3)) == [0, doc_len, doc_len]
    assert all(r.usage.prompt_cache_hit_tokens == 0 for r in uncached)


def test_a_repeated_prompt_reuses_all_but_its_last_token(checkpoint):
    engine = make_engine(checkpoint)
    req = Request(id="a", prompt_token_ids=tokens(90, 7), max_tokens=5)
    first = engine.generate([req])[0]
    again = engine.generate([req])[0]
    assert again.usage.prompt_cache_hit_tokens == 89
    assert again.token_ids == first.token_ids


def test_small_cache_budget_evicts_but_stays_exact(checkpoint):
    engine = make_engine(checkpoint, cache_bytes=60_000)
    reqs = doc_questions(docs=3, questions=2)
    results = engine.generate(reqs)
    assert engine.cache.used_bytes <= 60_000
    assert engine.cache.num_pinned == 0
    reference = make_engine(checkpoint, cache_bytes=0).generate(reqs)
    assert [r.token_ids for r in results] == [r.token_ids for r in reference]


def test_the_cache_budget_counts_all_the_memory_its_snapshots_keep(checkpoint):
    # A fresh state's tensors can view the step's larger tensors (the chunk's keys, the windows
    # pooled for the whole batch); the cache must hold compact copies, or a byte budget would
    # keep many times its size alive.
    engine = make_engine(checkpoint, cache_bytes=10_000_000, max_batch_tokens=512)
    engine.generate(doc_questions(docs=3, questions=2))
    storages = {}
    refs = [node.snapshot for node in engine.cache._nodes() if node.snapshot is not None]
    assert engine.runner.snapshot_ids == {ref.id for ref in refs}  # no state outlives its entry
    for ref in refs:
        for layer in engine.runner.snapshot(ref.id).layers:
            for part in (layer, layer.compressor, layer.indexer):
                for t in vars(part).values() if part is not None else ():
                    if isinstance(t, torch.Tensor) and t.numel():
                        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    assert storages and engine.cache.used_bytes > 0
    assert sum(storages.values()) <= engine.cache.used_bytes


def test_a_planned_prefix_stays_cached_until_its_requests_are_admitted(checkpoint):
    # Two documents' first questions fill the batch; while they finish, their later snapshots
    # would push the documents' prefixes out of a cache with room for about two snapshots.
    reqs = doc_questions(docs=2, questions=2)
    engine = make_engine(checkpoint, cache_bytes=90_000, max_batch_size=2)
    results = {r.id: r for r in engine.generate(reqs)}
    hits = {rid: r.usage.prompt_cache_hit_tokens for rid, r in results.items()}
    assert sorted(hits[f"d0q{q}"] for q in range(2)) == [0, 150]
    assert sorted(hits[f"d1q{q}"] for q in range(2)) == [0, 151]
    assert engine.cache.num_pinned == 0 and engine.cache.used_bytes <= 90_000
    reference = make_engine(checkpoint, cache_bytes=0).generate(reqs)
    assert [results[r.id].token_ids for r in reqs] == [r.token_ids for r in reference]


def test_chunked_prefill_and_small_batches_give_the_same_tokens(checkpoint):
    reqs = [
        Request(id=f"r{i}", prompt_token_ids=tokens(40 + 61 * i, 30 + i), max_tokens=6)
        for i in range(6)
    ]
    roomy = make_engine(checkpoint, cache_bytes=0).generate(reqs)
    tight = make_engine(checkpoint, cache_bytes=0, max_batch_tokens=16, max_batch_size=2).generate(
        reqs
    )
    alone = [make_engine(checkpoint, cache_bytes=0).generate([r])[0] for r in reqs]
    assert (
        [r.token_ids for r in roomy] == [r.token_ids for r in tight] == [r.token_ids for r in alone]
    )


def test_seeded_sampling_does_not_depend_on_the_batch(checkpoint):
    engine = make_engine(checkpoint)
    sampled = Request(
        id="s",
        prompt_token_ids=tokens(30, 3),
        max_tokens=8,
        temperature=1.0,
        top_p=0.9,
        top_k=50,
        seed=1234,
    )
    others = [
        Request(
            id=f"o{i}",
            prompt_token_ids=tokens(25 + i, 50 + i),
            max_tokens=8,
            temperature=0.7,
            seed=i,
        )
        for i in range(4)
    ]
    alone = engine.generate([sampled])[0]
    batched = engine.generate(others[:2] + [sampled] + others[2:])[2]
    assert alone.token_ids == batched.token_ids
    other_seed = engine.generate([Request(**{**sampled.__dict__, "seed": 99})])[0]
    assert other_seed.token_ids != alone.token_ids


def test_stop_strings_cut_the_text(checkpoint):
    engine = make_engine(checkpoint)
    base = Request(id="x", prompt_token_ids=tokens(20, 4), max_tokens=12, ignore_eos=True)
    full = engine.generate([base])[0]
    stop = full.text[len(full.text) // 2 :][:3]
    assert stop
    cut = engine.generate([Request(**{**base.__dict__, "stop": [stop]})])[0]
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[: full.text.find(stop)]
    assert stop not in cut.text


def test_bad_requests_fail_alone(checkpoint):
    engine = make_engine(checkpoint)
    context = engine.model.config.max_position_embeddings
    reqs = [
        Request(id="ok", prompt_token_ids=tokens(10, 1), max_tokens=3),
        Request(id="long", prompt_token_ids=[20] * context),
        Request(id="role", messages=[{"role": "robot", "content": "hi"}]),
        Request(id="vocab", prompt_token_ids=[10**6]),
        Request(id="none"),
        Request(id="zero", prompt_token_ids=[5, 6], max_tokens=0),
    ]
    results = {r.id: r for r in engine.generate(reqs)}
    assert results["ok"].finish_reason in ("stop", "length") and results["ok"].error is None
    assert "context" in results["long"].error and "shorten" in results["long"].error
    assert "robot" in results["role"].error
    assert "outside the vocabulary" in results["vocab"].error
    assert "messages or prompt_token_ids" in results["none"].error
    assert "max_tokens" in results["zero"].error
    assert all(results[k].finish_reason == "error" for k in results if k != "ok")


def test_messages_use_the_v4_chat_format_and_thinking_mode(checkpoint):
    engine = make_engine(checkpoint)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    chat = engine.generate([Request(id="c", messages=messages, max_tokens=4)])[0]
    think = engine.generate(
        [Request(id="t", messages=messages, max_tokens=4, thinking={"type": "enabled"})]
    )[0]
    tok = engine.tokenizer
    chat_prompt = tok.encode("<｜begin▁of▁sentence｜>Be brief.<｜User｜>Hi<｜Assistant｜></think>")
    assert chat.usage.prompt_tokens == len(chat_prompt)
    assert think.usage.prompt_tokens == len(chat_prompt)  # <think> instead of </think>
    if (
        tok.think_end_id not in think.token_ids
    ):  # the reasoning never closed: all of it is reasoning
        assert think.text == "" and think.reasoning_content is not None


def test_progress_reports_every_request(checkpoint):
    seen = []
    reqs = doc_questions(docs=1, questions=2)
    make_engine(checkpoint).generate(reqs, progress=seen.append)
    assert seen[-1].finished == seen[-1].total == 2
    assert seen[-1].cached_tokens > 0 and seen[-1].generated_tokens > 0


def test_a_model_failure_in_prefill_fails_only_its_request(checkpoint, monkeypatch):
    engine = make_engine(checkpoint, cache_bytes=0)
    real = engine.model.forward_step

    def failing(ids, states, last_only=False):
        if (ids == 499).any():
            raise RuntimeError("injected failure")
        return real(ids, states, last_only=last_only)

    monkeypatch.setattr(engine.model, "forward_step", failing)
    reqs = [
        Request(id="ok", prompt_token_ids=[20, 21, 22, 23], max_tokens=3),
        Request(id="bad", prompt_token_ids=[20, 21, 499, 23], max_tokens=3),  # same chunk size
        Request(id="alone", prompt_token_ids=[499, 30, 31], max_tokens=3),
    ]
    results = {r.id: r for r in engine.generate(reqs)}
    assert results["ok"].finish_reason in ("stop", "length")
    for rid in ("bad", "alone"):
        assert results[rid].finish_reason == "error"
        assert "injected failure" in results[rid].error


def record_prefill_chunks(engine) -> list[int]:
    """The chunk lengths of every `forward_step` (prefill) call the engine makes from now on."""
    calls: list[int] = []
    forward_step = engine.model.forward_step

    def recording(ids, states, **kw):
        calls.append(ids.shape[1])
        return forward_step(ids, states, **kw)

    engine.model.forward_step = recording
    return calls


def test_snapshots_do_not_cut_prefill_chunks(checkpoint):
    """A prompt that fits the step budget prefills in one forward call with the cache on too:
    the snapshot one token before the end is taken inside the chunk. A repeat then reuses all
    but the last token, and the tokens are those of an engine without a cache."""
    request = Request(id="a", prompt_token_ids=tokens(300, seed=5), max_tokens=4)
    runs = {}
    for cache_bytes in (0, 1 << 26):
        engine = make_engine(checkpoint, max_batch_tokens=4096, cache_bytes=cache_bytes)
        chunks = record_prefill_chunks(engine)
        first = engine.generate([request])[0]
        repeat = engine.generate([request])[0]
        runs[cache_bytes] = (chunks, first.token_ids, repeat)
    assert runs[0][0] == [300, 300]
    assert runs[1 << 26][0] == [300, 1]  # the repeat restores 299 tokens and computes one
    assert runs[1 << 26][2].usage.prompt_cache_hit_tokens == 299
    assert runs[0][1] == runs[1 << 26][1] == runs[1 << 26][2].token_ids


def test_snapshots_every_interval_are_taken_without_cutting_the_prefill(checkpoint):
    """Each prompt that fits the budget prefills in one forward call; one cut short by the
    budget stops at a multiple of `snapshot_interval` (so rows at equal progress keep equal
    chunk sizes). Either way the snapshots every interval are reusable by later requests."""
    a, b = tokens(150, seed=21), tokens(170, seed=22)
    reqs = [
        Request(id="a", prompt_token_ids=a, max_tokens=2),
        Request(id="b", prompt_token_ids=b, max_tokens=2),
    ]
    chunks = {}
    for budget in (4096, 100):
        engine = make_engine(checkpoint, snapshot_interval=64, max_batch_tokens=budget)
        chunks[budget] = record_prefill_chunks(engine)
        engine.generate(reqs)
        later = engine.generate([Request(id="c", prompt_token_ids=b[:140] + [7], max_tokens=2)])
        assert later[0].usage.prompt_cache_hit_tokens == 128
    assert sorted(chunks[4096]) == [13, 150, 170]  # 13: "c" after restoring 128
    assert 64 in chunks[100] and 150 not in chunks[100]
