"""One MLflow run driven through ``MlflowClient``: :class:`MlflowRun`, which never breaks the work it tracks."""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from dronevision.errors import first_line
from dronevision.mlflow_run.ref import RunRef
from dronevision.mlflow_run.spool import (
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT_S,
    Spool,
    apply,
    failure_reason,
    http_limits,
    limits,
    now_ms,
    sync_command,
)

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
    with http_limits(10, 0):
        yield


class MlflowRun:
    """One MLflow run, driven through ``MlflowClient`` (no global active run to leak into other code).

    Every call waits at most about ``timeout_s`` x (``retries`` + 1) on the store. The first call that fails logs
    one warning and switches the store off for the rest of the run; with ``out_dir`` given, that call and every later
    one are kept in ``<out_dir>/mlflow_pending/`` (see :mod:`dronevision.mlflow_run.spool`) for
    ``python -m dronevision.mlflow_run sync out_dir=<out_dir>`` to send later, as the same run.
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        run_name: str | None = None,
        *,
        out_dir: Path | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retries: int = DEFAULT_RETRIES,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.run_name = run_name
        self.run_id: str | None = None
        self.error: str | None = None
        self.timeout_s, self.retries = float(timeout_s), int(retries)
        self._client: Any = None
        self._spool = Spool(out_dir) if out_dir is not None else None
        self._kept = 0
        self._kept_ops: set[str] = set()
        self._was_behind = False

    @classmethod
    def from_config(cls, mlflow_cfg: Mapping[str, Any] | None, out_dir: Path | None = None) -> MlflowRun:
        """A run (not started yet) as a stage's ``mlflow`` config group describes it, spooling into ``out_dir``."""
        c = dict(mlflow_cfg or {})
        return cls(
            str(c.get("tracking_uri")),
            str(c.get("experiment") or "dronevision"),
            c.get("run_name"),
            out_dir=out_dir,
            **limits(c),
        )

    @classmethod
    def attach(
        cls,
        tracking_uri: str,
        run_id: str,
        *,
        out_dir: Path | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retries: int = DEFAULT_RETRIES,
    ) -> MlflowRun:
        """An existing run (e.g. the training's) that a later stage adds metrics and artifacts to.

        Never creates a store, an experiment or a run; on failure, warns once and carries on without tracking
        (:attr:`run_id` still names the run it was meant for, for summary.json; with ``out_dir``, what the stage
        logs is kept for :func:`~dronevision.mlflow_run.sync`).
        The run's status is left as it is: call :meth:`end` only on runs you started.
        """
        tracker = cls(tracking_uri, experiment="", out_dir=out_dir, timeout_s=timeout_s, retries=retries)
        tracker.run_id = run_id
        if tracker._behind():
            return tracker
        try:
            from mlflow.tracking import MlflowClient

            if urlparse(tracking_uri).scheme == "sqlite":
                db = Path(tracking_uri.removeprefix("sqlite:///"))
                if not db.is_file():  # MlflowClient would create an empty store there
                    raise FileNotFoundError(f"no MLflow store at {db}")
            with http_limits(tracker.timeout_s, tracker.retries):
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
    def pending(self) -> Path | None:
        """The folder holding what could not be sent, once something is kept there."""
        return self._spool.dir if self._spool is not None and (self._kept or self._was_behind) else None

    @property
    def ref(self) -> RunRef | None:
        """This run's :class:`RunRef`; None when no run was opened."""
        return RunRef(self.tracking_uri, self.run_id) if self.run_id is not None else None

    def summary(self, **extra: Any) -> dict[str, Any]:
        """The ``mlflow`` block of a stage's summary.json: where the run is, whether tracking worked, and why not.

        ``pending`` names the folder of what could not be sent (None when everything was), and ``sync`` the
        command that sends it. ``extra`` keys (e.g. ``attached_to_model_run``) are kept inside the block. Read it
        back with :meth:`RunRef.from_summary`.
        """
        pending = self.pending
        return {
            "tracking_uri": self.tracking_uri,
            "run_id": self.run_id,
            "experiment": self.experiment or None,
            "ok": self.active,
            "error": self.error,
            "pending": str(pending) if pending else None,
            "sync": sync_command(pending.parent) if pending else None,
            **extra,
        }

    @staticmethod
    def untracked(reason: str, **extra: Any) -> dict[str, Any]:
        """The ``mlflow`` block of a stage that logged to no run (e.g. none was found for its model).

        Examples:
            >>> MlflowRun.untracked("no training run found")["ok"]
            False
        """
        return {
            "tracking_uri": None,
            "run_id": None,
            "experiment": None,
            "ok": False,
            "error": reason,
            "pending": None,
            "sync": None,
            **extra,
        }

    def start(self, tags: Mapping[str, str] | None = None) -> MlflowRun:
        """Create the experiment if needed and open the run; on failure, warn once and carry on without."""
        op = {
            "op": "start",
            "experiment": self.experiment,
            "run_name": self.run_name,
            "tags": {k: str(v) for k, v in (tags or {}).items()},
            "time_ms": now_ms(),
        }
        if self._behind():
            self._keep(op)
            return self
        try:
            from mlflow.tracking import MlflowClient

            if urlparse(self.tracking_uri).scheme == "sqlite":
                Path(self.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            with http_limits(self.timeout_s, self.retries):
                client = MlflowClient(tracking_uri=self.tracking_uri)
                run_id = apply(client, self.tracking_uri, None, op)
        except Exception as e:  # any failure to reach or write the store
            self._fail("start", e)
            self._keep(op)
            return self
        self._client, self.run_id = client, run_id
        log.info("MLflow run %s in experiment '%s' at %s", self.run_id, self.experiment, self.tracking_uri)
        return self

    def _behind(self) -> bool:
        """Whether ``out_dir`` still holds ops an earlier run of this folder could not send: everything of this run
        is then kept after them, in order (sending it live would put it before them once synced)."""
        unsent = self._spool.unsent() if self._spool is not None else 0
        if unsent:
            self.error = f"{unsent} earlier MLflow ops of this folder not sent yet"
            self._was_behind = True
            log.warning(
                "%s holds %d MLflow ops not sent yet; this run's tracking is kept after them; send all with: %s",
                self._spool.dir,  # type: ignore[union-attr]
                unsent,
                sync_command(self._spool.out_dir),  # type: ignore[union-attr]
            )
        return bool(unsent)

    def _fail(self, what: str, e: Exception) -> None:
        self.error = f"{what}: {failure_reason(e)}"
        if self._spool is None:
            log.warning("MLflow tracking at %s failed (%s); continuing without tracking", self.tracking_uri, self.error)
        else:
            log.warning(
                "MLflow tracking at %s failed (%s); continuing without it, keeping what is not sent in %s; "
                "send it later with: %s",
                self.tracking_uri,
                self.error,
                self._spool.dir,
                sync_command(self._spool.out_dir),
            )

    def _keep(self, op: Mapping[str, Any]) -> None:
        """Spool an op the store did not take (nothing is kept without an out_dir)."""
        if self._spool is None:
            return
        try:
            if not self._kept:  # which run the ops belong to, before the first of them
                self._spool.append({"op": "run", "tracking_uri": self.tracking_uri, "run_id": self.run_id})
            self._spool.append(op)
            self._kept += 1
            self._kept_ops.add(op["op"])
        except OSError as e:
            log.warning("MLflow: could not keep '%s' in %s: %s", op["op"], self._spool.dir, first_line(e))

    def _send(self, op: Mapping[str, Any]) -> Any:
        """Carry ``op`` out on the store, or keep it when the store failed now or earlier."""
        if self.active:
            try:
                with http_limits(self.timeout_s, self.retries):
                    return apply(self._client, self.tracking_uri, self.run_id, op)
            except Exception as e:
                self._fail(op["op"] if op["op"] != "log_artifact" else f"log_artifact {Path(op['path']).name}", e)
        self._keep(op)
        return None

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params in batches of 100 (MLflow's limit per call)."""
        items = [[k, str(v)[:_MAX_PARAM_LENGTH]] for k, v in params.items()]
        for i in range(0, len(items), 100):
            self._send({"op": "log_batch", "params": items[i : i + 100]})

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log numeric metrics at a step; names are sanitised for MLflow."""
        now = now_ms()
        items = [[sanitize_metric_name(k), float(v), now, step or 0] for k, v in metrics.items()]
        for i in range(0, len(items), 1000):  # MLflow's limit per call
            self._send({"op": "log_batch", "metrics": items[i : i + 1000]})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set run tags."""
        self._send({"op": "log_batch", "tags": [[k, str(v)] for k, v in tags.items()]})

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Log a file, or a folder's contents, if it exists."""
        if path.exists():
            self._send({"op": "log_artifact", "path": str(path), "artifact_path": artifact_path})

    def end(self, status: str = "FINISHED") -> None:
        """Close the run with ``FINISHED``, ``FAILED`` or ``KILLED``."""
        self._send({"op": "end", "status": status, "time_ms": now_ms()})

    def reopen(self) -> None:
        """Mark an attached run (e.g. a KILLED training being resumed) as running again."""
        self._send({"op": "update_run", "status": "RUNNING"})

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
        op = {
            "op": "log_dataset",
            "name": name,
            "source": source,
            "digest": digest[:_MAX_DIGEST_LENGTH],
            "context": context,
            "profile": json.loads(json.dumps(dict(profile), default=str)) if profile else None,
            "tags": {k: str(v) for k, v in (tags or {}).items()},
        }
        self._send(op)

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
            (one warning, as for every other call; the model is then logged by the sync, if kept).
        """
        op = {
            "op": "log_detector",
            "model_file": str(model_file),
            "example_images": [str(p) for p in example_images],
            "metadata": dict(metadata or {}),  # as given live; the spool keeps it as JSON
            "name": name,
        }
        model_id = self._send(op)
        if model_id is not None:
            log.info("MLflow: logged model %s (%s) in run %s", model_id, model_file.name, self.run_id)
        return model_id

    def register(self, name: str, model_id: str | None, alias: str | None = None) -> dict[str, Any] | None:
        """Register the logged model ``model_id`` of this run as a new version of model ``name``; point ``alias``
        at it. ``model_id=None``: the model :meth:`log_detector` kept for the sync, registered by the sync.

        Returns ``{"name", "version", "alias", "source", "model_id"}``, or None when tracking is off or registration
        fails (one warning, as for every other call).
        """
        if model_id is None and "log_detector" not in self._kept_ops:
            return None
        entry = self._send({"op": "register", "name": name, "model_id": model_id, "alias": alias})
        if entry is not None:
            log.info("MLflow model registry: %s version %s%s", name, entry["version"], f" (@{alias})" if alias else "")
        return entry
