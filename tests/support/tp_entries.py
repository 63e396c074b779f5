"""Ranks of a tensor-parallel network for the tests: every rank builds the same random model
from a seed, keeps its shard, and runs what rank 0 broadcasts (importable by name from spawned
helpers: tests/conftest.py puts this folder on sys.path)."""

import torch

from flashbeam.model.checkpoint.loading import load_model
from flashbeam.model.checkpoint.random_init import random_model
from flashbeam.model.engine.ranks import STOP
from flashbeam.model.network.config import tiny_config
from flashbeam.model.network.decode import DecodeBatch
from flashbeam.model.network.parallel import TensorParallel, shard_state_dict
from flashbeam.model.network.transformer import Transformer


def build_shard(preset, overrides, seed, rank, world):
    config = tiny_config(preset, **overrides)
    whole = random_model(config, seed=seed)
    if world == 1:
        return whole
    shard = Transformer(config, TensorParallel(rank, world))
    shard.load_state_dict(shard_state_dict(whole.state_dict(), config, rank, world))
    return shard.eval()


def run(model, op, args):
    """One operation on this rank's model; rank 0 returns its result."""
    with torch.inference_mode():
        if op == "forward":
            return model(args)
        ids, splits, decode = args
        states = [model.empty_state() for _ in range(ids.shape[0])]
        out, pos = [], 0
        for size in splits:
            logits, states = model.forward_step(ids[:, pos : pos + size], states)
            out.append(logits)
            pos += size
        batch = DecodeBatch.build(model, states, extra_tokens=decode.shape[1])
        for i in range(decode.shape[1]):
            out.append(model.decode_step(decode[:, i : i + 1], batch))
        return torch.cat(out, dim=1)


def serve(group, payload):
    preset, overrides, seed = payload
    model = build_shard(preset, overrides, seed, group.rank, group.world)
    while (command := group.receive()) != STOP:
        run(model, *command)


def load_shard(directory, keep_quantized, rank, world):
    return load_model(directory, keep_quantized=keep_quantized, tp=TensorParallel(rank, world))


def serve_checkpoint(group, directory):
    """Both shards of a quantized checkpoint: dequantized (False) and kept packed (True)."""
    models = {keep: load_shard(directory, keep, group.rank, group.world) for keep in (False, True)}
    while (command := group.receive()) != STOP:
        keep, op, args = command
        run(models[keep], op, args)
