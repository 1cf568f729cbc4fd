"""End to end: real ultralytics training, pycocotools evaluation, ONNX export and MLflow tracking."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from dronevision.train import run

from .conftest import REPO

pytestmark = pytest.mark.slow

SUMMARY_KEYS = {"run_id", "tracking_uri", "experiment", "weights", "onnx", "metrics", "dataset", "seconds"}


def _check_summary(summary: dict, out_dir: Path) -> None:
    assert set(summary) >= SUMMARY_KEYS
    assert json.loads((out_dir / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert set(summary["metrics"]) == {"map50", "map50_95", "precision", "recall"}
    assert all(0.0 <= v <= 1.0 for v in summary["metrics"].values())
    assert {"AP", "AP50"} <= set(summary["coco"])
    assert {"path", "classes", "n_train", "n_val", "sha256", "root"} <= set(summary["dataset"])
    assert Path(summary["weights"]).is_file() and Path(summary["weights"]).is_relative_to(out_dir)
    assert Path(summary["onnx"]).is_file() and Path(summary["onnx"]).is_relative_to(out_dir)
    assert summary["onnx_max_abs_diff"] < 1e-2
    assert summary["seconds"] > 0


def test_train_on_bundled_data_one_run_with_metrics_and_artifacts(
    compose_train: Callable[..., DictConfig], tmp_path: Path
) -> None:
    cfg = compose_train("mlflow.experiment=e2e")
    summary = run(cfg)
    out_dir = tmp_path / "out"
    _check_summary(summary, out_dir)
    assert summary["dataset"]["classes"] == ["vehicle"]
    assert (summary["dataset"]["n_train"], summary["dataset"]["n_val"]) == (321, 31)
    assert summary["mlflow"] == {
        "tracking_uri": summary["tracking_uri"],
        "run_id": summary["run_id"],
        "experiment": "e2e",
        "ok": True,
        "error": None,
        "pending": None,
        "sync": None,
    }

    client = MlflowClient(summary["tracking_uri"])
    experiments = {e.name: e.experiment_id for e in client.search_experiments()}
    assert set(experiments) <= {"Default", "e2e"}, "no stray experiment (e.g. one named after ultralytics' project)"
    runs = client.search_runs(list(experiments.values()))
    assert [r.info.run_id for r in runs] == [summary["run_id"]], "exactly one run per training"
    got = runs[0]
    assert got.info.status == "FINISHED"
    assert got.data.params["train.epochs"] == "1" and got.data.params["model.cfg"] == "yolov8n.yaml"
    assert got.data.params["dataset.sha256"] == summary["dataset"]["sha256"]
    assert len(got.data.tags.get("git_commit", "x" * 40)) == 40
    assert client.get_metric_history(got.info.run_id, "train/box_loss")[0].step == 1  # per-epoch metrics
    assert got.data.metrics["final/coco_AP50"] == summary["coco"]["AP50"]
    artifacts = {f.path for f in client.list_artifacts(got.info.run_id)}
    assert {"config.yaml", "summary.json", "dataset_manifest.tsv", "weights", "plots"} <= artifacts
    weights = {f.path for f in client.list_artifacts(got.info.run_id, "weights")}
    assert weights == {"weights/best.pt", "weights/best.onnx"}

    # the exported model runs in ONNX Runtime with the metadata ultralytics wrote
    import onnxruntime as ort

    session = ort.InferenceSession(summary["onnx"], providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert "vehicle" in meta["names"] and meta["imgsz"] == "[64, 64]"
    out = session.run(None, {session.get_inputs()[0].name: np.zeros((1, 3, 64, 64), np.float32)})[0]
    assert out.shape[:2] == (1, 5)  # 4 box coordinates + 1 class

    # the analysts' notebook runs on this run's summary and store
    _run_notebook(REPO / "notebooks" / "01_inspect_run.ipynb", {"SUMMARY": str(out_dir / "summary.json")})
    assert (out_dir / "notebook_map.png").stat().st_size > 0


def _run_notebook(path: Path, env: dict[str, str]) -> None:
    """Execute a notebook's code cells in order, in one namespace, as Jupyter would."""
    cells = json.loads(path.read_text())["cells"]
    namespace: dict = {}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        for cell in cells:
            if cell["cell_type"] == "code":
                exec(compile("".join(cell["source"]), f"{path.name}", "exec"), namespace)
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def test_train_against_a_real_mlflow_server(
    compose_train: Callable[..., DictConfig], tiny_dataset: Path, mlflow_server: str
) -> None:
    summary = run(
        compose_train(
            f"dataset.path={tiny_dataset}",
            f"mlflow.tracking_uri={mlflow_server}",
            "mlflow.experiment=served",
            "train.fraction=1.0",
        )
    )
    assert summary["mlflow"]["ok"] and summary["tracking_uri"] == mlflow_server
    client = MlflowClient(mlflow_server)
    got = client.get_run(summary["run_id"])
    assert got.info.status == "FINISHED"
    assert client.get_experiment(got.info.experiment_id).name == "served"
    assert "weights/best.onnx" in {f.path for f in client.list_artifacts(summary["run_id"], "weights")}
    assert "final/map50" in got.data.metrics


