"""MLflow's own lineage objects after a training: the dataset input, the logged model, and a registry version that
``mlflow.pyfunc.load_model`` loads (offline, from a SQLite store and from a real ``mlflow server``) and that
predicts what the inference layer predicts."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from dronevision.train import run

from .conftest import BUNDLED, VISDRONE_MINI
from .test_train_e2e import GUARD

pytestmark = pytest.mark.slow

OUTPUT_COLUMNS = ["image_index", "image", "x1", "y1", "x2", "y2", "confidence", "class_id", "class_name"]
# a low threshold, so that the barely trained model gives boxes to compare
SETTINGS = {"runtime": "ort-cpu", "conf": 0.001, "max_det": 20}


def _images() -> list[Path]:
    """Real aerial images of two sizes: the bundled aerial-cars (416x416) and VisDrone (455x256)."""
    return [
        *sorted((BUNDLED / "valid" / "images").glob("*.jpg"))[:2],
        *sorted((VISDRONE_MINI / "images").glob("*"))[:1],
    ]


@pytest.fixture
def tracking_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """Point MLflow's global (fluent) API at a store, as a user loading a registered model would."""
    import mlflow

    def _use(uri: str) -> None:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)

    yield _use
    mlflow.set_tracking_uri(None)  # nothing cached for the next test
    mlflow.set_registry_uri(None)


def _expected(onnx: Path, images: list[Path]) -> pd.DataFrame:
    """What the inference layer predicts for the images, as the model's rows."""
    import cv2

    from dronevision.infer import load_detector

    detector = load_detector(onnx, **SETTINGS)
    rows = []
    for i, (path, det) in enumerate(zip(images, detector.predict([cv2.imread(str(p)) for p in images]))):
        for box, c, s in zip(det.xyxy, det.class_id, det.confidence):
            rows.append([i, str(path), *box.tolist(), float(s), int(c), detector.names[int(c)]])
    return pd.DataFrame(rows, columns=OUTPUT_COLUMNS)


def _check_predictions(frame: pd.DataFrame, onnx: Path, images: list[Path]) -> None:
    assert list(frame.columns) == OUTPUT_COLUMNS
    assert len(frame) > 0 and set(frame["image_index"]) <= set(range(len(images)))
    assert set(frame["class_name"]) == {"vehicle"}
    pd.testing.assert_frame_equal(frame.reset_index(drop=True), _expected(onnx, images), check_dtype=False)


