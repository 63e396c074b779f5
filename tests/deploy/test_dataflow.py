"""The Dataflow deployment, checked offline: the GPU command of docs/runners.md translates into a
Dataflow job (Beam's DataflowRunner with --dry_run: nothing submitted, no network), and the
worker image's Dockerfile installs what pyproject.toml and requirements.lock say."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.dataflow.internal import apiclient
from packaging.requirements import Requirement

from flashbeam.cli import _split_beam_args, build_parser
from flashbeam.jobs.run import plan_job
from flashbeam.jobs.spec import load_job
from flashbeam.pipelines import build_pipeline

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "runners.md"
DOCKERFILE = REPO / "deploy" / "dataflow" / "Dockerfile"
PLACEHOLDERS = {"PROJECT": "flashbeam-test", "BUCKET": "flashbeam-bucket",
                "REGION": "us-central1", "REPO": "images"}  # fmt: skip


def _documented_command() -> list[str]:
    """The `flashbeam run` command of the Dataflow section, placeholders filled in."""
    blocks = re.findall(r"```bash\n(.*?)```", DOCS.read_text(), flags=re.S)
    [block] = [b for b in blocks if "--runner=DataflowRunner" in b]
    text = block.replace("\\\n", " ")
    for name, value in PLACEHOLDERS.items():
        text = re.sub(rf"\b{name}\b", value, text)
    words = shlex.split(text)
    assert words[:2] == ["flashbeam", "run"]
    return words[1:]


def test_the_documented_gpu_command_translates_for_dataflow():
    argv, beam_args = _split_beam_args(_documented_command())
    args = build_parser().parse_args(argv)
    assert args.skip_model_check  # the checkpoint exists only in the container
    plan = plan_job(load_job(REPO / args.job, args.set), args.date, beam_args)
    assert plan.config.engine.device == "cuda" and plan.input_path.startswith("gs://")
    options = PipelineOptions([*plan.beam_args, "--dry_run=True"])
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, plan.config)
    job = pipeline.run().job

    image = "us-central1-docker.pkg.dev/flashbeam-test/images/flashbeam:0.1.0"
    environments = job.proto_pipeline.components.environments.values()
    assert {e.urn for e in environments} == {"beam:env:docker:v1"}
    steps = {t.unique_name for t in job.proto_pipeline.components.transforms.values()}
    assert {"Run engine/Generate and validate/BeamML_RunInference", "Write errors"} <= steps
    staged = "gs://flashbeam-bucket/staging/pipeline.pb"
    environment = apiclient.Environment(
        [], job.options, apiclient._FNAPI_ENVIRONMENT_MAJOR_VERSION, staged, job.proto_pipeline
    ).proto
    assert {"use_runner_v2", "no_use_multiple_sdk_containers"} <= set(environment.experiments)
    assert list(environment.service_options) == [
        "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"
    ]
    [pool] = environment.worker_pools
    assert pool.machine_type == "g2-standard-8"
    assert [c.container_image for c in pool.sdk_harness_container_images] == [image]


def _dockerfile_args() -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", DOCKERFILE.read_text(), flags=re.M))


def _locked() -> dict[str, str]:
    lines = (REPO / "requirements.lock").read_text().splitlines()
    return dict(line.split("==", 1) for line in lines if "==" in line and not line.startswith("#"))


def test_the_dockerfile_installs_the_locked_versions_of_pyproject_dependencies():
    tomllib = pytest.importorskip("tomllib")  # the locked Python (3.11) has it
    args, locked = _dockerfile_args(), _locked()
    text = DOCKERFILE.read_text()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    required = {Requirement(r).name: Requirement(r) for r in pyproject["dependencies"]}
    # The pinned pieces: the locked versions, within pyproject's bounds.
    assert args["BEAM_VERSION"] == locked["apache-beam"]
    assert args["TORCH_VERSION"] == locked["torch"]
    assert required["apache-beam"].specifier.contains(args["BEAM_VERSION"])
    assert required["torch"].specifier.contains(args["TORCH_VERSION"])
    python = re.search(r"^# Python (\d+\.\d+)\.", (REPO / "requirements.lock").read_text(), re.M)
    assert args["PYTHON_VERSION"] == python.group(1)
    assert "apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION}" in text
    # The rest: this package itself with its gcp extra, under the lock.
    assert "gcp" in pyproject["optional-dependencies"]
    assert 'pip install -c /src/flashbeam/requirements.lock "/src/flashbeam[gcp]"' in text
    assert text.rstrip().endswith('ENTRYPOINT ["/opt/apache/beam/boot"]')
    assert args["CUDA_IMAGE"].startswith("nvidia/cuda:")
