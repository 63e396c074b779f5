"""Train the embedded default model: `python -m flashbeam.model.train --out model/tiny`.

A small V4-architecture network (mHC, sliding + CSA + HCA attention, hash + routed MoE) and a
byte-level BPE with the V4 special tokens, trained from scratch on the synthetic extraction and
map-reduce summarization data of `model/synthetic.py`. Everything derives from `--seed`: the data
stream, the tokenizer, the initial weights and the batch order, so a run is reproducible.

Besides the next-token losses, one head of the last layer is trained to attend to where each
copied answer token is written in the input (`pointer_loss`; the generators record the sources):
the network is told where a field's value is instead of having to discover it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from . import synthetic
from .chat import encode_messages
from .checkpoint import CONFIG_FILE, load_model, resolve_checkpoint, save_checkpoint
from .config import ModelConfig
from .network import Transformer
from .random_init import init_weights
from .synthetic_reports import layouts_of
from .tokenizer import Tokenizer, train_tokenizer

# The embedded default: every V4 layer kind at laptop scale. The window covers a whole business
# document (copying fields needs it); CSA/HCA layers carry the long-range summary of longer inputs.
DEFAULT_CONFIG = dict(
    vocab_size=4096,
    hidden_size=192,
    num_hidden_layers=4,
    num_attention_heads=2,
    head_dim=128,
    qk_rope_head_dim=16,
    q_lora_rank=96,
    o_groups=2,
    o_lora_rank=96,
    sliding_window=768,
    compress_ratios=[0, 4, 128, 0],
    hc_mult=2,
    hc_sinkhorn_iters=4,  # a 2x2 mix is doubly stochastic to ~1e-6 after 4 rounds
    moe_intermediate_size=256,
    n_routed_experts=4,
    num_experts_per_tok=1,
    num_hash_layers=1,
    index_n_heads=4,
    index_head_dim=32,
    index_topk=32,
    max_position_embeddings=16384,
    original_max_position_embeddings=1024,
)

# Share of each task in the training stream.
TASK_MIX = {"extract": 0.7, "chunk": 0.18, "reduce": 0.12}


@dataclass
class TrainOptions:
    out: Path
    steps: int = 1600
    seed: int = 0
    batch_tokens: int = 6144
    max_len: int = 1024
    lr: float = 3e-3
    warmup: int = 60
    tokenizer_docs: int = 1500
    threads: int | None = None
    log_every: int = 25
    short_docs: float = 0.5  # share of business documents with shortened boilerplate
    prompt_weight: float = 0.2  # weight of the prompt tokens' language-modelling loss
    copy_steps: int = 0  # first steps on repeated random spans (copy curriculum), then the tasks
    copy_span: int = 48
    # Pointer supervision: one head of the last layer is trained to attend to the document
    # tokens each copied answer token comes from (see `pointer_loss`); 0 turns it off.
    pointer_weight: float = 1.0
    pointer_head: int = 0
    # Previous-token supervision: one head of the first layer is trained to attend to the token
    # before each position (the half of an induction circuit that multi-token copies lean on);
    # 0 turns it off. `prev_token_queries` positions per batch are scored.
    prev_token_weight: float = 1.0
    prev_token_head: int = 1
    prev_token_queries: int = 512
    task_mix: dict[str, float] | None = None  # share of each task in the stream; TASK_MIX if None
    # The train report layouts to draw from (`synthetic_reports.LAYOUTS` names); None: all.
    report_layouts: tuple[str, ...] | None = None
    # Every digit its own token (tried, see docs/default-model.md; not the default).
    split_digits: bool = False
    device: str = "cpu"  # e.g. "cuda": the network and batches live there, data stays on the CPU
    config_overrides: dict | None = None  # e.g. smaller dims for a quick test run
    # A checkpoint directory (or "tiny") to continue from: its network, weights and tokenizer
    # instead of fresh ones; the optimizer and learning-rate schedule start anew.
    init: Path | str | None = None


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
            ex = synthetic.extraction_example(item_rng, "train", scale)
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


class HeadProbe:
    """One attention head's weights in the training forward: a hook keeps the layer's attention
    input, and `log_weights` recomputes that head's queries and keys from it (with autograd, so
    a loss on the weights trains the layer and everything before it)."""

    def __init__(self, model: Transformer, layer: int, head: int) -> None:
        self.attn = model.layers[layer].attn
        if self.attn.ratio:
            raise ValueError(f"layer {layer} is compressed; probe a sliding-window layer")
        if not 0 <= head < self.attn.heads:
            raise ValueError(f"head {head} out of range: the layer has {self.attn.heads}")
        self.head = head
        self.x: torch.Tensor | None = None
        self._hook = self.attn.register_forward_pre_hook(self._keep)

    def _keep(self, module, args) -> None:
        self.x = args[0]

    def remove(self) -> None:
        """Detach from the model (and drop the kept input)."""
        self._hook.remove()
        self.x = None

    def log_weights(self, rows: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """Log attention weights [P,S] of the head at the given (row, query position)s of the
        last forward, over that row's key positions (-inf outside the causal window; the sink
        takes the rest of the mass)."""
        x = self.x
        bsz, seq, _ = x.shape
        positions = torch.arange(seq, device=x.device).expand(bsz, seq)
        _, q, kv, _ = self.attn.project_in(x, positions)
        scores = torch.matmul(q[:, :, self.head].float(), kv.float().transpose(1, 2))
        scores = scores[rows, queries] * self.attn.head_dim**-0.5  # [P, S]
        keys = torch.arange(seq, device=x.device)
        visible = (keys <= queries[:, None]) & (keys > queries[:, None] - self.attn.window)
        scores = scores.masked_fill(~visible, float("-inf"))
        sink = self.attn.attn_sink[self.head].float().expand(len(queries), 1)
        return scores - torch.logsumexp(torch.cat((scores, sink), dim=-1), dim=-1, keepdim=True)


def prev_token_loss(probe: HeadProbe, batch: Batch, n: int, gen: torch.Generator) -> torch.Tensor:
    """Mean negative log of the attention mass the probed head puts on the token just before
    each of `n` random non-padding positions (position 0, which has none, is never drawn)."""
    real = batch.targets != -100
    real |= batch.prompt_targets != -100
    real[:, 0] = False
    rows, positions = real.nonzero(as_tuple=True)
    if len(rows) == 0:
        return batch.inputs.new_zeros((), dtype=torch.float32)
    pick = torch.randperm(len(rows), generator=gen)[:n].to(rows.device)
    rows, positions = rows[pick], positions[pick]
    log_w = probe.log_weights(rows, positions)
    return -log_w.gather(1, (positions - 1)[:, None]).mean()


def pointer_loss(probe: HeadProbe, batch: Batch) -> torch.Tensor:
    """Mean negative log of the attention mass the probed head puts on each copied answer
    token's sources: the head learns to look where the value is written. Queries whose sources
    all lie outside the head's window (early parts of a long reduce input) are left out."""
    queries, sources = batch.queries, batch.sources
    window = probe.attn.window
    keys = torch.arange(sources.shape[1], device=sources.device)
    reachable = (sources & (keys > queries[:, 1:] - window)).any(dim=-1)
    if not reachable.any():
        return batch.inputs.new_zeros((), dtype=torch.float32)
    queries, sources = queries[reachable], sources[reachable]
    log_w = probe.log_weights(queries[:, 0], queries[:, 1])
    return -log_w.masked_fill(~sources, float("-inf")).logsumexp(dim=-1).mean()


