"""The training entry point: a short run is reproducible and yields a loadable checkpoint."""

import json

import pytest
import torch
from safetensors.torch import load_file

from flashbeam.model import Engine, Request
from flashbeam.model.network.config import ModelConfig
from flashbeam.model.network.transformer import Transformer
from flashbeam.model.text.tokenizer import Tokenizer
from flashbeam.model.training import common, synthetic
from flashbeam.model.training.batches import (
    build_tokenizer,
    collate,
    copy_batch,
    encode_example,
    example_stream,
    parse_task_mix,
)
from flashbeam.model.training.losses import HeadProbe, pointer_loss, prev_token_loss
from flashbeam.model.training.reports import layouts_of
from flashbeam.model.training.train import DEFAULT_CONFIG, TASK_MIX, TrainOptions, main, train

SMALL = dict(vocab_size=512, hidden_size=32, num_attention_heads=2, head_dim=16,
             qk_rope_head_dim=8, q_lora_rank=16, o_lora_rank=8, moe_intermediate_size=32,
             sliding_window=64, index_n_heads=2, index_head_dim=16, index_topk=4)  # fmt: skip


def _run(out, seed=0):
    # One copy-curriculum step, then two on the tasks: both phases run.
    opts = TrainOptions(out=out, steps=3, seed=seed, batch_tokens=1536, tokenizer_docs=90,
                        log_every=1, copy_steps=1, copy_span=8, config_overrides=SMALL)  # fmt: skip
    return train(opts)


def test_a_short_run_is_reproducible_and_loads(tmp_path):
    first = _run(tmp_path / "a")
    second = _run(tmp_path / "b")
    assert first["final_loss"] == second["final_loss"]
    a = load_file(tmp_path / "a" / "model.safetensors")
    b = load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = json.loads((tmp_path / "a" / "training.json").read_text())["log"]
    assert len(log) == 3 and all(entry["loss"] > 0 for entry in log)
    engine = Engine.load(tmp_path / "a")
    result = engine.generate([Request(id="x", messages=[{"role": "user", "content": "Hi"}],
                                      max_tokens=3)])[0]  # fmt: skip
    assert result.finish_reason in ("stop", "length")


def test_collate_masks_the_prompt_and_padding():
    batch = collate([([5, 6, 7, 8], 2, [(1, [0])]), ([9, 10, 11], 2, [])], pad_id=1)
    assert batch.inputs.tolist() == [[5, 6, 7], [9, 10, 1]]
    # Only the answer tokens (after the 2-token prompt) are answer targets ...
    assert batch.targets.tolist() == [[-100, 7, 8], [-100, 11, -100]]
    # ... and the prompt's own next tokens the prompt targets; padding is in neither.
    assert batch.prompt_targets.tolist() == [[6, -100, -100], [10, -100, -100]]
    # Pointers: (row, query position) and the key positions to attend to.
    assert batch.queries.tolist() == [[0, 1]]
    assert batch.sources.tolist() == [[True, False, False]]


def test_a_copy_batch_asks_for_the_repeat_of_a_random_span():
    tok = Tokenizer.from_file("model/tiny")
    gen = torch.Generator().manual_seed(3)
    batch = copy_batch(gen, tok, batch_tokens=200, span=9)
    inputs, targets, prompt = batch.inputs, batch.targets, batch.prompt_targets
    assert batch.queries.shape == (0, 2) and batch.sources.shape == (0, 18)
    assert inputs.shape == targets.shape == (10, 18)  # 200 // (2*9 + 1) rows of 19 tokens
    assert (inputs[:, 0] == tok.bos_id).all()
    span = inputs[:, 1:10]
    # The first occurrence is context; the answer is the span again, token for token.
    assert (targets[:, :9] == -100).all() and torch.equal(targets[:, 9:], span[:, :9])
    assert torch.equal(inputs[:, 10:], span[:, :8])
    # Only ordinary tokens: no special token (BOS, EOS, chat markers) inside a span.
    assert int(span.min()) > max(tok.backend.get_added_tokens_decoder())
    assert (prompt == -100).all()
    # Seeded: the same generator seed gives the same batch, another seed another one.
    again = copy_batch(torch.Generator().manual_seed(3), tok, batch_tokens=200, span=9).inputs
    other = copy_batch(torch.Generator().manual_seed(4), tok, batch_tokens=200, span=9).inputs
    assert torch.equal(again, inputs) and not torch.equal(other, inputs)
    with pytest.raises(ValueError, match="copy span"):
        copy_batch(gen, tok, batch_tokens=200, span=0)