def test_unreachable_tracking_server_still_trains_and_says_so(
    compose_train: Callable[..., DictConfig], tiny_dataset: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    summary = run(compose_train(f"dataset.path={tiny_dataset}", f"mlflow.tracking_uri={dead}", "train.fraction=1.0"))
    _check_summary(summary, tmp_path / "out")
    assert summary["run_id"] is None
    assert summary["mlflow"]["ok"] is False and "start:" in summary["mlflow"]["error"]
    warnings = [r for r in caplog.records if r.name.startswith("dronevision.mlflow_run") and r.levelname == "WARNING"]
    assert len(warnings) == 1


GUARD = textwrap.dedent('''
    """Installed by test_offline: any connection or name lookup beyond loopback is recorded and refused."""
    import os, socket

    _LOG = os.environ["NET_GUARD_LOG"]
    _connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def _local(host):
        return host is None or str(host) in ("localhost", "::1", "") or str(host).startswith("127.")

    def _record(what):
        with open(_LOG, "a") as f:
            f.write(what + "\\n")

    def connect(self, address, _real=_connect):
        if self.family != socket.AF_UNIX and not _local(address[0]):
            _record(f"connect {address}")
            raise OSError(101, "Network is unreachable (offline test)")
        return _real(self, address)

    def connect_ex(self, address):
        try:
            connect(self, address, _connect_ex)
        except OSError as e:
            return e.errno
        return 0

    def getaddrinfo(host, *args, **kwargs):
        if not _local(host):
            _record(f"getaddrinfo {host}")
            raise socket.gaierror(-3, "Temporary failure in name resolution (offline test)")
        return _getaddrinfo(host, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo
    _record("guard active")
''')


def test_full_smoke_training_with_networking_unavailable(tmp_path: Path) -> None:
    guard_dir = tmp_path / "guard"
    guard_dir.mkdir()
    (guard_dir / "sitecustomize.py").write_text(GUARD)
    log = tmp_path / "net.log"
    env = {
        **os.environ,
        "PYTHONPATH": f"{guard_dir}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "NET_GUARD_LOG": str(log),
        "YOLO_CONFIG_DIR": str(tmp_path / "yolo-config"),
    }
    cmd = [
        sys.executable,
        "-m",
        "dronevision.train",
        "debug=fast",
        f"out_dir={tmp_path / 'out'}",
        f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
        "train.plots=true",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    attempts = log.read_text().splitlines()
    assert attempts[0] == "guard active"
    assert attempts[1:] == [], f"network was asked for: {attempts[1:]}"
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert Path(summary["onnx"]).is_file() and summary["mlflow"]["ok"]
    assert (tmp_path / "yolo-config" / "Ultralytics" / "Arial.ttf").stat().st_size > 0  # DejaVu, not a download
