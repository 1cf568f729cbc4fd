"""MLflow helpers: the only module that talks to MLflow.

A run never breaks the work it tracks: every call waits a few seconds at most; if the store cannot be reached, or
fails later, one warning is logged, tracking switches off, the reason is kept in :attr:`MlflowRun.error` for
summary.json (whose ``mlflow`` block :meth:`MlflowRun.summary` writes the same way for every stage), and what could
not be sent is kept in order in the stage's ``out_dir/mlflow_pending/``, for :func:`sync`
(``python -m dronevision.mlflow_run sync out_dir=<dir>``) to send later as the same run.

A model knows the training run it came from: :func:`find_training_run` reads it from the model's metadata
(``mlflow_run_id`` and ``mlflow_tracking_uri``, which the ONNX exports and OpenVINO IRs carry: see
:meth:`RunRef.metadata`), else from the training folder the model sits in.
"""

from dronevision.mlflow_run.ref import RUN_FILE, SUMMARY_FILE, RunRef, find_training_run, names_path
from dronevision.mlflow_run.run import (
    MlflowRun,
    default_artifact_location,
    flatten,
    git_state,
    limits,
    sanitize_metric_name,
    sync_command,
)
from dronevision.mlflow_run.spool import PENDING_DIR, Spool
from dronevision.mlflow_run.store import fetch_artifact, find_runs
from dronevision.mlflow_run.sync import sync

__all__ = [
    "RUN_FILE",
    "SUMMARY_FILE",
    "PENDING_DIR",
    "MlflowRun",
    "Spool",
    "RunRef",
    "default_artifact_location",
    "fetch_artifact",
    "find_runs",
    "find_training_run",
    "flatten",
    "git_state",
    "limits",
    "names_path",
    "sanitize_metric_name",
    "sync",
    "sync_command",
]
