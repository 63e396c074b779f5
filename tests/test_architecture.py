"""The import contracts of pyproject.toml hold, and they fail on an upward import or a circle.

`make lint` runs `lint-imports`; here it runs on the package as it is, and on copies with one
import added that breaks a contract.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).parent / "lint-imports"
PACKAGE_DIRS = ("model", "kernels", "schemas", "pipelines", "jobs")


def _lint(package_parent: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    cwd = ROOT
    if package_parent is not None:  # the copy comes first on the path, before the installed one
        env["PYTHONPATH"] = str(package_parent)
        cwd = package_parent
    return subprocess.run(
        [str(LINT), "--no-cache", str(ROOT / "pyproject.toml")],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=300,
    )  # fmt: skip


def _copy(tmp_path: Path) -> Path:
    package = tmp_path / "flashbeam"
    package.mkdir()
    for name in ("__init__.py", "__main__.py", "cli.py"):
        shutil.copy(ROOT / name, package / name)
    for folder in PACKAGE_DIRS:
        shutil.copytree(
            ROOT / folder, package / folder, ignore=shutil.ignore_patterns("tiny", "data")
        )
    return package


def test_the_package_keeps_its_contracts():
    done = _lint()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 kept, 0 broken" in done.stdout


@pytest.mark.parametrize(
    "module, line, broken",
    [
        # the network reaching up into the engine
        ("model/network/layers.py", "import flashbeam.model.engine.request", "Layers:"),
        # two modules of one package importing each other
        (
            "model/network/layers.py",
            "import flashbeam.model.network.transformer",
            "No import circles",
        ),
    ],
)
def test_an_upward_import_or_a_circle_breaks_a_contract(tmp_path, module, line, broken):
    package = _copy(tmp_path)
    path = package / module
    path.write_text(path.read_text() + f"\n{line}  # noqa\n")
    done = _lint(tmp_path)
    assert done.returncode != 0
    verdicts = [line for line in done.stdout.splitlines() if line.startswith(broken)]
    assert verdicts and verdicts[0].endswith("BROKEN"), done.stdout
