"""Benchmark an ONNX detector per runtime and batch, model-only and end to end, and size the fleet for the target.

Run ``python -m dronevision.benchmark model=<model.onnx> out_dir=<dir>`` (or ``dronevision-benchmark``); tests call
:func:`run`. Timing follows ultralytics' ``ProfileModels``: warm-up calls, timed calls until a minimum time has
passed, sigma-clipping, a fixed thread count. The output folder holds ``benchmark.json``, ``report.md``, ``fps.png``
and ``summary.json``; they are also added to the model's MLflow run when it is known.
"""

from dronevision.benchmark.command import main, run
from dronevision.benchmark.core import capacity, check_target, latency_stats, pick_best, sigma_clip
from dronevision.benchmark.measure import (
    cpu_name,
    fixed_threads,
    make_e2e_step,
    make_model_call,
    measure,
    model_tensor,
    random_frames,
    requests_per_call,
    time_calls,
)
from dronevision.benchmark.report import plot_fps, report_markdown

__all__ = [
    "capacity",
    "check_target",
    "cpu_name",
    "fixed_threads",
    "latency_stats",
    "main",
    "make_e2e_step",
    "make_model_call",
    "measure",
    "model_tensor",
    "pick_best",
    "plot_fps",
    "random_frames",
    "report_markdown",
    "requests_per_call",
    "run",
    "sigma_clip",
    "time_calls",
]
