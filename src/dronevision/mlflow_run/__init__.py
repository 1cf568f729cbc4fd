"""MLflow helpers: the only module that talks to MLflow.

A run never breaks the work it tracks: if the store cannot be reached, or fails later, one warning is logged,
tracking switches off, and the reason is kept in :attr:`MlflowRun.error` for summary.json, whose ``mlflow`` block
:meth:`MlflowRun.summary` writes the same way for every stage.

A model knows the training run it came from: :func:`find_training_run` reads it from the model's metadata
(``mlflow_run_id`` and ``mlflow_tracking_uri``, which the ONNX exports and OpenVINO IRs carry: see
:meth:`RunRef.metadata`), else from the training folder the model sits in.
"""

from dronevision.mlflow_run.ref import RUN_FILE, SUMMARY_FILE, RunRef, find_training_run, names_path
from dronevision.mlflow_run.run import MlflowRun, default_artifact_location, flatten, git_state, sanitize_metric_name
from dronevision.mlflow_run.store import fetch_artifact, find_runs

__all__ = [
    "RUN_FILE",
    "SUMMARY_FILE",
    "MlflowRun",
    "RunRef",
    "default_artifact_location",
    "fetch_artifact",
    "find_runs",
    "find_training_run",
    "flatten",
    "git_state",
    "names_path",
    "sanitize_metric_name",
]
