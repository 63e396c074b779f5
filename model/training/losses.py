"""What the embedded model is trained on besides the next token: the pointer loss (one head of
the last layer attends to where each copied answer token is written) and the previous-token
loss (one head of the first layer attends to the token before), read through a probe of
those heads' attention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from flashbeam.model.network.transformer import Transformer
from flashbeam.model.training.batches import Batch


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