def test_an_unusable_device_is_refused_with_the_fix(capsys):
    with pytest.raises(SystemExit):
        main(["--out", "unused", "--device", "tpu"])
    assert "--device 'tpu'" in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            main(["--out", "unused", "--device", "cuda"])
        assert "no CUDA device" in capsys.readouterr().err


def test_pointers_name_the_document_tokens_an_answer_token_copies():
    tok = Tokenizer.from_file("model/tiny")
    examples = synthetic.generate("extract", 8, seed=5) + synthetic.generate("reduce", 2, seed=5)
    for ex in examples:
        ids, n_prompt, pointers = encode_example(tok, ex)
        assert pointers
        for query, sources in pointers:
            assert n_prompt - 1 <= query < len(ids) - 1  # predicts an answer token
            answer = tok.decode([ids[query + 1]]).strip()
            for s in sources:
                assert s < n_prompt  # a prompt token ...
                written = tok.decode([ids[s]]).strip()
                # ... holding the answer token's first copied character (names and numbers; a
                # date's digits may come from a month name, a decimal point from a comma, a
                # currency code from its symbol)
                symbol = common.CURRENCY_SYMBOLS.get(answer)
                assert (
                    answer[0] in written
                    or answer.isdigit()
                    or answer == "."
                    or (symbol is not None and symbol in written)
                ), (answer, written)
        # the copied values of the gold are what the pointed-at answer tokens spell
        copied = tok.decode([ids[q + 1] for q, _ in pointers]).replace(" ", "")
        names = [ex.gold["vendor"]] if ex.task == "extract" else ex.gold["people"]
        assert all(name.replace(" ", "") in copied for name in names)
    # an answer with nothing to copy has no pointers
    ex = synthetic.generate("extract", 1, seed=5)[0]
    ex.sources = {}
    assert encode_example(tok, ex)[2] == []


def test_pointer_loss_reads_the_heads_real_weights_and_trains_them():
    torch.manual_seed(0)
    config = {**DEFAULT_CONFIG, **SMALL, "compress_ratios": [0, 0], "num_hidden_layers": 2}
    model = Transformer(ModelConfig(**config))
    probe = HeadProbe(model, 1, head=1)
    with pytest.raises(ValueError, match="head 2"):
        HeadProbe(model, 1, head=2)
    # a batch whose answer token at query 9 copies the token at key 3
    ids = torch.randint(10, 500, (2, 12))
    batch = collate([(ids[0].tolist(), 8, [(9, [3]), (10, [4, 5])]), (ids[1].tolist(), 8, [])], 1)
    seen = {}
    dense = model.layers[1].attn._dense_attention
    model.layers[1].attn._dense_attention = lambda *a: seen.setdefault("out", dense(*a))
    model(batch.inputs)
    del model.layers[1].attn._dense_attention
    # the probe's weights, applied to the layer's keys (= values), give that head's output
    log_w = probe.log_weights(torch.tensor([0, 1]), torch.tensor([9, 6]))
    assert torch.isinf(log_w[0, 10:]).all() and torch.isinf(log_w[1, 7:]).all()  # causal
    x = probe.x
    _, _, kv, _ = probe.attn.project_in(x, torch.arange(x.shape[1]).expand(2, -1))
    mixed = torch.einsum("ps,psd->pd", log_w.exp(), kv[[0, 1]])
    torch.testing.assert_close(mixed, seen["out"][[0, 1], [9, 6], 1], atol=1e-5, rtol=1e-4)
    # descending the pointer loss moves the head's mass onto the sources
    optim = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        model(batch.inputs)
        loss = pointer_loss(probe, batch)
        first = first if first is not None else loss.item()
        optim.zero_grad()
        loss.backward()
        optim.step()
    assert loss.item() < 0.25 * first
    probe.remove()  # detached: a later forward leaves nothing behind
    model(batch.inputs)
    assert probe.x is None


