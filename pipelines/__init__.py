"""Beam pipelines: documents in, validated Parquet out, requests grouped by shared prompt prefix.

Runner-agnostic steps (readers, sharding, prompts, grouping, validate, reduce, writers) with thin
Beam transforms over them (`transforms`), a ModelHandler over the Engine (`handler`), counters
(`metrics`) and `run_pipeline` to build and run a whole job (`run`) on any Beam runner, or on a
dask.distributed cluster with `--runner=dask` (`dask_runner`, imported only then).
"""

from .config import (
    ChunkingConfig,
    EngineConfig,
    GroupingConfig,
    InputConfig,
    OutputConfig,
    PipelineConfig,
    ReduceConfig,
    TaskConfig,
)
from .handler import EngineModelHandler, PromptGroupHandler, engine_for
from .metrics import PipelineMetrics, add_listener, read_metrics, remove_listener
from .readers import InputError, match_input
from .run import RunReport, build_pipeline, check_config, check_runner, run_pipeline
from .transforms import (
    BuildPrompts,
    GroupByPrefix,
    ReadDocuments,
    ReduceParts,
    RunEngine,
    ShardDocuments,
    WriteErrors,
    WriteResults,
)

__all__ = [
    "BuildPrompts",
    "ChunkingConfig",
    "EngineConfig",
    "EngineModelHandler",
    "GroupByPrefix",
    "GroupingConfig",
    "InputConfig",
    "InputError",
    "OutputConfig",
    "PipelineConfig",
    "PipelineMetrics",
    "PromptGroupHandler",
    "ReadDocuments",
    "ReduceConfig",
    "ReduceParts",
    "RunEngine",
    "RunReport",
    "ShardDocuments",
    "TaskConfig",
    "WriteErrors",
    "WriteResults",
    "add_listener",
    "build_pipeline",
    "check_config",
    "check_runner",
    "engine_for",
    "match_input",
    "read_metrics",
    "remove_listener",
    "run_pipeline",
]
