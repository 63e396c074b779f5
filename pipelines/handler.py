"""Beam ModelHandlers over the Engine, one engine per worker process.

`engine_for(config)` loads the engine the first time a process asks for it and hands the same
`Engine` to every later caller, every thread and every RunInference step of the pipeline
(map and reduce rounds share one copy of the weights and one prefix cache). Calls are not
serialized: each DoFn thread submits its requests to the engine's one continuous batch and
waits for its own results, so a bundle finishes when its outputs are done while the requests
of other bundles keep the batch full.

- `EngineModelHandler`: `Request` in, `Result` out; use it with Beam's own `RunInference`:

      results = requests | RunInference(EngineModelHandler(EngineConfig(model="/ckpt")))

- `PromptGroupHandler`: groups of `PromptRequest`s that share a prefix in, their validated
  `RequestOutcome`s out; one engine call takes whole groups. `RunEngine` uses it. Its requests
  reach the engine through a `ContainedEngine` (`engine_faults`): the task's deadline, and a
  batch that runs out of memory split and retried.

`EngineConfig.share_across_processes` is not offered: on a GPU worker run one SDK process per
GPU instead (see docs/runners.md on Dataflow), so the one process holds the one engine.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import torch
from apache_beam.ml.inference.base import ModelHandler

from flashbeam.model.engine.engine import Engine
from flashbeam.model.engine.request import Request, Result

from .config import EngineConfig, TaskConfig
from .engine_faults import ContainedEngine
from .metrics import NAMESPACE, count
from .records import PromptRequest, RequestOutcome
from .validate import run_prompts

_engines: dict[EngineConfig, Engine] = {}
_engines_lock = threading.Lock()
_loads = 0  # engines this process has loaded: one per config, unless released in between


def engine_for(config: EngineConfig) -> Engine:
    """The process's engine for `config`, loaded on first use."""
    global _loads
    with _engines_lock:
        if config in _engines and _engines[config].failure is not None:
            _engines.pop(config).close()  # it stopped on a fatal error: load it afresh
        if config not in _engines:
            if config.torch_threads:
                torch.set_num_threads(config.torch_threads)
            dtype = getattr(torch, config.dtype, None)
            if not isinstance(dtype, torch.dtype):
                raise ValueError(
                    f"engine.dtype {config.dtype!r} is not a torch dtype; use float32, "
                    "bfloat16 or float16"
                )
            engine = Engine.load(
                config.model,
                device=config.device,
                dtype=dtype,
                kv_quant_sim=config.kv_quant_sim,
                max_batch_tokens=config.max_batch_tokens,
                max_batch_size=config.max_batch_size,
                cache_bytes=config.cache_bytes,
                max_pending=config.max_pending,
                tensor_parallel=config.tensor_parallel,
                devices=list(config.devices) if config.devices is not None else None,
                cuda_graphs=config.cuda_graphs,
            )
            _engines[config] = engine
            _loads += 1
        return _engines[config]


def engine_loads() -> int:
    """How many engines this process has loaded (a worker's count says whether its tasks
    shared one)."""
    return _loads


def release_engines() -> None:
    """Close this process's engines, freeing their models (the next `engine_for` loads afresh,
    with a cold cache)."""
    with _engines_lock:
        engines = list(_engines.values())
        _engines.clear()
    for engine in engines:
        engine.close()


class EngineModelHandler(ModelHandler[Request, Result, Engine]):
    """RunInference over `Request`s: each batch is one `Engine.generate` call."""

    def __init__(self, config: EngineConfig, batch_size: int = 64, **batching: Any):
        batching.setdefault("min_batch_size", batch_size)
        batching.setdefault("max_batch_size", batch_size)
        super().__init__(**batching)
        self.config = config

    def load_model(self) -> Engine:
        return engine_for(self.config)

    def run_inference(
        self,
        batch: Sequence[Request],
        model: Engine,
        inference_args: dict[str, Any] | None = None,
    ) -> list[Result]:
        return model.generate(list(batch))

    def get_num_bytes(self, batch: Sequence[Request]) -> int:
        return sum(_request_bytes(r) for r in batch)

    def get_metrics_namespace(self) -> str:
        return NAMESPACE

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.config.model!r}, device={self.config.device!r})"


class PromptGroupHandler(EngineModelHandler):
    """RunInference over prefix groups (lists of PromptRequest): a batch of groups is one
    validated engine run; the predictions are the groups' outcomes, group by group."""

    def __init__(self, config: EngineConfig, task: TaskConfig, requests_per_call: int = 64):
        super().__init__(config, batch_size=requests_per_call, element_size_fn=len)
        self.task = task

    def run_inference(
        self,
        batch: Sequence[list[PromptRequest]],
        model: Engine,
        inference_args: dict[str, Any] | None = None,
    ) -> list[list[RequestOutcome]]:
        return self.run_groups(batch)

    def run_groups(
        self,
        batch: Sequence[list[PromptRequest]],
        on_outcome: Callable[[RequestOutcome], None] | None = None,
    ) -> list[list[RequestOutcome]]:
        """The groups' outcomes, group by group; `on_outcome` hears each as soon as it is final
        (see `run_prompts`). The process's engine is taken afresh (`engine_for`), so a batch
        after a fatal error runs on a new one."""
        flat = [prompt for group in batch for prompt in group]
        engine = ContainedEngine(self.config, engine_for, self.task.timeout_s)
        outcomes = run_prompts(engine, flat, self.task, self.config.model, on_outcome)
        count("oom_splits", engine.splits)
        grouped, at = [], 0
        for group in batch:
            grouped.append(outcomes[at : at + len(group)])
            at += len(group)
        return grouped

    def get_num_bytes(self, batch: Sequence[list[PromptRequest]]) -> int:
        return sum(_request_bytes(p.request) for group in batch for p in group)


def _request_bytes(request: Request) -> int:
    if request.prompt_token_ids is not None:
        return 4 * len(request.prompt_token_ids)
    return sum(len(str(m.get("content", ""))) for m in request.messages or [])
