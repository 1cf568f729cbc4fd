"""Which MLflow training run a model came from: :class:`RunRef` and :func:`find_training_run`; which dataset it was
trained on, as the training's records say: :func:`find_training_dataset`.

The run is read from the model's metadata (``mlflow_run_id`` and ``mlflow_tracking_uri``, which the ONNX exports
and OpenVINO IRs carry: see :meth:`RunRef.metadata`), else from the training folder the model sits in.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dronevision.errors import first_line

log = logging.getLogger(__name__)

RUN_FILE = "mlflow_run.json"  # which MLflow run a training's out_dir belongs to (train writes it first)
SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.yaml"  # a training's resolved config (train writes it before training starts)
SEARCH_DEPTH = 4  # folders searched for RUN_FILE or SUMMARY_FILE: the model's own and 3 above


# --- which run a model came from (pure) ------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRef:
    """Where an MLflow run is: its store and its id. ``found_in`` says where the reference was read (not compared).

    Examples:
        >>> ref = RunRef("sqlite:///m.db", "abc")
        >>> ref.metadata()
        {'mlflow_run_id': 'abc', 'mlflow_tracking_uri': 'sqlite:///m.db'}
        >>> RunRef.from_metadata(ref.metadata()) == ref
        True
    """

    tracking_uri: str
    run_id: str
    found_in: str = field(default="", compare=False)

    def metadata(self) -> dict[str, str]:
        """The keys an exported model carries to name its training run (ONNX metadata_props, IR metadata.yaml)."""
        return {"mlflow_run_id": self.run_id, "mlflow_tracking_uri": self.tracking_uri}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any], found_in: str = "") -> RunRef | None:
        """The run a model's metadata names (the keys :meth:`metadata` writes), if it names both parts.

        Examples:
            >>> RunRef.from_metadata({"mlflow_run_id": "abc", "mlflow_tracking_uri": "sqlite:///x.db"})
            RunRef(tracking_uri='sqlite:///x.db', run_id='abc', found_in='')
            >>> RunRef.from_metadata({"names": "{0: 'car'}"}), RunRef.from_metadata({"mlflow_run_id": "abc"})
            (None, None)
        """
        run_id, uri = metadata.get("mlflow_run_id"), metadata.get("mlflow_tracking_uri")
        return cls(str(uri), str(run_id), found_in) if run_id and uri else None

    @classmethod
    def from_record(cls, record: Any, found_in: str = "") -> RunRef | None:
        """The run of a training's ``mlflow_run.json`` or summary.json: top-level ``run_id`` and ``tracking_uri``.

        Examples:
            >>> RunRef.from_record({"run_id": "r1", "tracking_uri": "sqlite:///a.db", "experiment": "e"}).run_id
            'r1'
            >>> RunRef.from_record({"run_id": "r1"}), RunRef.from_record([]), RunRef.from_record({"run_id": None})
            (None, None, None)
        """
        if not isinstance(record, Mapping) or not record.get("run_id") or not record.get("tracking_uri"):
            return None
        return cls(str(record["tracking_uri"]), str(record["run_id"]), found_in)

    @classmethod
    def from_summary(cls, summary: Any, found_in: str = "") -> RunRef | None:
        """The run a stage's summary.json names: top-level (a training's) or its ``mlflow`` block (an export's, or an
        evaluation's or a benchmark's that added to the model's run); never an evaluation's own run.

        Examples:
            >>> RunRef.from_summary({"run_id": "r1", "tracking_uri": "sqlite:///a.db"}).run_id
            'r1'
            >>> RunRef.from_summary({"mlflow": {"run_id": "r2", "tracking_uri": "http://h:5000", "ok": True}}).run_id
            'r2'
            >>> own = {"run_id": "r3", "tracking_uri": "http://h:5000", "attached_to_model_run": False}
            >>> RunRef.from_summary({"mlflow": own}), RunRef.from_summary({"mlflow": {"run_id": None, "ok": False}})
            (None, None)
            >>> RunRef.from_summary([])
        """
        if not isinstance(summary, Mapping):
            return None
        block = summary.get("mlflow")
        if isinstance(block, Mapping) and block.get("attached_to_model_run") is False:
            block = None
        return cls.from_record(summary, found_in) or cls.from_record(block, found_in)


def names_path(tree: Any, path: Path) -> bool:
    """Whether some string in a JSON tree is ``path`` (absolute, resolved).

    Examples:
        >>> names_path({"variants": {"fp32": {"path": "/out/m.onnx"}}}, Path("/out/m.onnx"))
        True
        >>> names_path(["/out/other.onnx", 3], Path("/out/m.onnx"))
        False
    """
    if isinstance(tree, Mapping):
        return any(names_path(v, path) for v in tree.values())
    if isinstance(tree, list):
        return any(names_path(v, path) for v in tree)
    return isinstance(tree, str) and tree.endswith(path.name) and Path(tree).expanduser().resolve() == path


# --- which run a model came from (files) -----------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None


def _metadata_ref(model: Path) -> RunRef | None:
    """The run an ONNX file's metadata_props or an OpenVINO IR's metadata.yaml names."""
    if not (model.is_dir() or model.suffix.lower() in (".onnx", ".xml")):
        return None
    from dronevision.infer.model import read_metadata_props

    try:
        props = read_metadata_props(model)
    except Exception as e:  # not a model file: the stage that runs it says so
        log.debug("%s: no metadata read (%s)", model, first_line(e))
        return None
    return RunRef.from_metadata(props, found_in=f"{model} metadata")


def find_training_run(path: Path) -> RunRef | None:
    """The MLflow training run a model came from: a .pt, an .onnx, an OpenVINO IR folder or its model.xml.

    Looked for, in order: the model's metadata (an export's ONNX or IR, see :meth:`RunRef.metadata`); then, in the
    model's folder and up to 3 above it, the nearest training ``mlflow_run.json``, or a summary.json that is a
    training's (top-level ``run_id`` and ``tracking_uri``) or that names the model (an export's, whose ``mlflow``
    block is the training's run). None when nothing names a run.
    """
    path = Path(path).expanduser().resolve()
    found = _metadata_ref(path) or _folder_ref(path)
    if found is not None:
        log.info("%s: MLflow training run %s (from %s)", path.name, found.run_id, found.found_in)
    return found


def _folder_ref(path: Path) -> RunRef | None:
    """The nearest run record or summary.json naming the model's run, in its folder and up to 3 above."""
    named = {path, path.parent} if path.suffix.lower() == ".xml" else {path}  # an IR's summary names its folder
    start = path if path.is_dir() else path.parent
    for folder in [start, *start.parents][:SEARCH_DEPTH]:
        found = RunRef.from_record(_read_json(folder / RUN_FILE), found_in=str(folder / RUN_FILE))
        if found is not None:
            return found
        summary = _read_json(folder / SUMMARY_FILE)
        found = RunRef.from_record(summary, found_in=str(folder / SUMMARY_FILE))
        if found is None and any(names_path(summary, p) for p in named):
            found = RunRef.from_summary(summary, found_in=str(folder / SUMMARY_FILE))
        if found is not None:
            return found
    return None


