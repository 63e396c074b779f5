"""The DeepSeek-V4 network, checkpoints, tokenizer + chat format, and the Engine serving it."""

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
