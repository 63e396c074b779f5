"""The installed package, not the repository's folders, is what every import finds.

The repository root is the `flashbeam` package, so its folders carry the names of PyPI packages
(`kernels`, `model`, `jobs`): with the root on `sys.path` they would shadow them, as `kernels/`
once did for transformers' kernel hub.
"""

import importlib
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_repository_root_is_not_on_sys_path():
    entries = {Path(p or ".").resolve() for p in sys.path}
    assert ROOT not in entries


@pytest.mark.parametrize("name", ["kernels", "model", "jobs", "schemas", "pipelines"])
def test_no_repository_folder_is_importable_under_its_own_name(name):
    spec = importlib.util.find_spec(name)
    assert spec is None or Path(spec.origin or "").resolve().parent != ROOT / name


def test_transformers_kernel_hub_and_our_kernels_import_together():
    pytest.importorskip("transformers")
    hub = importlib.import_module("transformers.integrations.hub_kernels")
    import flashbeam.kernels as ours

    assert Path(ours.__file__).resolve().parent == ROOT / "kernels"
    assert hub.__name__ == "transformers.integrations.hub_kernels"
