"""Training in depth: model zoo, resume after a kill, seed determinism, sweeps, lineage and the model registry."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from dronevision.cli import group_options
from dronevision.errors import DroneVisionError
from dronevision.train import resolve_model, run
from dronevision.train.lineage import replay, split_from_run

from .conftest import REPO, compose_config, make_yolo_dataset


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "dronevision.train", *args]


def _losses(out_dir: Path) -> list[dict[str, float]]:
    with (out_dir / "train" / "results.csv").open() as f:
        return [{k.strip(): float(v) for k, v in row.items()} for row in csv.DictReader(f)]


# --- model zoo -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", group_options("model"))
def test_every_model_in_the_zoo_builds_from_its_yaml_without_weights(name: str) -> None:
    from ultralytics import RTDETR, YOLO

    spec = resolve_model(compose_config("train", f"model={name}").model)
    model = (RTDETR if spec.family == "rtdetr" else YOLO)(spec.arch)
    head = model.model.model[-1]
    assert spec.weights is None
    assert len(model.names) == 80 and sum(p.numel() for p in model.model.parameters()) > 1_000_000
    if name.endswith("_p2"):
        assert head.stride.tolist() == [4.0, 8.0, 16.0, 32.0]  # the extra stride-4 head for small objects
    if spec.family == "rtdetr":
        assert type(head).__name__ == "RTDETRDecoder"


def test_zoo_has_the_models_the_issue_names() -> None:
    zoo = {"yolov8n", "yolov8s", "yolo11n", "yolo11s", "yolov8n_p2", "rtdetr_l", "yolo26n", "yolo26s", "yolo26n_p2"}
    assert zoo <= set(group_options("model"))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["yolov8n_p2", "rtdetr_l", "yolo26n_p2"])
def test_small_object_and_transformer_models_train_end_to_end(
    name: str, tiny_dataset: Path, compose_train: Callable[..., DictConfig]
) -> None:
    cfg = compose_train(f"dataset.path={tiny_dataset}", f"model={name}", "train.fraction=1.0", "train.imgsz=64")
    summary = run(cfg)
    assert summary["epochs_completed"] == 1 and Path(summary["weights"]).is_file()
    assert Path(summary["onnx"]).is_file()
    if name != "rtdetr_l":  # RT-DETR picks its 300 queries by top-k over near-tied scores of an untrained model:
        assert summary["onnx_max_abs_diff"] < 1e-2  # its raw outputs may come back in another order
    params = MlflowClient(cfg.mlflow.tracking_uri).get_run(summary["run_id"]).data.params
    assert params["model.cfg"] == cfg.model.cfg


def test_weights_that_do_not_exist_are_refused_before_training(tmp_path: Path) -> None:
    model = compose_config("train", f"model.weights={tmp_path / 'nope.pt'}").model
    with pytest.raises(DroneVisionError, match="does not exist"):
        resolve_model(model)


# --- lineage helpers -------------------------------------------------------------------------------------------


def test_from_run_replays_recorded_overrides_under_the_new_ones() -> None:
    run_id, rest = split_from_run(["--from-run", "abc123", "train.epochs=3", "out_dir=/new"])
    assert run_id == "abc123"
    recorded = ["model=yolo11n", "++train.lr0=0.005", "++train.epochs=1", "out_dir=/old", "hydra.verbose=true"]
    assert replay(recorded, rest) == ["model=yolo11n", "++train.lr0=0.005", "train.epochs=3", "out_dir=/new"]


def test_from_run_with_an_unknown_run_id_is_one_line(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/mlflow.db"
    MlflowClient(store).search_experiments()  # creates the store
    result = subprocess.run(
        _cmd("--from-run", "0123456789abcdef", f"mlflow.tracking_uri={store}", f"out_dir={tmp_path / 'out'}"),
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: run 0123456789abcdef does not exist in the MLflow store {store}"
    ]
    assert not (tmp_path / "out").exists()


def test_resume_without_an_interrupted_run_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = subprocess.run(
        _cmd("debug=fast", f"out_dir={tmp_path / 'empty'}", "train.resume=true"), capture_output=True, text=True
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "holds no interrupted training" in result.stderr


# --- determinism -----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_same_seed_gives_identical_first_epoch_losses_on_cpu(
    tiny_dataset: Path, compose_train: Callable[..., DictConfig], tmp_path: Path
) -> None:
    def first_epoch(seed: int, name: str) -> dict[str, float]:
        cfg = compose_train(
            f"dataset.path={tiny_dataset}",
            "train.fraction=1.0",
            f"train.seed={seed}",
            "export.enabled=false",
            "augment=aerial",
            f"out_dir={tmp_path / name}",
        )
        run(cfg)
        row = _losses(tmp_path / name)[0]
        return {k: v for k, v in row.items() if k.startswith("train/")}

    a, b, c = first_epoch(0, "a"), first_epoch(0, "b"), first_epoch(1, "c")
    assert a == b
    assert a != c  # the seed really drives the run


# --- kill and resume -------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_mid_epoch_then_resume_ends_as_one_finished_registered_run(tmp_path: Path) -> None:
    data = make_yolo_dataset(tmp_path / "ds", n_train=48, n_val=4, size=64)
    store = f"sqlite:///{tmp_path}/mlflow.db"
    out = tmp_path / "out"
    common = [f"mlflow.tracking_uri={store}", "mlflow.experiment=resume-test", f"out_dir={out}"]
    proc = subprocess.Popen(
        _cmd("debug=fast", f"dataset.path={data}", "train.fraction=1.0", "train.batch=4", "train.epochs=3", *common),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    last = out / "train" / "weights" / "last.pt"
    while not last.is_file() and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before its first epoch finished"
    time.sleep(0.3)  # into the second epoch
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert stderr.strip().splitlines()[-1] == "interrupted by SIGTERM"

    client = MlflowClient(store)
    (experiment,) = [e for e in client.search_experiments() if e.name == "resume-test"]
    (killed,) = client.search_runs([experiment.experiment_id])
    assert killed.info.status == "KILLED"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "killed" and summary["signal"] == "SIGTERM" and summary["run_id"] == killed.info.run_id
    assert torch.load(last, weights_only=False)["epoch"] >= 0  # a whole checkpoint, not a half-written one
    done_before = len(_losses(out))
    assert done_before < 3

    result = subprocess.run(
        _cmd(f"out_dir={out}", "train.resume=true", f"mlflow.tracking_uri={store}"),
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == [killed.info.run_id]  # no duplicate run
    assert runs[0].info.status == "FINISHED" and runs[0].data.tags["dronevision.resumed"] == "true"
    assert [row["epoch"] for row in _losses(out)] == [1.0, 2.0, 3.0]
    history = client.get_metric_history(killed.info.run_id, "train/box_loss")
    steps = sorted(m.step for m in history)
    assert steps == [1, 2, 3, 4]  # each epoch once, then the final best-weights validation at epochs + 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed"] is True and summary["epochs_completed"] == 3
    version = client.get_model_version_by_alias("dronevision-detector", "candidate")
    assert version.run_id == killed.info.run_id and summary["registered_model"]["version"] == int(version.version)


# --- sweeps and re-runs ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_multirun_gives_one_run_per_job_a_sweep_table_and_a_rerun_from_a_run(tmp_path: Path) -> None:
    data = make_yolo_dataset(tmp_path / "ds", n_train=8, n_val=4, size=64)
    store = f"sqlite:///{tmp_path}/mlflow.db"
    sweep = tmp_path / "sweep"
    base = ["debug=fast", f"dataset.path={data}", "train.fraction=1.0", "export.enabled=false"]
    mlflow_args = [f"mlflow.tracking_uri={store}", "mlflow.experiment=sweep-test"]
    result = subprocess.run(
        _cmd("-m", *base, *mlflow_args, f"out_dir={sweep}", "train.lr0=0.01,0.005", "augment=none,aerial"),
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(store)
    (experiment,) = [e for e in client.search_experiments() if e.name == "sweep-test"]
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
    combos = {(r.data.params["train.lr0"], r.data.params["augment.name"]) for r in runs}
    assert combos == {("0.01", "none"), ("0.01", "aerial"), ("0.005", "none"), ("0.005", "aerial")}
    with (sweep / "sweep_summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and {r["status"] for r in rows} == {"finished"}
    assert {r["run_id"] for r in rows} == {r.info.run_id for r in runs}
    assert (sweep / "sweep_summary.png").stat().st_size > 1000

    # Re-run job 3's recorded config with one change: the same groups and values come back.
    source = next(
        r for r in runs if r.data.params["augment.name"] == "aerial" and r.data.params["train.lr0"] == "0.005"
    )
    rerun_out = tmp_path / "rerun"
    result = subprocess.run(
        _cmd("--from-run", source.info.run_id, *mlflow_args, f"out_dir={rerun_out}", "train.seed=7"),
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((rerun_out / "summary.json").read_text())
    rerun = client.get_run(summary["run_id"])
    assert rerun.data.tags["dronevision.from_run"] == source.info.run_id
    for key in ("train.lr0", "augment.name", "dataset.path", "train.imgsz", "model.cfg"):
        assert rerun.data.params[key] == source.data.params[key], key
    assert rerun.data.params["train.seed"] == "7"


# --- lineage in one run ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_one_epoch_with_aerial_policy_records_lineage_preview_and_registry(
    tiny_dataset: Path, compose_train: Callable[..., DictConfig]
) -> None:
    cfg = compose_train(f"dataset.path={tiny_dataset}", "augment=aerial", "mlflow.registry.name=vehicles")
    summary = run(cfg)
    client = MlflowClient(cfg.mlflow.tracking_uri)
    r = client.get_run(summary["run_id"])
    assert r.data.params["augment.name"] == "aerial" and r.data.tags["augment.policy"] == "aerial"
    assert r.data.params["dataset.sha256"] == summary["dataset"]["sha256"] == r.data.tags["dataset.sha256"]
    assert r.data.params["dataset.root"] == str(tiny_dataset.parent)
    assert {"git_commit", "git_dirty"} <= set(r.data.tags)
    artifacts = {a.path for folder in ("", "augment", "weights") for a in client.list_artifacts(r.info.run_id, folder)}
    assert {
        "config.yaml",
        "augment/preview.png",
        "augment/policy.yaml",
        "weights/best.pt",
        "weights/best.onnx",
    } <= artifacts
    assert client.get_metric_history(r.info.run_id, "metrics/mAP50B")
    version = client.get_model_version_by_alias("vehicles", "candidate")
    assert version.run_id == r.info.run_id and version.source == summary["logged_model"]["uri"]  # the ONNX, as pyfunc
    assert [o.model_id for o in r.outputs.model_outputs] == [summary["logged_model"]["model_id"]]
    assert summary["augment"]["policy"] == "aerial" and Path(summary["augment"]["preview"]).is_file()


# --- multi-GPU -------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason=f"DDP needs 2 CUDA GPUs; found {torch.cuda.device_count()}")
def test_ddp_on_two_gpus_trains_one_run(tiny_dataset: Path, compose_train: Callable[..., DictConfig]) -> None:
    cfg = compose_train(f"dataset.path={tiny_dataset}", "train.device=0,1", "train.batch=8", "train.fraction=1.0")
    summary = run(cfg)
    client = MlflowClient(cfg.mlflow.tracking_uri)
    assert client.get_run(summary["run_id"]).info.status == "FINISHED"
    assert client.get_metric_history(summary["run_id"], "metrics/mAP50B")  # from results.csv after DDP
    assert Path(summary["weights"]).is_file()
