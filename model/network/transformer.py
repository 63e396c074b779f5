"""The DeepSeek-V4 network: mHC residual streams around attention and MoE blocks.

Parameter names are the official checkpoint tensor names (`layers.3.attn.wq_a.weight`, ...), so a
state dict loads from an official checkpoint with no renaming.

Two ways in:
- `model(input_ids)` -> logits [B,S,V] for whole sequences (fresh state);
- `model.forward_step(input_ids, states)` -> (logits, new states): continue each sequence from its
  `SequenceState` (prefill chunks of any length, or one decode token per sequence).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from flashbeam.model.network.attention import Attention
from flashbeam.model.network.config import ModelConfig
from flashbeam.model.network.decode import DecodeBatch, StepShared, decode_attention
from flashbeam.model.network.layers import RMSNorm, cast, fp32, inverse_rms
from flashbeam.model.network.moe import MoE
from flashbeam.model.network.parallel import SINGLE, TensorParallel
from flashbeam.model.network.state import SequenceState


def hc_weights(
    streams: torch.Tensor,
    fn: torch.Tensor,
    base: torch.Tensor,
    scale: torch.Tensor,
    config: ModelConfig,
    tail: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """mHC mixing weights of streams [B,S,N,D], all in fp32 (the 20-step Sinkhorn drifts in bf16):
    (pre [B,S,N],
    post [B,S,N], comb [B,S,N,N]); with `tail`, post and comb only for the last `tail` positions.

    comb[j, k] mixes input stream j into output stream k; Sinkhorn makes it doubly stochastic
    (columns first, then rows/columns `hc_sinkhorn_iters - 1` more times).
    """
    n, eps = config.hc_mult, config.hc_eps
    flat = fp32(streams.flatten(-2))  # normalised after the projection (same function)
    mix = F.linear(flat, fp32(fn)) * inverse_rms(flat, config.rms_norm_eps)
    base, scale = fp32(base), fp32(scale)
    # pre and post in one sigmoid over a [.., 2, N] view: row 0 pre, row 1 post.
    gates = torch.sigmoid(
        torch.addcmul(
            base[: 2 * n].view(2, n), mix[..., : 2 * n].unflatten(-1, (2, n)), scale[:2, None]
        )
    )
    pre, post = gates[..., 0, :] + eps, gates[..., 1, :] * 2
    if tail is not None:
        post, mix = post[:, -tail:], mix[:, -tail:]
    comb_mix = mix[..., 2 * n :].unflatten(-1, (n, n))
    comb = torch.addcmul(base[2 * n :].view(n, n), comb_mix, scale[2])
    return pre, post, _sinkhorn(comb, config.hc_sinkhorn_iters, eps)


def _sinkhorn(logits: torch.Tensor, iters: int, eps: float) -> torch.Tensor:
    """softmax over k, + eps, then columns, rows and columns normalised (each divided by its sum
    + eps), of logits [.., N, N] in fp32.

    Computed with the token axis last ([N, N, T]): each sum over j or k then adds whole rows of
    T values instead of reducing N-element runs, ~7x faster for a prefill's tokens and as fast
    for a decode step's.
    """
    lead, n = logits.shape[:-2], logits.shape[-1]
    c = logits.reshape(-1, n, n).permute(1, 2, 0).contiguous()  # [j, k, T]
    eps = c.new_tensor(eps)  # a tensor operand: each Python float is wrapped anew, per op
    c = c.softmax(dim=1) + eps
    c = c / c.sum(dim=0, keepdim=True).add_(eps)
    for _ in range(iters - 1):
        c = c / c.sum(dim=1, keepdim=True).add_(eps)
        c = c / c.sum(dim=0, keepdim=True).add_(eps)
    return c.permute(2, 0, 1).reshape(*lead, n, n)


def hc_collapse(streams: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
    return cast((pre.unsqueeze(-1) * fp32(streams)).sum(dim=-2), streams.dtype)


def hc_expand(
    out: torch.Tensor, streams: torch.Tensor, post: torch.Tensor, comb: torch.Tensor
) -> torch.Tensor:
    """X'_k = post_k * F + sum_j comb[j,k] * X_j, in fp32, stored back in the stream dtype."""
    # Sum over input streams j of comb[j, k] * X_j, one multiply-add per input stream (N is tiny),
    # without materialising the [.., N, N, D] products.
    streams32 = fp32(streams)
    mixed = comb[..., 0, :, None] * streams32[..., 0:1, :]
    for j in range(1, streams.shape[-2]):
        mixed = torch.addcmul(mixed, comb[..., j, :, None], streams32[..., j : j + 1, :])
    return cast(torch.addcmul(mixed, post.unsqueeze(-1), fp32(out).unsqueeze(-2)), streams.dtype)


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer: int, tp: TensorParallel = SINGLE) -> None:
        super().__init__()
        self.config = config
        n, d = config.hc_mult, config.hidden_size
        self.attn_norm = RMSNorm(d, config.rms_norm_eps)
        self.ffn_norm = RMSNorm(d, config.rms_norm_eps)
        self.attn = Attention(config, layer, tp)
        self.ffn = MoE(config, layer, tp)
        mix = (2 + n) * n
        for part in ("attn", "ffn"):
            self.register_parameter(f"hc_{part}_fn", nn.Parameter(torch.zeros(mix, n * d)))
            self.register_parameter(f"hc_{part}_base", nn.Parameter(torch.zeros(mix)))
            self.register_parameter(f"hc_{part}_scale", nn.Parameter(torch.ones(3)))

    def forward(self, streams, ids, attend, tail=None):
        """`attend(x)` runs this block's attention on the normalised collapsed streams (with
        whatever state the caller keeps) and returns its output [B,S,D]. With `tail`, attend
        returns only the last `tail` positions' outputs and the block continues with those
        positions alone (streams [B,tail,N,D] out)."""
        cfg = self.config
        pre, post, comb = hc_weights(
            streams, self.hc_attn_fn, self.hc_attn_base, self.hc_attn_scale, cfg, tail
        )
        out = attend(self.attn_norm(hc_collapse(streams, pre)))
        if tail is not None:
            streams, ids = streams[:, -tail:], ids[:, -tail:]
        streams = hc_expand(out, streams, post, comb)
        pre, post, comb = hc_weights(
            streams, self.hc_ffn_fn, self.hc_ffn_base, self.hc_ffn_scale, cfg
        )
        out = self.ffn(self.ffn_norm(hc_collapse(streams, pre)), ids)
        return hc_expand(out, streams, post, comb)


