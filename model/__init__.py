"""The DeepSeek-V4 network, checkpoints, tokenizer + chat format, and the Engine serving it."""

from .cache import SequenceState
from .checkpoint import CheckpointError, load_model, save_checkpoint
from .config import ModelConfig, tiny_config
from .engine import Engine, EngineError, EngineFull, EngineProgress
from .network import Transformer
from .request import Request, Result, Usage
from .tokenizer import Tokenizer

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
