"""The DeepSeek-V4 engine and everything under it, one concern per subpackage.

- `engine`: requests in, results out; the continuous-batching loop, its scheduler, prefix
  cache and runner (on one device, or over the ranks of a tensor-parallel group);
- `training`: the embedded default model's trainer and its synthetic data;
- `checkpoint`: checkpoint directories (layouts, FP8/FP4 formats, loading, saving, fit);
- `network`: the V4-Flash network itself, whole or one rank's share of it;
- `text`: the tokenizer and the V4 chat format;
- `grammar`: JSON Schema to grammar-constrained decoding.

The names most callers need are here.
"""

from flashbeam.model.checkpoint.inventory import CheckpointError
from flashbeam.model.checkpoint.loading import load_model
from flashbeam.model.checkpoint.saving import save_checkpoint
from flashbeam.model.engine.engine import Engine, EngineError, EngineFull, EngineProgress
from flashbeam.model.engine.request import Request, Result, Usage
from flashbeam.model.network.config import ModelConfig, tiny_config
from flashbeam.model.network.state import SequenceState
from flashbeam.model.network.transformer import Transformer
from flashbeam.model.text.tokenizer import Tokenizer

__all__ = [
    "CheckpointError",
    "Engine",
    "EngineError",
    "EngineFull",
    "EngineProgress",
    "ModelConfig",
    "Request",
    "Result",
    "SequenceState",
    "Tokenizer",
    "Transformer",
    "Usage",
    "load_model",
    "save_checkpoint",
    "tiny_config",
]