def test_training_logs_the_dataset_input_and_a_registered_model_that_loads_offline(
    compose_train: Callable[..., DictConfig],
    tiny_dataset: Path,
    tmp_path: Path,
    tracking_env: Callable[[str], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mlflow

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # MLflow falls back to ./mlflow.db for what it looks up in the global store
    cfg = compose_train(f"dataset.path={tiny_dataset}", "train.fraction=1.0", "mlflow.registry.name=lineage")
    summary = run(cfg)
    assert sorted(p.name for p in cwd.iterdir()) == [], "nothing written beside the command"
    uri = cfg.mlflow.tracking_uri
    client = MlflowClient(uri)
    got = client.get_run(summary["run_id"])

    # Datasets: the dataset the run trained on, with the manifest's hash as its digest
    (dataset_input,) = got.inputs.dataset_inputs
    dataset = dataset_input.dataset
    assert dataset.name == "tiny" and dataset.source_type == "local"
    assert dataset.digest == summary["dataset"]["sha256"][:36]  # MLflow's longest digest
    assert json.loads(dataset.source)["uri"] == summary["dataset"]["path"]
    assert json.loads(dataset.profile) == {"classes": ["vehicle"], "images": {"train": 8, "val": 4}}
    tags = {t.key: t.value for t in dataset_input.tags}
    assert tags["mlflow.data.context"] == "train" and tags["dataset.sha256"] == summary["dataset"]["sha256"]

    # Logged models: the ONNX export as a python-function model of this run
    model_id = summary["logged_model"]["model_id"]
    assert [o.model_id for o in got.outputs.model_outputs] == [model_id]
    logged = client.get_logged_model(model_id)
    assert logged.source_run_id == got.info.run_id and str(logged.status) == "READY"
    assert summary["logged_model"]["file"] == summary["onnx"]

    # the registry version is that model, and the summary says so
    version = client.get_model_version_by_alias("lineage", "candidate")
    assert version.source == f"models:/{model_id}" and version.run_id == got.info.run_id
    assert summary["registered_model"] == {
        "name": "lineage",
        "version": int(version.version),
        "alias": "candidate",
        "source": version.source,
        "model_id": model_id,
    }
    assert summary["mlflow"] == {
        "tracking_uri": uri,
        "run_id": got.info.run_id,
        "experiment": "dronevision",
        "ok": True,
        "error": None,
        "pending": None,
        "sync": None,
    }

    # the ONNX export names its run, so later stages find it from the file alone
    from dronevision.infer.model import read_metadata_props
    from dronevision.mlflow_run import RunRef, find_training_run

    onnx = Path(summary["onnx"])
    assert RunRef.from_metadata(read_metadata_props(onnx)) == RunRef(uri, got.info.run_id)
    assert find_training_run(onnx).found_in.endswith("metadata")

    # mlflow.pyfunc.load_model of the alias predicts what the inference layer predicts
    tracking_env(uri)
    model = mlflow.pyfunc.load_model("models:/lineage@candidate", model_config=SETTINGS)
    assert model.metadata.metadata["names"] == {0: "vehicle"} and model.metadata.metadata["imgsz"] == 64
    assert model.metadata.metadata["training_run_id"] == got.info.run_id
    images = _images()
    _check_predictions(model.predict(pd.DataFrame({"image": [str(p) for p in images]})), onnx, images)
    assert model.predict(pd.DataFrame({"image": []}, dtype=str)).empty

    # ... and in a fresh process with no network: nothing is resolved or downloaded on loading
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(GUARD)
    net_log = tmp_path / "net.log"
    code = (
        "import json, sys, mlflow, pandas as pd\n"
        "model = mlflow.pyfunc.load_model('models:/lineage@candidate', model_config=json.loads(sys.argv[1]))\n"
        "model.predict(pd.DataFrame({'image': sys.argv[2:]})).to_json(sys.stdout, orient='split')\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": f"{guard}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "NET_GUARD_LOG": str(net_log),
        "MLFLOW_TRACKING_URI": uri,
    }
    cmd = [sys.executable, "-c", code, json.dumps(SETTINGS), *map(str, images)]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert net_log.read_text().splitlines() == ["guard active"], "network was asked for"
    offline = pd.read_json(io.StringIO(result.stdout), orient="split")
    _check_predictions(offline, onnx, images)


def test_the_registered_model_loads_from_a_real_mlflow_server(
    compose_train: Callable[..., DictConfig],
    tiny_dataset: Path,
    mlflow_server: str,
    tracking_env: Callable[[str], None],
) -> None:
    import mlflow

    cfg = compose_train(
        f"dataset.path={tiny_dataset}",
        "train.fraction=1.0",
        f"mlflow.tracking_uri={mlflow_server}",
        "mlflow.experiment=served-lineage",
        "mlflow.registry.name=served",
    )
    summary = run(cfg)
    assert summary["mlflow"]["ok"], summary["mlflow"]
    client = MlflowClient(mlflow_server)
    got = client.get_run(summary["run_id"])
    assert got.inputs.dataset_inputs[0].dataset.digest == summary["dataset"]["sha256"][:36]
    version = client.get_model_version_by_alias("served", "candidate")
    model_id = summary["logged_model"]["model_id"]
    assert version.source == f"models:/{model_id}" and got.outputs.model_outputs[0].model_id == model_id

    tracking_env(mlflow_server)
    model = mlflow.pyfunc.load_model("models:/served@candidate", model_config=SETTINGS)
    images = _images()[:1]
    _check_predictions(model.predict(pd.DataFrame({"image": [str(p) for p in images]})), Path(summary["onnx"]), images)


def test_a_model_without_an_onnx_export_is_logged_from_its_checkpoint(
    compose_train: Callable[..., DictConfig], tiny_dataset: Path, tracking_env: Callable[[str], None]
) -> None:
    import mlflow

    cfg = compose_train(f"dataset.path={tiny_dataset}", "train.fraction=1.0", "export.enabled=false")
    summary = run(cfg)
    assert summary["onnx"] is None and summary["logged_model"]["file"] == summary["weights"]
    assert summary["registered_model"]["name"] == "dronevision-detector"
    tracking_env(cfg.mlflow.tracking_uri)
    model = mlflow.pyfunc.load_model(summary["logged_model"]["uri"], model_config={"conf": 0.001, "max_det": 5})
    frame = model.predict(pd.DataFrame({"image": [str(_images()[0])]}))
    assert list(frame.columns) == OUTPUT_COLUMNS and len(frame) <= 5
    assert np.all(frame[["x1", "y1"]].to_numpy() <= frame[["x2", "y2"]].to_numpy())
