"""The training entry point: a short run is reproducible and yields a loadable checkpoint."""

import json

import pytest
import torch
from safetensors.torch import load_file

from flashbeam.model import Engine, Request
from flashbeam.model.tokenizer import Tokenizer
from flashbeam.model.train import TrainOptions, collate, copy_batch, main, train

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
    inputs, targets, prompt = collate([([5, 6, 7, 8], 2), ([9, 10, 11], 2)], pad_id=1)
    assert inputs.tolist() == [[5, 6, 7], [9, 10, 1]]
    # Only the answer tokens (after the 2-token prompt) are answer targets ...
    assert targets.tolist() == [[-100, 7, 8], [-100, 11, -100]]
    # ... and the prompt's own next tokens the prompt targets; padding is in neither.
    assert prompt.tolist() == [[6, -100, -100], [10, -100, -100]]


def test_a_copy_batch_asks_for_the_repeat_of_a_random_span():
    tok = Tokenizer.from_file("model/tiny")
    gen = torch.Generator().manual_seed(3)
    inputs, targets, prompt = copy_batch(gen, tok, batch_tokens=200, span=9)
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
    again = copy_batch(torch.Generator().manual_seed(3), tok, batch_tokens=200, span=9)[0]
    other = copy_batch(torch.Generator().manual_seed(4), tok, batch_tokens=200, span=9)[0]
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
