"""One MLflow run driven through ``MlflowClient``: :class:`MlflowRun`, which never breaks the work it tracks."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from dronevision.errors import first_line
from dronevision.mlflow_run.ref import RunRef

log = logging.getLogger(__name__)

_MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value
_MAX_DIGEST_LENGTH = 36  # MLflow's limit on a dataset digest


# --- runs -------------------------------------------------------------------------------------------------------


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


@contextmanager
def _global_store(tracking_uri: str) -> Iterator[None]:
    """Point MLflow's global tracking URI at ``tracking_uri`` for a while, then back.

    A local registry store looks the logged model behind a ``models:/<id>`` source up in the global store (not in
    the client's), and would otherwise create an empty ``./mlflow.db`` and fail.
    """
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    with _use_tracking_uri(tracking_uri):
        yield


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

        Never creates a store, an experiment or a run; on failure, warns once and carries on without tracking
        (:attr:`run_id` still names the run it was meant for, for summary.json).
        The run's status is left as it is: call :meth:`end` only on runs you started.
        """
        tracker = cls(tracking_uri, experiment="")
        tracker.run_id = run_id
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
        tracker._client, tracker.experiment = client, experiment.name
        tracker.run_name = run.info.run_name
        log.info("MLflow: adding to run %s in experiment '%s' at %s", run_id, experiment.name, tracking_uri)
        return tracker

    @property
    def active(self) -> bool:
        """Whether calls still reach the store."""
        return self.run_id is not None and self.error is None

    @property
    def ref(self) -> RunRef | None:
        """This run's :class:`RunRef`; None when no run was opened."""
        return RunRef(self.tracking_uri, self.run_id) if self.run_id is not None else None

    def summary(self, **extra: Any) -> dict[str, Any]:
        """The ``mlflow`` block of a stage's summary.json: where the run is, whether tracking worked, and why not.

        ``extra`` keys (e.g. ``attached_to_model_run``) are kept inside the block. Read it back with
        :meth:`RunRef.from_summary`.
        """
        return {
            "tracking_uri": self.tracking_uri,
            "run_id": self.run_id,
            "experiment": self.experiment or None,
            "ok": self.active,
            "error": self.error,
            **extra,
        }

    @staticmethod
    def untracked(reason: str, **extra: Any) -> dict[str, Any]:
        """The ``mlflow`` block of a stage that logged to no run (e.g. none was found for its model).

        Examples:
            >>> MlflowRun.untracked("no training run found")["ok"]
            False
        """
        return {"tracking_uri": None, "run_id": None, "experiment": None, "ok": False, "error": reason, **extra}

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

    def log_dataset(
        self,
        *,
        name: str,
        source: str,
        digest: str,
        context: str = "train",
        profile: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> None:
        """Record a dataset as an input of this run (the run's 'Datasets' in the MLflow UI).

        Args:
            name: the dataset's name.
            source: where it is (a path or URI).
            digest: its fingerprint; MLflow keeps at most 36 characters, so a longer hash is cut there (put the
                whole one in ``tags``).
            context: what the run did with it (``train``, ``eval``).
            profile: summary numbers shown with it (image and box counts, classes).
            tags: further input tags.
        """
        if not self.active:
            return
        try:
            from mlflow.data.dataset_source_registry import resolve_dataset_source
            from mlflow.data.meta_dataset import MetaDataset
            from mlflow.entities import Dataset, DatasetInput, InputTag
            from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

            with warnings.catch_warnings():  # a local path resolves as both a "" and a "file" source: the same one
                warnings.simplefilter("ignore", UserWarning)
                dataset_source = resolve_dataset_source(source)
            meta = MetaDataset(dataset_source, name=name, digest=digest[:_MAX_DIGEST_LENGTH]).to_dict()
            entity = Dataset(**meta, profile=json.dumps(dict(profile)) if profile else None)
            input_tags = [
                InputTag(MLFLOW_DATASET_CONTEXT, context),
                *(InputTag(k, str(v)) for k, v in (tags or {}).items()),
            ]
        except Exception as e:  # an unknown kind of source
            self._fail("log_dataset", e)
            return
        self._call("log_dataset", "log_inputs", datasets=[DatasetInput(entity, input_tags)])

    def log_detector(
        self,
        model_file: Path,
        *,
        example_images: Sequence[Path],
        metadata: Mapping[str, Any] | None = None,
        name: str = "detector",
    ) -> str | None:
        """Log a detector (.onnx, or .pt) as an MLflow model of this run, with a python-function flavour that runs
        it through :func:`dronevision.infer.load_detector` (see :mod:`dronevision.mlflow_run.pyfunc`).

        Nothing is resolved or downloaded: the model's requirements are the installed versions of what it imports.

        Returns:
            The logged model's id (load it as ``models:/<id>``), or None when tracking is off or logging fails
            (one warning, as for every other call).
        """
        if not self.active:
            return None
        model = None
        try:
            from mlflow.entities import LoggedModelOutput
            from mlflow.models import Model

            from dronevision.mlflow_run.pyfunc import FLAVOR_MODEL_TYPE, save_detector_model

            client = self._client
            experiment_id = client.get_run(self.run_id).info.experiment_id
            model = client.create_logged_model(
                experiment_id, name=name, source_run_id=self.run_id, model_type=FLAVOR_MODEL_TYPE
            )
            mlflow_model = Model(
                artifact_path=model.artifact_location,
                model_uuid=model.model_id,
                run_id=self.run_id,
                model_id=model.model_id,
            )
            with tempfile.TemporaryDirectory(prefix="dronevision-mlflow-model-") as tmp:
                local = Path(tmp) / "model"
                save_detector_model(
                    local, model_file, example_images=example_images, metadata=metadata, mlflow_model=mlflow_model
                )
                client.log_model_artifacts(model.model_id, str(local))
            client.finalize_logged_model(model.model_id, "READY")
            client.log_outputs(self.run_id, [LoggedModelOutput(model.model_id, step=0)])
        except Exception as e:
            if model is not None:
                with suppress(Exception):  # the store failed already: the warning below says why
                    self._client.finalize_logged_model(model.model_id, "FAILED")
            self._fail("log_detector", e)
            return None
        log.info("MLflow: logged model %s (%s) in run %s", model.model_id, model_file.name, self.run_id)
        return str(model.model_id)

    def register(self, name: str, model_id: str, alias: str | None = None) -> dict[str, Any] | None:
        """Register the logged model ``model_id`` of this run as a new version of model ``name``; point ``alias``
        at it.

        Returns ``{"name", "version", "alias", "source", "model_id"}``, or None when tracking is off or registration
        fails (one warning, as for every other call).
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
            source = f"models:/{model_id}"  # the version is the logged model (MLflow's UI links the two)
            with _global_store(self.tracking_uri):
                version = client.create_model_version(name, source, run_id=self.run_id, model_id=model_id)
            if alias:
                client.set_registered_model_alias(name, alias, version.version)
        except Exception as e:
            self._fail("register", e)
            return None
        log.info("MLflow model registry: %s version %s%s", name, version.version, f" (@{alias})" if alias else "")
        return {"name": name, "version": int(version.version), "alias": alias, "source": source, "model_id": model_id}