def test_pointers_out_of_the_heads_window_are_left_out():
    torch.manual_seed(0)
    config = {**DEFAULT_CONFIG, **SMALL, "compress_ratios": [0], "num_hidden_layers": 1}
    model = Transformer(ModelConfig(**config))  # window 64
    probe = HeadProbe(model, 0, head=0)
    ids = torch.randint(10, 500, (100,)).tolist()
    far = collate([(ids, 80, [(90, [5])])], pad_id=1)  # source 85 tokens back: not visible
    near = collate([(ids, 80, [(90, [5]), (91, [60])])], pad_id=1)
    model(far.inputs)
    loss = pointer_loss(probe, far)
    assert loss.item() == 0.0  # nothing to learn, and no NaN from an empty softmax
    model(near.inputs)
    loss = pointer_loss(probe, near)
    alone = -probe.log_weights(torch.tensor([0]), torch.tensor([91]))[0, 60]
    torch.testing.assert_close(loss, alone)  # only the reachable query counts
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_prev_token_loss_scores_each_drawn_positions_predecessor_and_trains_it():
    torch.manual_seed(0)
    config = {**DEFAULT_CONFIG, **SMALL, "compress_ratios": [0], "num_hidden_layers": 1}
    model = Transformer(ModelConfig(**config))
    probe = HeadProbe(model, 0, head=1)
    ids = torch.randint(10, 500, (2, 14))
    # row 1 is shorter: its padding is never drawn; nor is position 0, which has no predecessor
    batch = collate([(ids[0].tolist(), 6, []), (ids[1].tolist()[:9], 4, [])], pad_id=1)
    model(batch.inputs)
    loss = prev_token_loss(probe, batch, n=1000, gen=torch.Generator().manual_seed(0))
    rows = torch.tensor([0] * 12 + [1] * 7)
    positions = torch.tensor(list(range(1, 13)) + list(range(1, 8)))
    log_w = probe.log_weights(rows, positions)
    expected = -log_w[torch.arange(len(rows)), positions - 1].mean()
    torch.testing.assert_close(loss, expected)
    # n caps the positions scored: a sample of them, drawn from the generator
    few = prev_token_loss(probe, batch, n=3, gen=torch.Generator().manual_seed(0))
    again = prev_token_loss(probe, batch, n=3, gen=torch.Generator().manual_seed(0))
    assert torch.equal(few, again) and not torch.equal(few, loss)
    # descending it moves the head's mass onto the previous token
    optim = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(1)
    first = None
    for _ in range(40):
        model(batch.inputs)
        loss = prev_token_loss(probe, batch, n=1000, gen=gen)
        first = first if first is not None else loss.item()
        optim.zero_grad()
        loss.backward()
        optim.step()
    assert loss.item() < 0.25 * first
    probe.remove()


def test_a_short_run_logs_the_prev_token_loss_and_can_turn_it_off(tmp_path):
    # warmup 1: the first update is a full-size one, so its effect shows
    common = dict(steps=2, batch_tokens=1536, tokenizer_docs=90, log_every=1, warmup=1,
                  config_overrides=SMALL)  # fmt: skip
    train(TrainOptions(out=tmp_path / "on", **common))
    train(TrainOptions(out=tmp_path / "off", prev_token_weight=0.0, **common))
    on = json.loads((tmp_path / "on" / "training.json").read_text())["log"]
    off = json.loads((tmp_path / "off" / "training.json").read_text())["log"]
    assert all(entry["prev_token_loss"] > 0 for entry in on)
    assert all("prev_token_loss" not in entry for entry in off)
    # the extra loss changes the update: same first loss, and the first layer's attention
    # (where the probed head lives) ends up with other weights. (How much the second step's
    # answer loss moves depends on the batch; it can round to the same logged value.)
    assert on[0]["loss"] == off[0]["loss"]
    a = load_file(tmp_path / "on" / "model.safetensors")
    b = load_file(tmp_path / "off" / "model.safetensors")
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("layers.0.attn."))


