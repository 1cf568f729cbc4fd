"""What a run could not send to MLflow, kept in order in the stage's out_dir and replayed later as the same run.

Every call :class:`~dronevision.mlflow_run.MlflowRun` makes is one JSON record (an *op*): ``start``, ``log_batch``,
``log_artifact``, ``log_dataset``, ``log_detector``, ``register``, ``update_run`` and ``end``. :func:`apply` carries
one out, live or later; once the store fails, the run's remaining ops are appended to
``<out_dir>/mlflow_pending/ops.jsonl`` instead, and :func:`sync` replays them
(``python -m dronevision.mlflow_run sync out_dir=<dir>``), recording how far it got so that a second sync sends
nothing twice.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dronevision.errors import first_line

log = logging.getLogger(__name__)

PENDING_DIR = "mlflow_pending"
OPS_FILE = "ops.jsonl"
STATE_FILE = "state.json"
DEFAULT_TIMEOUT_S = 5.0  # per HTTP request to a tracking server
DEFAULT_RETRIES = 1  # per request: a dead server costs a stage about timeout_s x (retries + 1), once
_PATH_KEYS = ("path", "model_file")
_ENV = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR")


def now_ms() -> int:
    """MLflow's timestamps: milliseconds since the epoch."""
    return int(time.time() * 1000)


@contextmanager
def http_limits(timeout_s: float = DEFAULT_TIMEOUT_S, retries: int = DEFAULT_RETRIES) -> Iterator[None]:
    """Bound every HTTP request MLflow makes meanwhile (its defaults retry for minutes) and keep urllib3's retry
    warnings out of the log: the caller says what failed, in one line."""
    saved = {k: os.environ.get(k) for k in _ENV}
    os.environ.update(dict(zip(_ENV, (str(int(retries)), str(max(1, round(timeout_s))), "1"), strict=True)))
    pool_log = logging.getLogger("urllib3.connectionpool")
    level = pool_log.level
    pool_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        pool_log.setLevel(level)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# --- the ops ----------------------------------------------------------------------------------------------------


def apply(client: Any, tracking_uri: str, run_id: str | None, op: Mapping[str, Any], base: Path | None = None) -> Any:
    """Carry out one op on the store ``client`` talks to, for run ``run_id``.

    Args:
        client: an ``MlflowClient``.
        tracking_uri: the store's URI (the registry resolves ``models:/`` sources through it).
        run_id: the run the op belongs to (None only for ``start``).
        op: the record.
        base: the folder relative paths in ``op`` are read from (the spool's out_dir); None: paths are absolute.

    Returns:
        ``start``: the new run's id; ``log_detector``: the logged model's id; ``register``: the registry entry
        (name, version, alias, source, model_id); else None.
    """
    from mlflow.entities import Metric, Param, RunTag

    kind = op["op"]

    def path(name: str) -> Path:
        return Path(name) if base is None else base / name

    if kind == "start":
        return _start(client, tracking_uri, op)
    if kind == "log_batch":
        client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), int(ts), int(step)) for k, v, ts, step in op.get("metrics", [])],
            params=[Param(k, str(v)) for k, v in op.get("params", [])],
            tags=[RunTag(k, str(v)) for k, v in op.get("tags", [])],
        )
    elif kind == "log_artifact":
        source = path(op["path"])
        if source.is_dir():
            client.log_artifacts(run_id, str(source), op.get("artifact_path"))
        else:
            client.log_artifact(run_id, str(source), op.get("artifact_path"))
    elif kind == "log_dataset":
        client.log_inputs(run_id, datasets=[_dataset_input(op)])
    elif kind == "log_detector":
        return _log_detector(client, run_id, op, path)
    elif kind == "register":
        return _register(client, tracking_uri, run_id, op)
    elif kind == "update_run":
        client.update_run(run_id, status=op["status"])
    elif kind == "end":
        client.set_terminated(run_id, status=op["status"], end_time=op.get("time_ms"))
    else:
        raise ValueError(f"unknown op '{kind}'")
    return None


