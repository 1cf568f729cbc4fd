"""Reading recorded runs: artifacts and runs of an existing store, a missing one being a one-line error."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from dronevision.mlflow_run.run import _fail_fast

log = logging.getLogger(__name__)


def _existing_store(tracking_uri: str) -> Any:
    """A client of a store that exists (MlflowClient would create an empty SQLite store where there is none)."""
    from mlflow.tracking import MlflowClient

    from dronevision.errors import DroneVisionError

    if urlparse(tracking_uri).scheme == "sqlite" and not Path(tracking_uri.removeprefix("sqlite:///")).is_file():
        raise DroneVisionError(f"no MLflow store at {tracking_uri}")
    return MlflowClient(tracking_uri=tracking_uri)


def _get_run(client: Any, tracking_uri: str, run_id: str) -> Any:
    from dronevision.errors import DroneVisionError

    try:
        return client.get_run(str(run_id))
    except Exception:
        raise DroneVisionError(f"run {run_id} does not exist in the MLflow store {tracking_uri}") from None


def fetch_artifact(tracking_uri: str, run_id: str, artifact_path: str, dst: Path) -> Path:
    """Download one artifact of a recorded run; a missing store, run or artifact is a one-line error.

    Raises:
        DroneVisionError: the store, the run or the artifact does not exist.
    """
    from dronevision.errors import DroneVisionError

    with _fail_fast():
        client = _existing_store(tracking_uri)
        _get_run(client, tracking_uri, run_id)
        try:
            dst.mkdir(parents=True, exist_ok=True)
            return Path(client.download_artifacts(run_id, artifact_path, str(dst)))
        except Exception:
            raise DroneVisionError(f"run {run_id} has no artifact {artifact_path}") from None


def find_runs(tracking_uri: str, *, run_ids: list[str] | None = None, experiment: str | None = None) -> list[Any]:
    """Recorded runs by id, or every finished run of an experiment (newest first); a missing one is a one-line error.

    Raises:
        DroneVisionError: the store, a run or the experiment does not exist.
    """
    from dronevision.errors import DroneVisionError

    with _fail_fast():
        client = _existing_store(tracking_uri)
        if run_ids:
            return [_get_run(client, tracking_uri, run_id) for run_id in run_ids]
        found = client.get_experiment_by_name(str(experiment))
        if found is None:
            raise DroneVisionError(f"experiment '{experiment}' does not exist in the MLflow store {tracking_uri}")
        return client.search_runs(
            [found.experiment_id], "attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"]
        )
