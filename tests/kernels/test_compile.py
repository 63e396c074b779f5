"""Every Triton kernel compiles to cubin for Hopper and Ampere, even on a machine without a GPU
(compile_check.py, in a subprocess: it must import triton without TRITON_INTERPRET)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton.backends.nvidia", reason="triton without its CUDA backend")


@pytest.mark.slow
def test_kernels_compile_for_sm90_and_sm80():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    script = Path(__file__).with_name("compile_check.py")
    proc = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["failed"] == {}
    names = {label.split(":")[1].split("#")[0] for label in report["compiled"]}
    assert len(names) == 6 and any(label.startswith("sm_80:") for label in report["compiled"])