def _start(client: Any, tracking_uri: str, op: Mapping[str, Any]) -> str:
    from dronevision.mlflow_run.run import default_artifact_location

    experiment = client.get_experiment_by_name(op["experiment"])
    experiment_id = (
        experiment.experiment_id
        if experiment is not None
        else client.create_experiment(op["experiment"], default_artifact_location(tracking_uri))
    )
    run = client.create_run(
        experiment_id, start_time=op.get("time_ms"), tags=dict(op.get("tags") or {}), run_name=op.get("run_name")
    )
    return str(run.info.run_id)


def _dataset_input(op: Mapping[str, Any]) -> Any:
    import warnings

    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    with warnings.catch_warnings():  # a local path resolves as both a "" and a "file" source: the same one
        warnings.simplefilter("ignore", UserWarning)
        dataset_source = resolve_dataset_source(op["source"])
    meta = MetaDataset(dataset_source, name=op["name"], digest=op["digest"]).to_dict()
    entity = Dataset(**meta, profile=json.dumps(op["profile"]) if op.get("profile") else None)
    tags = [InputTag(MLFLOW_DATASET_CONTEXT, op["context"]), *(InputTag(k, str(v)) for k, v in op["tags"].items())]
    return DatasetInput(entity, tags)


def _log_detector(client: Any, run_id: str, op: Mapping[str, Any], path: Any) -> str:
    import tempfile
    from contextlib import suppress

    from mlflow.entities import LoggedModelOutput
    from mlflow.models import Model

    from dronevision.mlflow_run.pyfunc import FLAVOR_MODEL_TYPE, save_detector_model

    experiment_id = client.get_run(run_id).info.experiment_id
    model = client.create_logged_model(
        experiment_id, name=op["name"], source_run_id=run_id, model_type=FLAVOR_MODEL_TYPE
    )
    try:
        mlflow_model = Model(
            artifact_path=model.artifact_location, model_uuid=model.model_id, run_id=run_id, model_id=model.model_id
        )
        with tempfile.TemporaryDirectory(prefix="dronevision-mlflow-model-") as tmp:
            local = Path(tmp) / "model"
            save_detector_model(
                local,
                path(op["model_file"]),
                example_images=[path(p) for p in op["example_images"]],
                metadata=_json_keys_back(op.get("metadata")),
                mlflow_model=mlflow_model,
            )
            client.log_model_artifacts(model.model_id, str(local))
        client.finalize_logged_model(model.model_id, "READY")
        client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
    except Exception:
        with suppress(Exception):  # the store failed already: the caller says why
            client.finalize_logged_model(model.model_id, "FAILED")
        raise
    return str(model.model_id)