class Transformer(nn.Module):
    """The network, or one rank's share of it (`tp`, see `model.parallel`): then the embedding
    and the lm head hold this rank's rows of the vocabulary, and every rank computes the same
    streams and the same (gathered) logits."""

    def __init__(self, config: ModelConfig, tp: TensorParallel = SINGLE) -> None:
        super().__init__()
        self.config, self.tp = config, tp
        n, d = config.hc_mult, config.hidden_size
        vocab = config.vocab_size // tp.world
        self.vocab_start = tp.rank * vocab
        self.embed = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList(Block(config, i, tp) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(d, config.rms_norm_eps)
        self.head = nn.Linear(d, vocab, bias=False)
        self.hc_head_fn = nn.Parameter(torch.zeros(n, n * d))
        self.hc_head_base = nn.Parameter(torch.zeros(n))
        self.hc_head_scale = nn.Parameter(torch.ones(1))

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.weight.dtype

    def empty_state(self) -> SequenceState:
        layers = tuple(block.attn.empty_state(self.device, self.dtype) for block in self.layers)
        return SequenceState(0, layers)

    def forward(self, input_ids: torch.Tensor, where: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [B,S,V] for whole sequences starting at position 0; with `where` (bool [B,S])
        only the logits of those positions, [N,V] (training scores the target tokens only, and
        the lm head is the widest matmul)."""
        states = [self.empty_state() for _ in range(input_ids.shape[0])]
        streams, _, _ = self._run(input_ids, states)
        return self.logits(streams if where is None else streams[where])

    def forward_step(
        self,
        input_ids: torch.Tensor,
        states: list[SequenceState],
        last_only: bool = False,
        keep_at: list[list[int]] | None = None,
    ):
        """Continue sequence b from states[b] with input_ids[b] ([B,S], same S for all).

        Returns logits ([B,S,V], or [B,1,V] with `last_only`) and the new states; the given states
        are left untouched, so they remain valid snapshots. With `keep_at` (per row, increasing
        token counts in 1..S-1) it returns a third item: per row, the states after that many of
        the chunk's tokens, as a shorter chunk would have left them, so a prefill can snapshot
        inside its chunk instead of being cut there.
        """
        if input_ids.dim() != 2 or input_ids.shape[0] != len(states):
            raise ValueError(
                f"input_ids must be [batch, seq] with one state per row; got shape "
                f"{tuple(input_ids.shape)} and {len(states)} states"
            )
        if keep_at is not None:
            seq = input_ids.shape[1]
            if len(keep_at) != len(states) or any(not 0 < k < seq for ks in keep_at for k in ks):
                raise ValueError(
                    f"keep_at must list, per row, token counts in 1..{seq - 1}; got {keep_at}"
                )
        streams, new_states, kept = self._run(
            input_ids, states, tail=1 if last_only else None, keep_at=keep_at
        )
        if keep_at is None:
            return self.logits(streams), new_states
        return self.logits(streams), new_states, kept

    def _run(
        self,
        input_ids: torch.Tensor,
        states: list[SequenceState],
        tail: int | None = None,
        keep_at: list[list[int]] | None = None,
    ):
        """The residual streams after the last block [B,S,N,D], the new states and (with
        `keep_at`, see `forward_step`) the states inside the chunk, else None.

        With `tail`, only the last `tail` positions' streams are returned ([B,tail,N,D]), and the
        last block computes only what those need: every position still enters its attention
        state, but queries, attention, the MoE and the mHC mixing after the attention run for
        the tail alone (a prompt's prefill wants the next token's logits only).
        """
        starts = [s.length for s in states]
        x = self.embed_tokens(input_ids)
        streams = x.unsqueeze(-2).expand(*x.shape[:-1], self.config.hc_mult, x.shape[-1])
        per_layer = [list(layer_states) for layer_states in zip(*(s.layers for s in states))]
        new_layers, kept_layers = [], []
        last = len(self.layers) - 1
        for i, (block, layer_states) in enumerate(zip(self.layers, per_layer)):
            block_tail = tail if i == last else None

            def attend(x, attn=block.attn, layer_states=layer_states, block_tail=block_tail):
                out, updated, kept = attn(x, starts, layer_states, block_tail, keep_at)
                new_layers.append(updated)
                kept_layers.append(kept)
                return out

            streams = block(streams, input_ids, attend, block_tail)
        seq = input_ids.shape[1]
        new_states = [
            SequenceState(start + seq, tuple(layer[b] for layer in new_layers))
            for b, start in enumerate(starts)
        ]
        kept_states = None
        if keep_at is not None:
            kept_states = [
                [
                    SequenceState(start + k, tuple(layer[b][i] for layer in kept_layers))
                    for i, k in enumerate(keep_at[b])
                ]
                for b, start in enumerate(starts)
            ]
        return streams, new_states, kept_states

    def decode_step(
        self, input_ids: torch.Tensor, batch: DecodeBatch, static: bool = False
    ) -> torch.Tensor:
        """One token per row ([B,1]) for the sequences packed in `batch`, which is updated in
        place; returns next-token logits [B,1,V]. `static`: the same function with nothing read
        back from the device and every state tensor updated in place (`decode` module), as a
        CUDA graph needs; the batch's entry capacity must cover the step."""
        pos = batch.positions
        x = self.embed_tokens(input_ids)
        streams = x.unsqueeze(-2).expand(*x.shape[:-1], self.config.hc_mult, x.shape[-1])
        shared = StepShared(pos, static)
        for block, layer in zip(self.layers, batch.layers):

            def attend(h, attn=block.attn, layer=layer):
                return decode_attention(attn, h, layer, shared)

            streams = block(streams, input_ids, attend)
        if static:
            batch.positions.add_(1)
        else:
            batch.positions = pos + 1
        return self.logits(streams)

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings; with several ranks, each looks up the ids in its rows of the
        vocabulary (zeros elsewhere) and the ranks' rows are summed, exactly."""
        if self.tp.world == 1:
            return self.embed(input_ids)
        local = input_ids - self.vocab_start
        mine = (local >= 0) & (local < self.embed.num_embeddings)
        x = self.embed(local.clamp(0, self.embed.num_embeddings - 1))
        return self.tp.all_reduce_(x * mine.unsqueeze(-1).to(x.dtype))

    def logits(self, streams: torch.Tensor) -> torch.Tensor:
        """Final hc head collapse, norm and the lm head, fp32 weight and input (bf16 logits change
        greedy choices)."""
        flat = fp32(streams.flatten(-2))
        mix = F.linear(flat, fp32(self.hc_head_fn)) * inverse_rms(flat, self.config.rms_norm_eps)
        pre = torch.sigmoid(torch.addcmul(fp32(self.hc_head_base), mix, fp32(self.hc_head_scale)))
        hidden = self.norm(hc_collapse(streams, pre + self.config.hc_eps))
        return self.tp.gather_last(F.linear(fp32(hidden), fp32(self.head.weight)))
