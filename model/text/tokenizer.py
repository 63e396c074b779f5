"""Tokenizer: a checkpoint's `tokenizer.json` (via `tokenizers`) with the V4 special-token ids.

Special-token ids are always looked up in the file: V4 moved `<think>`/`</think>` away from the
V3 ids, so nothing here may assume a number. The V4 prompt text carries its own BOS, hence
`encode` never adds special tokens.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"
THINK_START = "<think>"
THINK_END = "</think>"
LATEST_REMINDER = "<｜latest_reminder｜>"
DSML = "｜DSML｜"
PAD = "<｜▁pad▁｜>"
# Quick-instruction task tokens of the official encoder (`"task"` on a message).
TASK_TOKENS = {
    "action": "<｜action｜>",
    "query": "<｜query｜>",
    "authority": "<｜authority｜>",
    "domain": "<｜domain｜>",
    "title": "<｜title｜>",
    "read_url": "<｜read_url｜>",
}

# The order fixes the ids of a trained tokenizer: BOS 0, EOS 1, then the chat-format tokens.
V4_SPECIAL_TOKENS = (
    BOS,
    EOS,
    USER,
    ASSISTANT,
    THINK_START,
    THINK_END,
    LATEST_REMINDER,
    DSML,
    PAD,
    *TASK_TOKENS.values(),
)

_BYTE_ALPHABET = 256
_REPLACEMENT_CHAR = "\ufffd"


class TokenizerError(ValueError):
    """A tokenizer file that cannot serve the V4 chat format."""


class Tokenizer:
    """Byte-level BPE tokenizer plus the V4 special-token ids it defines."""

    def __init__(self, backend: tokenizers.Tokenizer, source: str = "<in memory>"):
        self.backend = backend
        self.source = source
        self.bos_id = _required_id(backend, BOS, source)
        self.eos_id = _required_id(backend, EOS, source)
        self.user_id = _required_id(backend, USER, source)
        self.assistant_id = _required_id(backend, ASSISTANT, source)
        self.think_start_id = _required_id(backend, THINK_START, source)
        self.think_end_id = _required_id(backend, THINK_END, source)
        self.latest_reminder_id: int | None = backend.token_to_id(LATEST_REMINDER)
        self.dsml_id: int | None = backend.token_to_id(DSML)

    @classmethod
    def from_file(cls, path_or_dir: str | Path) -> Tokenizer:
        """Load `tokenizer.json` from a file path or a checkpoint directory."""
        path = Path(path_or_dir)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise TokenizerError(
                f"{path}: no such file; give a checkpoint directory holding tokenizer.json "
                f"or the path of the file itself"
            )
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise TokenizerError(f"{path}: not valid JSON ({e})") from None
        try:
            backend = tokenizers.Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception for schema errors
            raise TokenizerError(f"{path}: not a `tokenizers` tokenizer.json ({e})") from None
        return cls(backend, source=str(path))

    def save(self, path: str | Path) -> Path:
        """Write tokenizer.json (to `path` if it ends in .json, else into directory `path`).

        Into a directory it also writes a tokenizer_config.json so `transformers` loads it the
        way it loads the official one (no BOS/EOS added, pad = EOS).
        """
        path = Path(path)
        if path.suffix == ".json":
            path.parent.mkdir(parents=True, exist_ok=True)
            self.backend.save(str(path))
            return path
        path.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(path / "tokenizer.json"))
        config = {
            "add_bos_token": False,
            "add_eos_token": False,
            "bos_token": BOS,
            "eos_token": EOS,
            "pad_token": EOS,
            "clean_up_tokenization_spaces": False,
            "model_max_length": 1048576,
            "tokenizer_class": "PreTrainedTokenizerFast",
        }
        (path / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
        return path / "tokenizer.json"

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; special-token strings in it map to their ids, no BOS is added."""
        return self.backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        encodings = self.backend.encode_batch(texts, add_special_tokens=False)
        return [e.ids for e in encodings]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self.backend.id_to_token(token_id)

    def incremental_decoder(self, skip_special_tokens: bool = False) -> IncrementalDetokenizer:
        return IncrementalDetokenizer(self, skip_special_tokens=skip_special_tokens)


def _required_id(backend: tokenizers.Tokenizer, token: str, source: str) -> int:
    token_id = backend.token_to_id(token)
    if token_id is None:
        raise TokenizerError(
            f"{source}: special token {token!r} is missing; a DeepSeek-V4 tokenizer.json defines "
            f"it (is this the tokenizer of a V4 checkpoint?)"
        )
    return token_id


class IncrementalDetokenizer:
    """Turns token ids arriving one at a time into text, one completed piece per call.

    A byte-level token may end inside a UTF-8 character; its text then ends in U+FFFD and is
    held back until a later token completes the character. Decoding always re-reads the ids
    from the last emitted boundary, so a piece never depends on how the ids were split.
    """

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = False):
        self._tokenizer = tokenizer
        self._skip = skip_special_tokens
        self._ids: list[int] = []
        self._prefix = 0  # start of the window that is re-decoded for context
        self._read = 0  # ids before this index have been emitted
        self.text = ""  # everything emitted so far

    def add(self, token_id: int) -> str:
        """Append one id; return the text it completes ("" while a character is unfinished)."""
        self._ids.append(token_id)
        done = self._decode(self._prefix, self._read)
        full = self._decode(self._prefix, len(self._ids))
        if len(full) <= len(done) or full.endswith(_REPLACEMENT_CHAR):
            return ""
        return self._advance(full[len(done) :])

    def flush(self) -> str:
        """Emit whatever is held back (an unfinished character decodes as U+FFFD)."""
        if self._read == len(self._ids):
            return ""
        done = self._decode(self._prefix, self._read)
        full = self._decode(self._prefix, len(self._ids))
        return self._advance(full[len(done) :])

    def _advance(self, piece: str) -> str:
        """Take `piece` as decoded: the ids read so far will not change it any more."""
        self._prefix, self._read = self._read, len(self._ids)
        self.text += piece
        return piece

    def _decode(self, start: int, end: int) -> str:
        return self._tokenizer.decode(self._ids[start:end], skip_special_tokens=self._skip)


# Long merged tokens (runs of spaces or dashes in boilerplate) buy little and make grammar
# engines slow or crash on them, so learned tokens stay short.
MAX_TOKEN_CHARS = 16


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    extra_special_tokens: Iterable[str] = (),
    split_digits: bool = False,
) -> Tokenizer:
    """Train a byte-level BPE whose special tokens are the V4 ones (BOS 0, EOS 1, User 2, ...).

    Any text round-trips (all 256 bytes are in the alphabet). The result may hold fewer than
    `vocab_size` tokens when the texts have too few merges to learn. With `split_digits` every
    digit is a token of its own, so a number is the same tokens wherever it is written ("1,113.50"
    and "1113.5" share their digits' tokens, where merged digit groups would differ).
    """
    specials = list(dict.fromkeys([*V4_SPECIAL_TOKENS, *extra_special_tokens]))
    smallest = _BYTE_ALPHABET + len(specials)
    if vocab_size < smallest:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: the byte alphabet and {len(specials)} "
            f"special tokens already take {smallest}"
        )
    backend = tokenizers.Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if split_digits:
        digits = pre_tokenizers.Digits(individual_digits=True)
        backend.pre_tokenizer = pre_tokenizers.Sequence([digits, byte_level])
    else:
        backend.pre_tokenizer = byte_level
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
        max_token_length=MAX_TOKEN_CHARS,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return Tokenizer(backend, source="<trained>")
