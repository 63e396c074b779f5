"""Train the embedded default model: `python -m flashbeam.model.training.train --out model/tiny`.

A small V4-architecture network (mHC, sliding + CSA + HCA attention, hash + routed MoE) and a
byte-level BPE with the V4 special tokens, trained from scratch on the synthetic extraction and
map-reduce summarization data of `synthetic`. Everything derives from `--seed`: the data
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
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from flashbeam.model.checkpoint.loading import load_model, resolve_checkpoint
from flashbeam.model.checkpoint.random_init import init_weights
from flashbeam.model.checkpoint.reader import CONFIG_FILE
from flashbeam.model.checkpoint.saving import save_checkpoint
from flashbeam.model.network.config import ModelConfig
from flashbeam.model.network.transformer import Transformer
from flashbeam.model.text.tokenizer import Tokenizer
from flashbeam.model.training.batches import (
    TASK_MIX,
    batches,
    build_tokenizer,
    collate,
    copy_batch,
    example_stream,
    parse_task_mix,
)
from flashbeam.model.training.losses import HeadProbe, batch_loss, prev_token_loss
from flashbeam.model.training.reports import layouts_of

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
    # The train report layouts to draw from (`reports.LAYOUTS` names); None: all.
    report_layouts: tuple[str, ...] | None = None
    # Every digit its own token (tried, see docs/default-model.md; not the default).
    split_digits: bool = False
    device: str = "cpu"  # e.g. "cuda": the network and batches live there, data stays on the CPU
    config_overrides: dict | None = None  # e.g. smaller dims for a quick test run
    # A checkpoint directory (or "tiny") to continue from: its network, weights and tokenizer
    # instead of fresh ones; the optimizer and learning-rate schedule start anew.
    init: Path | str | None = None


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
    p = argparse.ArgumentParser(
        prog="python -m flashbeam.model.training.train", description=__doc__
    )
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
