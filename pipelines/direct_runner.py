"""`--runner=DirectRunner` (and no `--runner`): Beam's FnApiRunner in this process, as Beam's
own DirectRunner runs a batch job, minus its first attempt at the Prism runner.

Beam's DirectRunner (2.6x and later) first hands a batch pipeline to Prism, a runner written in
Go whose binary it downloads from GitHub (`~/.apache_beam/cache/prism`) at each run that lacks
it. Without network access every run pays the failed download (0.07 to 0.16 s on the 2-core
benchmark machine) and then falls back to the FnApiRunner; with network access the job runs on
Prism instead, a runner flashbeam is not tested on and whose workers do not follow
`--direct_running_mode` and `--direct_num_workers`. flashbeam's pipelines are bounded and use
no streaming-only step, so they go to the FnApiRunner directly, with the pipeline options the
DirectRunner would hand it. `--streaming` still goes through Beam's DirectRunner.
"""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.portability.api import beam_provision_api_pb2
from apache_beam.runners.direct.direct_runner import SwitchingDirectRunner
from apache_beam.runners.portability.fn_api_runner.fn_runner import (
    ExtendedProvisionInfo,
    FnApiRunner,
)
from apache_beam.runners.portability.portable_runner import JobServiceHandle
from apache_beam.runners.runner import PipelineResult

DIRECT_RUNNER = "flashbeam.pipelines.direct_runner.DirectRunner"
DIRECT_RUNNER_NAMES = (
    None,
    "direct",
    "DirectRunner",
    "apache_beam.runners.direct.direct_runner.DirectRunner",
    "apache_beam.runners.DirectRunner",
)


class DirectRunner(SwitchingDirectRunner):
    """Beam's DirectRunner for bounded pipelines: always the FnApiRunner, never Prism."""

    def is_fnapi_compatible(self) -> bool:
        # The FnApiRunner runs it: no round trip through the runner API before the run (Beam
        # skips it for its own DirectRunner by class name).
        return True

    def run_pipeline(self, pipeline, options: PipelineOptions) -> PipelineResult:
        if options.view_as(StandardOptions).streaming:
            return SwitchingDirectRunner().run_pipeline(pipeline, options)
        encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
        provision = ExtendedProvisionInfo(
            beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)
        )
        return FnApiRunner(provision_info=provision).run_pipeline(pipeline, options)