def batch_loss(
    model: Transformer,
    batch: Batch,
    prompt_weight: float,
    probe: HeadProbe | None = None,
    pointer_weight: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(the loss to optimise, the answer-token cross entropy, the pointer loss). With
    `prompt_weight` > 0 the prompt's tokens are predicted too, at that weight (plain language
    modelling of the documents: a denser signal than the answer tokens alone); with a probe,
    `pointer_weight` times its `pointer_loss` is added."""
    inputs, targets, prompt_targets = batch.inputs, batch.targets, batch.prompt_targets
    answer = targets != -100
    if prompt_weight <= 0 or not (prompt_targets != -100).any():
        loss = F.cross_entropy(model(inputs, answer), targets[answer])
        answer_loss = loss.detach()
    else:
        prompt = prompt_targets != -100
        scored = answer | prompt
        logits = model(inputs, scored)
        labels = torch.where(answer, targets, prompt_targets)[scored]
        per_token = F.cross_entropy(logits, labels, reduction="none")
        is_answer = answer[scored]
        answer_mean = per_token[is_answer].mean()
        loss = answer_mean + prompt_weight * per_token[~is_answer].mean()
        answer_loss = answer_mean.detach()
    pointer = inputs.new_zeros((), dtype=torch.float32)
    if probe is not None and pointer_weight > 0 and len(batch.queries):
        pointer = pointer_loss(probe, batch)
        loss = loss + pointer_weight * pointer
    return loss, answer_loss, pointer.detach()


def lr_at(step: int, opts: TrainOptions) -> float:
    if step < opts.warmup:
        return opts.lr * (step + 1) / opts.warmup
    progress = (step - opts.warmup) / max(1, opts.steps - opts.warmup)
    return opts.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(opts: TrainOptions) -> dict:
    """Train, write the checkpoint to `opts.out`, return the run's summary. Deterministic
    kernels are on for the run (the fused attention backward otherwise sums in thread order).
    On a CUDA device, kernels without a deterministic variant warn instead of failing, so a GPU
    run reproduces its data, initial weights and batch order but not necessarily every bit."""
    device = _training_device(opts.device)
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=device.type != "cpu")
    try:
        return _train(opts, device)
    finally:
        torch.use_deterministic_algorithms(previous)


def _training_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"--device {name!r} is not a torch device name (cpu, cuda, cuda:1)") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name!r}: no CUDA device is available here; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {name!r}: training runs on cpu or cuda")
    return device


def _train(opts: TrainOptions, device: torch.device) -> dict:
    if opts.threads:
        torch.set_num_threads(opts.threads)
    torch.manual_seed(opts.seed)
    started = time.perf_counter()
    if opts.init is not None:
        model, tok, previous = _continue_from(opts)
        model = model.to(device)
    else:
        config = ModelConfig(**{**DEFAULT_CONFIG, **(opts.config_overrides or {})})
        tok = build_tokenizer(
            config.vocab_size,
            opts.seed,
            opts.tokenizer_docs,
            split_digits=opts.split_digits,
            report_layouts=opts.report_layouts,
        )
        model = init_weights(Transformer(config), seed=opts.seed).to(device)
        previous = None
    model.train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "hc_" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "hc_" not in n)]
    optim = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
        lr=opts.lr,
        betas=(0.9, 0.95),
    )
    probe = prev_probe = None
    if opts.pointer_weight:
        probe = HeadProbe(model, len(model.layers) - 1, opts.pointer_head)
    if opts.prev_token_weight:
        prev_probe = HeadProbe(model, 0, opts.prev_token_head)
    prev_gen = torch.Generator().manual_seed(opts.seed + 1)
    examples = example_stream(
        tok, opts.seed, opts.max_len, opts.short_docs, opts.task_mix, opts.report_layouts
    )
    stream = batches(examples, opts.batch_tokens)
    copy_gen = torch.Generator().manual_seed(opts.seed)
    log = []
    for step in range(opts.steps):
        if step < opts.copy_steps:
            batch = copy_batch(copy_gen, tok, opts.batch_tokens, opts.copy_span)
        else:
            batch = collate(next(stream), tok.eos_id)
        batch = batch.to(device)
        for group in optim.param_groups:
            group["lr"] = lr_at(step, opts)
        loss, answer_loss, pointer = batch_loss(
            model, batch, opts.prompt_weight, probe, opts.pointer_weight
        )
        prev = None
        if prev_probe is not None:
            prev = prev_token_loss(prev_probe, batch, opts.prev_token_queries, prev_gen)
            loss = loss + opts.prev_token_weight * prev
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        if step % opts.log_every == 0 or step == opts.steps - 1:
            entry = {
                "step": step,
                "loss": round(answer_loss.item(), 4),
                "pointer_loss": round(pointer.item(), 4),
                **({"prev_token_loss": round(prev.item(), 4)} if prev is not None else {}),
                "elapsed_s": round(time.perf_counter() - started, 1),
            }
            log.append(entry)
            print(json.dumps(entry), flush=True)
    for kept in (probe, prev_probe):
        if kept is not None:
            kept.remove()
    model.eval().cpu()
    opts.out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, opts.out, dtype=torch.bfloat16)
    tok.save(opts.out)
    summary = {
        "steps": opts.steps,
        "seed": opts.seed,
        "final_loss": log[-1]["loss"],
        "train_s": round(time.perf_counter() - started, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
        "device": str(device),
        "task_mix": opts.task_mix or TASK_MIX,
        "report_layouts": list(opts.report_layouts or [lay.name for lay in layouts_of("train")]),
    }
    if previous is not None:
        summary["init"] = previous
    (opts.out / "training.json").write_text(json.dumps({**summary, "log": log}, indent=1) + "\n")
    return summary


def init_directory(
    init: Path | str, split_digits: bool = False, config_overrides: dict | None = None
) -> Path:
    """The checkpoint directory `--init` names, or a ValueError saying what to give instead.
    A continued run keeps the checkpoint's network and tokenizer, so options that would shape
    new ones are refused."""
    if config_overrides or split_digits:
        raise ValueError(
            "--init continues with the checkpoint's own network and tokenizer: leave out "
            "config overrides and --split-digits"
        )
    directory = resolve_checkpoint(init)
    if not (directory / CONFIG_FILE).is_file():
        raise ValueError(
            f"--init {init}: not a checkpoint directory (no {CONFIG_FILE}); give the --out "
            "of an earlier run, or tiny for the embedded model"
        )
    return directory


def _continue_from(opts: TrainOptions) -> tuple[Transformer, Tokenizer, dict]:
    """The network, weights and tokenizer of `opts.init`, and what its `training.json` says
    about the run that wrote it (without the loss curve)."""
    directory = init_directory(opts.init, opts.split_digits, opts.config_overrides)
    model = load_model(directory, dtype=torch.float32)
    tok = Tokenizer.from_file(directory)
    record = directory / "training.json"
    previous = {"path": str(opts.init)}
    if record.is_file():
        previous.update({k: v for k, v in json.loads(record.read_text()).items() if k != "log"})
    return model, tok, previous


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flashbeam.model.train", description=__doc__)
    p.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    p.add_argument("--steps", type=int, default=TrainOptions.steps)
    p.add_argument("--seed", type=int, default=TrainOptions.seed)
    p.add_argument("--batch-tokens", type=int, default=TrainOptions.batch_tokens)
    p.add_argument("--lr", type=float, default=TrainOptions.lr)
    p.add_argument("--warmup", type=int, default=TrainOptions.warmup)
    p.add_argument(
        "--init",
        default=None,
        help="continue from this checkpoint (an earlier --out, or tiny): its network, weights "
        "and tokenizer; the optimizer and schedule start anew",
    )
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--prompt-weight", type=float, default=TrainOptions.prompt_weight)
    p.add_argument("--max-len", type=int, default=TrainOptions.max_len)
    p.add_argument(
        "--copy-steps",
        type=int,
        default=TrainOptions.copy_steps,
        help="first steps on repeated random spans (copy curriculum); 0 to skip",
    )
    p.add_argument("--short-docs", type=float, default=TrainOptions.short_docs)
    p.add_argument(
        "--pointer-weight",
        type=float,
        default=TrainOptions.pointer_weight,
        help="weight of the pointer loss on the last layer's head 0; 0 to turn it off",
    )
    p.add_argument(
        "--prev-token-weight",
        type=float,
        default=TrainOptions.prev_token_weight,
        help="weight of the previous-token loss on the first layer's head 1; 0 to turn it off",
    )
    p.add_argument(
        "--task-mix",
        type=str,
        default=None,
        help="share of each task, e.g. extract=0.7,chunk=0.18,reduce=0.12 (default: "
        + ",".join(f"{k}={v}" for k, v in TASK_MIX.items())
        + ")",
    )
    p.add_argument(
        "--report-layouts",
        default=None,
        help="train report layouts to draw from, comma-separated (default: all of "
        + ", ".join(lay.name for lay in layouts_of("train"))
        + ")",
    )
    p.add_argument(
        "--split-digits",
        action="store_true",
        help="make every digit its own token (off by default; see docs/default-model.md)",
    )
    p.add_argument("--log-every", type=int, default=TrainOptions.log_every)
    p.add_argument("--device", default=TrainOptions.device, help="cpu (default) or cuda[:N]")
    a = p.parse_args(argv)
    try:
        _training_device(a.device)
        task_mix = parse_task_mix(a.task_mix) if a.task_mix is not None else None
        if a.init is not None:
            init_directory(a.init, a.split_digits)
        report_layouts = None
        if a.report_layouts is not None:
            report_layouts = tuple(n.strip() for n in a.report_layouts.split(",") if n.strip())
            layouts_of("train", report_layouts)
    except ValueError as e:
        p.error(str(e))
    summary = train(
        TrainOptions(
            out=a.out,
            steps=a.steps,
            seed=a.seed,
            batch_tokens=a.batch_tokens,
            lr=a.lr,
            warmup=a.warmup,
            init=a.init,
            threads=a.threads,
            prompt_weight=a.prompt_weight,
            max_len=a.max_len,
            copy_steps=a.copy_steps,
            short_docs=a.short_docs,
            pointer_weight=a.pointer_weight,
            prev_token_weight=a.prev_token_weight,
            task_mix=task_mix,
            report_layouts=report_layouts,
            split_digits=a.split_digits,
            log_every=a.log_every,
            device=a.device,
        )
    )
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
