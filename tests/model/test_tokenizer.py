import json

import pytest
import tokenizers
from tokenizers import models, pre_tokenizers, trainers

from flashbeam.model.text.tokenizer import (
    ASSISTANT,
    BOS,
    DSML,
    EOS,
    LATEST_REMINDER,
    THINK_END,
    THINK_START,
    USER,
    Tokenizer,
    TokenizerError,
    train_tokenizer,
)

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Invoices list a vendor, a date and a total amount due.",
    "Summaries should be short, factual and in plain English.",
    "Größe, café, naïve, déjà vu — 你好，世界！",
] * 5

TEXTS = [
    "",
    "hello world",
    "  leading and trailing spaces  ",
    "tabs\tand\nnew\r\nlines",
    "Größe café naïve déjà vu",
    "中文文本和日本語のテキスト",
    "emoji 🙂🚀 and a family 👨‍👩‍👧 with flags 🇫🇷",
    "math ∑ x² ≤ ∞ and \u00a0nbsp",
]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return train_tokenizer(CORPUS, vocab_size=400)


def test_special_ids_follow_v4_order(tok):
    assert (tok.bos_id, tok.eos_id, tok.user_id, tok.assistant_id) == (0, 1, 2, 3)
    assert (tok.think_start_id, tok.think_end_id) == (4, 5)
    assert tok.latest_reminder_id == tok.token_to_id(LATEST_REMINDER)
    assert tok.dsml_id == tok.token_to_id(DSML)
    for token in (BOS, EOS, USER, ASSISTANT, THINK_START, THINK_END, LATEST_REMINDER, DSML):
        assert tok.encode(token) == [tok.token_to_id(token)]


def test_vocab_size_and_extra_special_tokens():
    tok = train_tokenizer(CORPUS, vocab_size=400, extra_special_tokens=["<extra>"])
    assert 300 < tok.vocab_size <= 400
    assert tok.token_to_id("<extra>") is not None
    assert tok.encode("a<extra>b") == [
        *tok.encode("a"),
        tok.token_to_id("<extra>"),
        *tok.encode("b"),
    ]
    with pytest.raises(ValueError, match="too small"):
        train_tokenizer(CORPUS, vocab_size=100)


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip(tok, text):
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.bos_id not in ids


def test_encode_never_adds_bos_and_keeps_special_tokens(tok):
    prompt = f"{BOS}You are terse.{USER}Hi 🙂{ASSISTANT}{THINK_START}ok{THINK_END}Hello{EOS}"
    ids = tok.encode(prompt)
    assert ids[0] == tok.bos_id and ids.count(tok.bos_id) == 1
    assert ids[-1] == tok.eos_id
    assert tok.decode(ids) == prompt
    assert tok.decode(ids, skip_special_tokens=True) == "You are terse.Hi 🙂okHello"
    assert tok.encode_batch([prompt, "x"]) == [ids, tok.encode("x")]


def test_save_and_load(tok, tmp_path):
    written = tok.save(tmp_path / "ckpt")
    assert written == tmp_path / "ckpt" / "tokenizer.json"
    config = json.loads((tmp_path / "ckpt" / "tokenizer_config.json").read_text())
    assert config["add_bos_token"] is False and config["pad_token"] == EOS
    for loaded in (Tokenizer.from_file(tmp_path / "ckpt"), Tokenizer.from_file(written)):
        assert loaded.vocab_size == tok.vocab_size
        assert loaded.encode(TEXTS[6]) == tok.encode(TEXTS[6])
        assert loaded.think_end_id == tok.think_end_id
    assert tok.save(tmp_path / "other" / "tok.json").is_file()


def test_transformers_reads_the_saved_tokenizer_the_same_way(tok, tmp_path):
    from transformers import PreTrainedTokenizerFast

    tok.save(tmp_path)
    hf = PreTrainedTokenizerFast.from_pretrained(tmp_path)
    prompt = f"{BOS}sys{USER}Größe 🙂{ASSISTANT}{THINK_END}"
    assert hf(prompt)["input_ids"] == tok.encode(prompt)
    assert hf.eos_token_id == tok.eos_id


def test_missing_file(tmp_path):
    with pytest.raises(TokenizerError, match="no such file") as err:
        Tokenizer.from_file(tmp_path)
    assert str(tmp_path / "tokenizer.json") in str(err.value)
    with pytest.raises(TokenizerError, match="no such file"):
        Tokenizer.from_file(tmp_path / "nope.json")


def test_invalid_json(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text('{"version": "1.0", "model": ')
    with pytest.raises(TokenizerError, match="not valid JSON") as err:
        Tokenizer.from_file(path)
    assert str(path) in str(err.value)


def test_json_that_is_not_a_tokenizer(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text('{"hello": 1}')
    with pytest.raises(TokenizerError, match="not a `tokenizers` tokenizer.json"):
        Tokenizer.from_file(path)


def test_missing_special_token_names_file_and_token(tmp_path):
    backend = tokenizers.Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=[BOS, EOS],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(CORPUS, trainer=trainer)
    path = tmp_path / "tokenizer.json"
    backend.save(str(path))
    with pytest.raises(TokenizerError) as err:
        Tokenizer.from_file(tmp_path)
    assert str(path) in str(err.value) and USER in str(err.value)


@pytest.mark.parametrize("text", TEXTS)
def test_incremental_detokenizer_matches_full_decode(tok, text):
    detok = tok.incremental_decoder()
    pieces = [detok.add(i) for i in tok.encode(text)]
    pieces.append(detok.flush())
    assert "".join(pieces) == text == detok.text
    assert all("\ufffd" not in p for p in pieces)


def test_incremental_detokenizer_holds_back_split_characters(tok):
    ids = tok.encode("🚀")  # not in the corpus: one byte-level token per UTF-8 byte
    assert len(ids) == 4
    detok = tok.incremental_decoder()
    assert [detok.add(i) for i in ids] == ["", "", "", "🚀"]

    detok = tok.incremental_decoder()
    assert detok.add(tok.encode("a")[0]) == "a"
    assert detok.add(ids[0]) == ""
    assert detok.flush() == "\ufffd"  # an unfinished character at the very end
    assert detok.flush() == ""


def test_incremental_detokenizer_with_special_tokens(tok):
    ids = tok.encode(f"ok{THINK_END}fine{EOS}")
    kept = tok.incremental_decoder()
    assert "".join(kept.add(i) for i in ids) == f"ok{THINK_END}fine{EOS}"
    skipped = tok.incremental_decoder(skip_special_tokens=True)
    assert "".join(skipped.add(i) for i in ids) == "okfine"


def test_split_digits_gives_every_digit_its_own_token():
    corpus = [*CORPUS, "Total 1,113.50 USD; 2024-03-05; INV-2024-0042; 55 350,35 SEK"] * 5
    tok = train_tokenizer(corpus, vocab_size=400, split_digits=True)
    written, copied = "Total 1,113.50 USD", "1113.5"

    def digit_tokens(t, text):
        pieces = [t.decode([i]) for i in t.encode(text)]
        return [p for p in pieces if any(c.isdigit() for c in p)]

    assert digit_tokens(tok, written) == ["1", "1", "1", "3", "5", "0"]
    assert digit_tokens(tok, copied) == ["1", "1", "1", "3", "5"]
    for text in [*TEXTS, written, "v2.0 at 10:45, +41 79 123 45 67"]:
        assert tok.decode(tok.encode(text)) == text
