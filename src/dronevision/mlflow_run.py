"""MLflow helpers: the only module that talks to MLflow.

A run never breaks the work it tracks: if the store cannot be reached, or fails later, one warning is logged,
tracking switches off, and the reason is kept in :attr:`MlflowRun.error` for summary.json.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from dronevision.errors import first_line

log = logging.getLogger(__name__)

_MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings into dotted keys; lists become their string form.

    Examples:
        >>> flatten({"train": {"epochs": 1, "lr": {"a": 2}}, "seed": 0})
        {'train.epochs': 1, 'train.lr.a': 2, 'seed': 0}
    """
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def sanitize_metric_name(name: str) -> str:
    """MLflow accepts letters, digits, ``_-. /``; ultralytics writes ``metrics/mAP50(B)``.

    Examples:
        >>> sanitize_metric_name("metrics/mAP50-95(B)")
        'metrics/mAP50-95B'
    """
    return "".join(c for c in name if c.isalnum() or c in "_-. /")


def git_state(path: Path) -> dict[str, str]:
    """Commit and dirty flag of the git checkout holding ``path``; empty outside a checkout."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, check=True)
        status = subprocess.run(["git", "status", "--porcelain"], cwd=path, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {"git_commit": commit.stdout.strip(), "git_dirty": str(bool(status.stdout.strip())).lower()}


def default_artifact_location(tracking_uri: str) -> str | None:
    """Artifacts of a local SQLite store live beside the database, not in whatever folder the run starts from.

    Examples:
        >>> default_artifact_location("sqlite:////tmp/mlruns/mlflow.db")
        'file:///tmp/mlruns/artifacts'
        >>> default_artifact_location("http://127.0.0.1:5000") is None
        True
    """
    if not tracking_uri.startswith("sqlite:///"):
        return None
    db = Path(tracking_uri.removeprefix("sqlite:///"))
    return (db.parent / "artifacts").as_uri()


@contextmanager
def _fail_fast() -> Iterator[None]:
    """While probing a server, do not retry for minutes: one quick try tells whether it is there."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "10"
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class MlflowRun:
    """One MLflow run, driven through ``MlflowClient`` (no global active run to leak into other code)."""

    def __init__(self, tracking_uri: str, experiment: str, run_name: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.run_name = run_name
        self.run_id: str | None = None
        self.error: str | None = None
        self._client: Any = None

    @classmethod
    def attach(cls, tracking_uri: str, run_id: str) -> MlflowRun:
        """An existing run (e.g. the training's) that a later stage adds metrics and artifacts to.

        Never creates a store, an experiment or a run; on failure, warns once and carries on without tracking.
        The run's status is left as it is: call :meth:`end` only on runs you started.
        """
        tracker = cls(tracking_uri, experiment="")
        try:
            from mlflow.tracking import MlflowClient

            if urlparse(tracking_uri).scheme == "sqlite":
                db = Path(tracking_uri.removeprefix("sqlite:///"))
                if not db.is_file():  # MlflowClient would create an empty store there
                    raise FileNotFoundError(f"no MLflow store at {db}")
            with _fail_fast():
                client = MlflowClient(tracking_uri=tracking_uri)
                run = client.get_run(run_id)
                experiment = client.get_experiment(run.info.experiment_id)
        except Exception as e:  # any failure to reach the store or find the run
            tracker._fail("attach", e)
            return tracker
        tracker._client, tracker.run_id, tracker.experiment = client, run_id, experiment.name
        tracker.run_name = run.info.run_name
        log.info("MLflow: adding to run %s in experiment '%s' at %s", run_id, experiment.name, tracking_uri)
        return tracker

    @property
    def active(self) -> bool:
        """Whether calls still reach the store."""
        return self.run_id is not None and self.error is None

    def start(self, tags: Mapping[str, str] | None = None) -> MlflowRun:
        """Create the experiment if needed and open the run; on failure, warn once and carry on without."""
        try:
            from mlflow.tracking import MlflowClient

            if urlparse(self.tracking_uri).scheme == "sqlite":
                Path(self.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            with _fail_fast():
                client = MlflowClient(tracking_uri=self.tracking_uri)
                experiment = client.get_experiment_by_name(self.experiment)
                experiment_id = (
                    experiment.experiment_id
                    if experiment is not None
                    else client.create_experiment(self.experiment, default_artifact_location(self.tracking_uri))
                )
                run = client.create_run(experiment_id, run_name=self.run_name, tags=dict(tags or {}))
        except Exception as e:  # any failure to reach or write the store
            self._fail("start", e)
            return self
        self._client, self.run_id = client, run.info.run_id
        log.info("MLflow run %s in experiment '%s' at %s", self.run_id, self.experiment, self.tracking_uri)
        return self

    def _fail(self, what: str, e: Exception) -> None:
        self.error = f"{what}: {type(e).__name__}: {first_line(e)}"
        log.warning("MLflow tracking at %s failed (%s); continuing without tracking", self.tracking_uri, self.error)

    def _call(self, what: str, fn: str, *args: Any, **kwargs: Any) -> None:
        if not self.active:
            return
        try:
            getattr(self._client, fn)(self.run_id, *args, **kwargs)
        except Exception as e:
            self._fail(what, e)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params in batches of 100 (MLflow's limit per call)."""
        from mlflow.entities import Param

        items = [Param(k, str(v)[:_MAX_PARAM_LENGTH]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self._call("log_params", "log_batch", params=items[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log numeric metrics at a step; names are sanitised for MLflow."""
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(sanitize_metric_name(k), float(v), now, step or 0) for k, v in metrics.items()]
        self._call("log_metrics", "log_batch", metrics=items)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set run tags."""
        from mlflow.entities import RunTag

        self._call("set_tags", "log_batch", tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Log a file, or a folder's contents, if it exists."""
        if not path.exists():
            return
        fn = "log_artifacts" if path.is_dir() else "log_artifact"
        self._call(f"log_artifact {path.name}", fn, str(path), artifact_path)

    def end(self, status: str = "FINISHED") -> None:
        """Close the run with ``FINISHED``, ``FAILED`` or ``KILLED``."""
        self._call("end", "set_terminated", status=status)

    def reopen(self) -> None:
        """Mark an attached run (e.g. a KILLED training being resumed) as running again."""
        self._call("reopen", "update_run", status="RUNNING")

    def register(self, name: str, artifact_path: str, alias: str | None = None) -> dict[str, Any] | None:
        """Register ``artifact_path`` of this run as a new version of model ``name`` and point ``alias`` at it.

        Returns ``{"name", "version", "alias", "source"}``, or None when tracking is off or registration fails
        (one warning, as for every other call).
        """
        if not self.active:
            return None
        from mlflow.exceptions import MlflowException

        try:
            client = self._client
            try:
                client.create_registered_model(name)
            except MlflowException as e:
                if "already exists" not in str(e).lower() and "RESOURCE_ALREADY_EXISTS" not in str(e):
                    raise
            source = f"{client.get_run(self.run_id).info.artifact_uri}/{artifact_path}"
            version = client.create_model_version(name, source, run_id=self.run_id)
            if alias:
                client.set_registered_model_alias(name, alias, version.version)
        except Exception as e:
            self._fail("register", e)
            return None
        log.info("MLflow model registry: %s version %s%s", name, version.version, f" (@{alias})" if alias else "")
        return {"name": name, "version": int(version.version), "alias": alias, "source": source}


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
