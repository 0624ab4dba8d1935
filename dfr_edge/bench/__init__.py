"""dfr-bench as a library: a latency/throughput matrix over artefacts x backends x batch sizes.

    from dfr_edge.bench import Plan, build_targets, environment, make_frames, measure, report
    from dfr_edge.runtime.camera.engine_choice import parse_backend

    plan = Plan(batches=(1, 4))
    targets = build_targets(["bundle/"], [parse_backend("onnxruntime")], [None])
    data = report(targets, measure(targets, plan, make_frames(4, 480, 640)), plan, environment())
"""

from dfr_edge.bench.environment import environment
from dfr_edge.bench.measure import Plan, make_frames, measure
from dfr_edge.bench.results import SCHEMA, report, write_outputs
from dfr_edge.bench.targets import build_targets

__all__ = ["SCHEMA", "Plan", "build_targets", "environment", "make_frames", "measure", "report", "write_outputs"]