def _json_keys_back(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """Class names as the model gives them (``{0: "car"}``): a spooled op went through JSON, which made keys strings.

    Examples:
        >>> _json_keys_back({"names": {"0": "car"}, "imgsz": 64})
        {'names': {0: 'car'}, 'imgsz': 64}
    """
    out = dict(metadata or {})
    if isinstance(out.get("names"), Mapping):
        out["names"] = {int(k) if str(k).isdigit() else k: v for k, v in out["names"].items()}
    return out


def _register(client: Any, tracking_uri: str, run_id: str, op: Mapping[str, Any]) -> dict[str, Any]:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    name, model_id, alias = op["name"], op["model_id"], op.get("alias")
    try:
        client.create_registered_model(name)
    except MlflowException as e:
        if "already exists" not in str(e).lower() and "RESOURCE_ALREADY_EXISTS" not in str(e):
            raise
    source = f"models:/{model_id}"  # the version is the logged model (MLflow's UI links the two)
    # A local registry store looks the logged model behind a models:/ source up in the global store (not the
    # client's), and would otherwise create an empty ./mlflow.db and fail.
    with _use_tracking_uri(tracking_uri):
        version = client.create_model_version(name, source, run_id=run_id, model_id=model_id)
    if alias:
        client.set_registered_model_alias(name, alias, version.version)
    return {"name": name, "version": int(version.version), "alias": alias, "source": source, "model_id": model_id}


# --- the spool --------------------------------------------------------------------------------------------------


class Spool:
    """The ops a run could not send, appended in order to ``<out_dir>/mlflow_pending/ops.jsonl``.

    Paths in a kept op are made relative to ``out_dir`` (so the folder can move before it is synced); a file outside
    ``out_dir`` is copied into ``mlflow_pending/files/`` first, so a temporary file is not lost.
    """

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self.dir = self.out_dir / PENDING_DIR
        self.ops_file = self.dir / OPS_FILE
        self.state_file = self.dir / STATE_FILE

    def __len__(self) -> int:
        return len(self.read()) if self.ops_file.is_file() else 0

    def append(self, op: Mapping[str, Any]) -> None:
        """Keep one op: one line, flushed to disk before the call returns."""
        self.dir.mkdir(parents=True, exist_ok=True)
        record = dict(op)
        for key in _PATH_KEYS:
            if key in record:
                record[key] = self._keep(Path(record[key]))
        if "example_images" in record:
            record["example_images"] = [self._keep(Path(p)) for p in record["example_images"]]
        with self.ops_file.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _keep(self, path: Path) -> str:
        path = path.resolve()
        if path.is_relative_to(self.out_dir.resolve()):
            return str(path.relative_to(self.out_dir.resolve()))
        files = self.dir / "files"
        copy = files / str(len(list(files.iterdir())) if files.is_dir() else 0) / path.name
        copy.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if path.is_dir() else shutil.copy2)(path, copy)
        return str(copy.relative_to(self.out_dir))

    def read(self) -> list[dict[str, Any]]:
        """The kept ops, in order; a last line torn by a crash is left out with a warning."""
        lines = self.ops_file.read_text(encoding="utf-8").splitlines()
        ops = []
        for number, line in enumerate(lines, 1):
            try:
                ops.append(json.loads(line))
            except json.JSONDecodeError:
                if number < len(lines):
                    from dronevision.errors import DroneVisionError

                    raise DroneVisionError(f"{self.ops_file}:{number}: not a JSON record") from None
                log.warning("%s:%d: torn last record (the process died writing it); left out", self.ops_file, number)
        return ops

    def unsent(self) -> int:
        """How many kept ops no sync has sent yet."""
        return len(self) - int(self.state()["done"]) if self.ops_file.is_file() else 0

    def state(self) -> dict[str, Any]:
        """How far :func:`sync` got: ``done`` ops, the ``run_id`` and the last logged ``model_id``."""
        if self.state_file.is_file():
            return json.loads(self.state_file.read_text())
        return {"done": 0, "run_id": None, "model_id": None}

    def save_state(self, state: Mapping[str, Any]) -> None:
        tmp = self.state_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(dict(state), indent=1))
        tmp.replace(self.state_file)


def failure_reason(e: BaseException) -> str:
    """What went wrong with a call, short: MLflow's HTTP errors carry urllib3's whole retry story in one line.

    Examples:
        >>> failure_reason(OSError("API request to http://h/api failed with exception HTTPConnectionPool(host=h): "
        ...     "Max retries (Caused by ReadTimeoutError('HTTPConnectionPool: Read timed out. (read timeout=5)'))"))
        'OSError: no answer from http://h/api: ReadTimeoutError (read timeout=5)'
        >>> failure_reason(ValueError("bad"))
        'ValueError: bad'
    """
    text = first_line(e, limit=None)
    cause = re.search(r"Caused by (\w+)\(", text)
    if cause is None:
        return f"{type(e).__name__}: {first_line(e)}"
    url = re.search(r"API request to (\S+)", text)
    detail = re.search(r"\[Errno \d+\] [^'\")]+|read timeout=[\d.]+|too many \d+ error responses", text)
    return f"{type(e).__name__}: no answer from {url.group(1) if url else 'the server'}: {cause.group(1)}" + (
        f" ({detail.group(0)})" if detail else ""
    )


def limits(mlflow_cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """``timeout_s`` and ``retries`` from a stage's ``mlflow`` config (defaults where it has none).

    Examples:
        >>> limits({"timeout_s": 2}), limits(None)["retries"]
        ({'timeout_s': 2.0, 'retries': 1}, 1)
    """
    c = dict(mlflow_cfg or {})
    timeout_s, retries = c.get("timeout_s"), c.get("retries")
    return {
        "timeout_s": float(DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s),
        "retries": int(DEFAULT_RETRIES if retries is None else retries),
    }


def sync_command(out_dir: Path) -> str:
    """The command that sends what a run kept in ``out_dir``."""
    return f"python -m dronevision.mlflow_run sync out_dir={out_dir}"