def test_task_mix_parses_normalises_and_names_bad_input():
    assert parse_task_mix("extract=3, chunk=1") == {"extract": 0.75, "chunk": 0.25}
    assert parse_task_mix("report=1,reduce=0") == {"report": 1.0}  # a zero share drops the task
    assert parse_task_mix("chunk=1,chunk_many=3") == {"chunk": 0.25, "chunk_many": 0.75}
    for text, message in [
        ("extract=1,invoices=1", "unknown task 'invoices'"),
        ("summarize=1", "unknown task 'summarize'"),
        ("extract", "needs a share"),
        ("extract=lots", "needs a share"),
        ("extract=-1", "needs a share"),
        ("extract=inf", "needs a share"),
        ("extract=0", "at least one task"),
        ("", "at least one task"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_task_mix(text)


@pytest.fixture
def generate_calls(monkeypatch) -> list[tuple[str, tuple[str, ...] | None]]:
    """(task, report_layouts) of every `synthetic.generate` call from here on."""
    calls = []
    real = synthetic.generate

    def spy(task, n, seed, templates="train", report_layouts=None):
        calls.append((task, report_layouts))
        return real(task, n, seed, templates, report_layouts)

    monkeypatch.setattr(synthetic, "generate", spy)
    return calls


def test_the_stream_draws_tasks_by_the_mix(generate_calls):
    tok = Tokenizer.from_file("model/tiny")
    stream = example_stream(tok, seed=0, max_len=4096, task_mix={"reduce": 1.0})
    items = [next(stream) for _ in range(5)]
    drawn = [task for task, _ in generate_calls]
    assert drawn == ["reduce"] * 5 and all(pointers for _, _, pointers in items)
    generate_calls.clear()
    stream = example_stream(tok, seed=0, max_len=4096, task_mix={"chunk": 0.5, "report": 0.5})
    for _ in range(40):
        next(stream)
    assert {task for task, _ in generate_calls} == {"chunk", "report"}


def test_a_bad_task_mix_on_the_command_line_is_refused_with_the_fix(capsys):
    with pytest.raises(SystemExit):
        main(["--out", "unused", "--task-mix", "extract=1,invoice=2"])
    assert "unknown task 'invoice'" in capsys.readouterr().err


def test_split_digits_reaches_the_trained_tokenizer():
    number = "1,113.50"
    split = build_tokenizer(512, 0, 30, split_digits=True)
    assert [split.decode([i]) for i in split.encode(number)] == list(number)
    merged = build_tokenizer(512, 0, 30)
    assert merged.decode(merged.encode(number)) == number


def test_a_run_continues_from_a_checkpoint_with_its_tokenizer_and_weights(tmp_path):
    _run(tmp_path / "base")
    opts = dict(steps=2, seed=3, batch_tokens=1536, log_every=1, warmup=1)
    summary = train(TrainOptions(out=tmp_path / "more", init=tmp_path / "base", **opts))
    assert summary["init"]["path"] == str(tmp_path / "base") and summary["init"]["steps"] == 3
    record = json.loads((tmp_path / "more" / "training.json").read_text())
    assert record["steps"] == 2 and len(record["log"]) == 2 and "log" not in record["init"]
    assert record["task_mix"] == TASK_MIX  # the recipe is recorded beside the weights
    assert record["report_layouts"] == [lay.name for lay in layouts_of("train")]
    base_tok = (tmp_path / "base" / "tokenizer.json").read_text()
    assert (tmp_path / "more" / "tokenizer.json").read_text() == base_tok
    base = load_file(tmp_path / "base" / "model.safetensors")
    more = load_file(tmp_path / "more" / "model.safetensors")
    assert base.keys() == more.keys() and any(not torch.equal(base[k], more[k]) for k in base)
    # It starts from the base's weights: with a zero learning rate they come out unchanged.
    train(TrainOptions(out=tmp_path / "still", init=tmp_path / "base", **{**opts, "lr": 0.0}))
    still = load_file(tmp_path / "still" / "model.safetensors")
    assert all(torch.equal(base[k], still[k]) for k in base)
    config = (tmp_path / "base" / "config.json").read_text()
    assert (tmp_path / "more" / "config.json").read_text() == config
    Engine.load(tmp_path / "more")
    with pytest.raises(ValueError, match="leave out"):
        train(TrainOptions(out=tmp_path / "x", init=tmp_path / "base", config_overrides=SMALL))


def test_init_that_is_not_a_checkpoint_is_refused_with_the_fix(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--out", "unused", "--init", str(tmp_path)])
    err = capsys.readouterr().err
    assert f"--init {tmp_path}: not a checkpoint directory" in err and "tiny" in err


def test_report_layouts_reach_the_stream_and_bad_names_are_refused(generate_calls, capsys):
    tok = build_tokenizer(512, 0, 12, report_layouts=("rep_memo",))
    stream = example_stream(tok, 0, 4096, task_mix={"chunk": 1.0}, report_layouts=("rep_memo",))
    next(stream)
    assert generate_calls and all(layouts == ("rep_memo",) for _, layouts in generate_calls)
    with pytest.raises(SystemExit):
        main(["--out", "unused", "--report-layouts", "rep_memo,rep_section_word"])
    assert "['rep_section_word'] are not train layouts" in capsys.readouterr().err