def _recorded_dataset(folder: Path) -> tuple[str, str] | None:
    """``(dataset path, record)`` from a training's summary.json in ``folder`` (``dataset.path``, beside
    ``epochs_completed``) or its config.yaml (``task_name: train``); None when neither is there."""
    import yaml

    summary = _read_json(folder / SUMMARY_FILE)
    dataset = summary.get("dataset") if isinstance(summary, Mapping) else None
    if isinstance(dataset, Mapping) and dataset.get("path") and "epochs_completed" in summary:
        return str(dataset["path"]), str(folder / SUMMARY_FILE)
    try:
        config = yaml.safe_load((folder / CONFIG_FILE).read_text()) if (folder / CONFIG_FILE).is_file() else None
    except (OSError, yaml.YAMLError):
        return None
    dataset = config.get("dataset") if isinstance(config, Mapping) and config.get("task_name") == "train" else None
    if isinstance(dataset, Mapping) and dataset.get("path"):
        return str(dataset["path"]), str(folder / CONFIG_FILE)
    return None


def _exported_from(folder: Path, named: set[Path]) -> Path | None:
    """The ``.pt`` an export's summary.json in ``folder`` names as its ``weights``, if it names the model too."""
    summary = _read_json(folder / SUMMARY_FILE)
    source = summary.get("weights") if isinstance(summary, Mapping) else None
    if isinstance(source, str) and source.endswith(".pt") and any(names_path(summary, p) for p in named):
        return Path(source).expanduser().resolve()
    return None


def find_training_dataset(path: Path) -> tuple[str, str] | None:
    """The dataset a model was trained on, as the training's records give it, and the record it was read from.

    Looked for where :func:`find_training_run` looks (the model's folder and up to 3 above it), nearest first: a
    training's summary.json (``dataset.path``), else its config.yaml (``dataset.path`` as given). An export's
    summary.json that names the model (an ONNX file or IR) leads to the ``.pt`` it exported, whose records are
    looked up the same way. The path is returned as recorded, whether or not it still exists; None when no record
    names one.
    """
    path = Path(path).expanduser().resolve()
    for _ in range(2):  # the model, then the checkpoint an export of it came from
        named = {path, path.parent} if path.suffix.lower() == ".xml" else {path}
        start = path if path.is_dir() else path.parent
        source = None
        for folder in [start, *start.parents][:SEARCH_DEPTH]:
            found = _recorded_dataset(folder)
            if found is not None:
                return found
            source = _exported_from(folder, named)
            if source is not None:
                break
        if source is None or source == path:
            return None
        path = source
    return None
