"""Training data as the network sees it: a seeded stream of synthetic examples in the task mix,
encoded with the chat format (the loss on answer tokens, the pointer targets of copied
values), packed into batches of about `batch_tokens` tokens.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch

from flashbeam.model.text.chat import encode_messages
from flashbeam.model.text.tokenizer import Tokenizer, train_tokenizer
from flashbeam.model.training import business, synthetic

# The default share of each synthetic task in the training stream.
TASK_MIX = {"extract": 0.7, "chunk": 0.18, "reduce": 0.12}


def build_tokenizer(
    vocab_size: int,
    seed: int,
    docs: int,
    split_digits: bool = False,
    report_layouts: tuple[str, ...] | None = None,
) -> Tokenizer:
    """BPE over documents, instructions and targets of every task, V4 special tokens first;
    with `split_digits` every digit is its own token (see `train_tokenizer`)."""
    texts = []
    for task in TASK_MIX:
        n = docs // len(TASK_MIX)
        for ex in synthetic.generate(task, n, seed=seed + 7, report_layouts=report_layouts):
            texts.append(encode_messages(ex.messages) + ex.target)
    return train_tokenizer(texts, vocab_size=vocab_size, split_digits=split_digits)


def encode_example(tok: Tokenizer, ex) -> tuple[list[int], int, list[tuple[int, list[int]]]]:
    """(token ids of prompt + target + EOS, number of prompt tokens, pointers).

    A pointer (query position, source positions) says which input tokens the answer token after
    the query position copies (from `ex.sources`, which the generators fill): the query is the
    input position that predicts the copied token, the sources the prompt tokens that hold its
    first copied character."""
    prompt_text = encode_messages(ex.messages, thinking=False)
    prompt = tok.backend.encode(prompt_text, add_special_tokens=False)
    target = tok.backend.encode(ex.target, add_special_tokens=False)
    ids = prompt.ids + target.ids + [tok.eos_id]
    n_prompt = len(prompt.ids)
    pointers = []
    if ex.sources:
        doc_at = prompt_text.find(ex.text)
        if doc_at < 0:
            raise ValueError(f"example {ex.id}: the prompt does not contain its document verbatim")
        token_of = [-1] * len(prompt_text)
        for i, (a, b) in enumerate(prompt.offsets):
            token_of[a:b] = [i] * (b - a)
        for j, (a, b) in enumerate(target.offsets):
            copied = next((c for c in range(a, b) if c in ex.sources), None)
            if copied is None:
                continue
            sources = sorted({token_of[doc_at + pos] for pos in ex.sources[copied]} - {-1})
            if sources:
                pointers.append((n_prompt + j - 1, sources))
    return ids, n_prompt, pointers


def parse_task_mix(text: str) -> dict[str, float]:
    """Parse `--task-mix` ("extract=0.7,chunk=0.18,reduce=0.12") into {task: share}, the shares
    normalised to sum 1; a task at 0 is left out."""
    mix: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        task, eq, share = part.partition("=")
        task = task.strip()
        try:
            value = float(share) if eq else float("nan")
        except ValueError:
            value = float("nan")
        if task not in synthetic.TASKS or task == "summarize":
            raise ValueError(
                f"task mix {text!r}: unknown task {task!r}; use extract, extract_ocr, report, "
                "chunk, chunk_many or reduce"
            )
        if not value >= 0 or math.isinf(value):
            raise ValueError(f"task mix {text!r}: {part!r} needs a share >= 0, e.g. {task}=0.5")
        mix[task] = value
    total = sum(mix.values())
    if total <= 0:
        raise ValueError(f"task mix {text!r}: give at least one task a share > 0, e.g. extract=1")
    return {task: share / total for task, share in mix.items() if share > 0}


def example_stream(
    tok: Tokenizer,
    seed: int,
    max_len: int,
    short_docs: float = 0.0,
    task_mix: dict[str, float] | None = None,
    report_layouts: tuple[str, ...] | None = None,
):
    """An endless, seeded stream of encoded examples drawn by `task_mix` (TASK_MIX by default);
    a `short_docs` share of the business documents get less boilerplate (25-90%), so more of
    them fit a batch; reports only in `report_layouts`, when given."""
    rng = random.Random(seed)
    tasks, weights = zip(*(task_mix or TASK_MIX).items())
    counters = dict.fromkeys(tasks, 0)
    while True:
        task = rng.choices(tasks, weights)[0]
        i = counters[task]
        counters[task] += 1
        item_seed = seed * 1_000_003 + i
        if task == "extract" and short_docs > 0 and rng.random() < short_docs:
            scale = rng.uniform(0.25, 0.9)
            item_rng = synthetic.item_rng(item_seed, task, "train", 0)
            ex = business.extraction_example(item_rng, "train", scale)
        else:
            ex = synthetic.generate(task, 1, seed=item_seed, report_layouts=report_layouts)[0]
        item = encode_example(tok, ex)
        if len(item[0]) <= max_len:
            yield item


def batches(stream, batch_tokens: int, pool: int = 64):
    """Length-bucketed batches: sort a pool of examples, cut it into ~batch_tokens pieces."""
    while True:
        items = sorted((next(stream) for _ in range(pool)), key=lambda x: len(x[0]))
        group: list = []
        for item in items:
            longest = max([len(item[0])] + [len(g[0]) for g in group])
            if group and longest * (len(group) + 1) > batch_tokens:
                yield group
                group = []
            group.append(item)
        if group:
            yield group


@dataclass
class Batch:
    """Right-padded inputs [B,S]; answer and prompt targets (next-token ids at the answer, resp.
    prompt, positions, -100 elsewhere and at padding); pointer supervision: query (row, position)
    pairs [P,2] and, per query, the key positions it should attend to, [P,S] bool."""

    inputs: torch.Tensor
    targets: torch.Tensor
    prompt_targets: torch.Tensor
    queries: torch.Tensor
    sources: torch.Tensor

    def to(self, device: torch.device) -> Batch:
        return Batch(*(t.to(device) for t in vars(self).values()))


def collate(group, pad_id: int) -> Batch:
    """One batch from (ids, n_prompt, pointers) items (`encode_example`)."""
    length = max(len(item[0]) for item in group)
    inputs = torch.full((len(group), length - 1), pad_id, dtype=torch.long)
    targets = torch.full((len(group), length - 1), -100, dtype=torch.long)
    prompt_targets = targets.clone()
    queries, sources = [], []
    for row, (ids, n_prompt, pointers) in enumerate(group):
        seq = torch.tensor(ids)
        inputs[row, : len(ids) - 1] = seq[:-1]
        targets[row, n_prompt - 1 : len(ids) - 1] = seq[n_prompt:]
        prompt_targets[row, : n_prompt - 1] = seq[1:n_prompt]
        for query, keys in pointers:
            queries.append((row, query))
            mask = torch.zeros(length - 1, dtype=torch.bool)
            mask[keys] = True
            sources.append(mask)
    queries_t = torch.tensor(queries, dtype=torch.long).view(-1, 2)
    sources_t = torch.stack(sources) if sources else torch.zeros(0, length - 1, dtype=torch.bool)
    return Batch(inputs, targets, prompt_targets, queries_t, sources_t)


def copy_batch(gen: torch.Generator, tok: Tokenizer, batch_tokens: int, span: int) -> Batch:
    """A copy-curriculum batch in `collate`'s layout: rows of BOS + a random span of ordinary
    tokens + the same span again, the repeat as answer targets.

    Every target is a copy, so the network learns to find an earlier occurrence and continue
    from it (an induction circuit) within a few hundred steps; the extraction answers are a small
    share of the tokens. On the embedded model it did not lift field accuracy
    (docs/default-model.md), so `copy_steps` defaults to 0.
    """
    if span < 1:
        raise ValueError(f"copy span must be >= 1 token, got {span}")
    rows = max(1, batch_tokens // (2 * span + 1))
    ordinary = max(tok.backend.get_added_tokens_decoder()) + 1  # special tokens come first
    spans = torch.randint(ordinary, tok.vocab_size, (rows, span), generator=gen)
    bos = torch.full((rows, 1), tok.bos_id, dtype=torch.long)
    seq = torch.cat((bos, spans, spans), dim=1)
    inputs, targets = seq[:, :-1], seq[:, 1:].clone()
    targets[:, :span] = -100
    no_queries = torch.zeros(0, 2, dtype=torch.long)
    no_sources = torch.zeros(0, inputs.shape[1], dtype=torch.bool)
    return Batch(inputs, targets, torch.full_like(targets, -100), no_queries, no_sources)
