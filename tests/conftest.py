"""Shared fixtures: tiny generated data, composed configs, a real MLflow server on loopback."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from dronevision.cli import CONFIG_DIR

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "data" / "samples" / "aerial-cars"
VISDRONE_MINI = REPO / "tests" / "fixtures" / "visdrone-mini"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `gpu` tests, with the reason, where CUDA is not available."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def make_yolo_dataset(root: Path, *, n_train: int = 8, n_val: int = 4, size: int = 64, seed: int = 0) -> Path:
    """Write a YOLO dataset of bright rectangles on noise, with exact labels; returns its data.yaml."""
    import cv2

    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "labels").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            image = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
            lines = []
            for _ in range(int(rng.integers(1, 4))):
                w, h = (int(v) for v in rng.integers(8, size // 3, 2))
                x, y = (int(v) for v in rng.integers(0, size - max(w, h), 2))
                image[y : y + h, x : x + w] = (255, 255, 255)
                lines.append(f"0 {(x + w / 2) / size:.6f} {(y + h / 2) / size:.6f} {w / size:.6f} {h / size:.6f}")
            cv2.imwrite(str(root / split / "images" / f"{split}_{i}.jpg"), image)
            (root / split / "labels" / f"{split}_{i}.txt").write_text("\n".join(lines) + "\n")
    data_yaml = root / "data.yaml"
    data_yaml.write_text("path: .\ntrain: train/images\nval: val/images\nnames:\n  0: vehicle\n")
    return data_yaml


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """8 training and 4 validation images at 64x64 with one class."""
    return make_yolo_dataset(tmp_path / "tiny")


def compose_config(config_name: str, *overrides: str) -> DictConfig:
    """A primary config of configs/ composed with overrides, as its command would compose it."""
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name, overrides=list(overrides))


@pytest.fixture
def compose_sample(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose configs/sample.yaml with outputs in tmp_path/out and one worker."""

    def _compose(*overrides: str) -> DictConfig:
        return compose_config("sample", f"out_dir={tmp_path / 'out'}", "workers=1", *overrides)

    return _compose


def frame_records(out: Path) -> list[dict]:
    """The sample stage's frames.jsonl records."""
    return [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]


@pytest.fixture
def compose_train(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose configs/train.yaml under debug=fast with outputs and the MLflow store in tmp_path."""

    def _compose(*overrides: str, config_name: str = "train") -> DictConfig:
        base = ["debug=fast", f"out_dir={tmp_path / 'out'}", f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db"]
        return compose_config(config_name, *base, *overrides)

    return _compose


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A yolov8n trained for one epoch at imgsz=32 on 4 generated images: no downloads."""
    from ultralytics import YOLO

    root = tmp_path_factory.mktemp("prelabel-model")
    data = make_yolo_dataset(root / "ds", n_train=4, n_val=2)
    data.write_text(data.read_text().replace("path: .", f"path: {data.parent}"))  # not relative to the cwd
    YOLO("yolov8n.yaml").train(
        data=str(data),
        epochs=1,
        imgsz=32,
        batch=4,
        device="cpu",
        workers=0,
        plots=False,
        project=str(root),
        name="t",
        exist_ok=True,
        val=False,
        verbose=False,
    )
    weights = root / "t" / "weights" / "last.pt"
    assert weights.is_file()
    return weights


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mlflow_server(root: Path, port: int | None = None) -> tuple[subprocess.Popen, str]:
    """Start a real `mlflow server` on 127.0.0.1 with a SQLite store and proxied artifacts under ``root``; returns
    the process and its URI once it answers (the same ``root`` and ``port`` again: the same server restarted)."""
    port = port or _free_port()
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        f"sqlite:///{root}/store.db",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--workers",
        "1",
    ]
    with (root / "server.log").open("a") as log:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        # its own process group: the server's workers go down with it (see stop_mlflow_server)
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    for _ in range(240):
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited: {(root / 'server.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=1) as r:
                if r.status == 200:
                    return proc, uri
        except OSError:
            time.sleep(0.5)
    stop_mlflow_server(proc)
    raise RuntimeError(f"mlflow server did not come up: {(root / 'server.log').read_text()[-2000:]}")


def stop_mlflow_server(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Stop a server started by :func:`start_mlflow_server` and its workers (``SIGKILL``: the server dies)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` on 127.0.0.1 with a SQLite store and proxied artifacts; yields its URI."""
    proc, uri = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    try:
        yield uri
    finally:
        stop_mlflow_server(proc)
