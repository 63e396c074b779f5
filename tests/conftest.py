"""Test-wide setup.

- Without a GPU, Triton kernels run in the interpreter against their references;
  TRITON_INTERPRET must be set before any kernel module is imported, hence here.
- `tests/support/` goes on sys.path (only that folder, never the repository root): it holds the
  entry points that spawned helper processes of multi-rank tests import by name.
"""

import os
import sys
from pathlib import Path

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

sys.path.insert(0, str(Path(__file__).parent / "support"))
