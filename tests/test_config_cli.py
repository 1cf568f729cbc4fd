"""Configs compose; bad input is one clear line and a non-zero exit, with no output folder left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from dronevision.cli import CONFIG_DIR, check_group_overrides, group_options
from dronevision.errors import DroneVisionError
from dronevision.train import ultralytics_train_args

from .conftest import BUNDLED, REPO, compose_config


@pytest.mark.parametrize("experiment", [None, *group_options("experiment")])
@pytest.mark.parametrize("config_name", ["train"])
def test_every_train_experiment_composes(
    compose_train: Callable[..., DictConfig], tmp_path: Path, config_name: str, experiment: str | None
) -> None:
    cfg = compose_train(*([f"experiment={experiment}"] if experiment else []), config_name=config_name)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["out_dir"] == str(tmp_path / "out")
    assert resolved["train"]["epochs"] == 1  # debug=fast wins over experiments
    assert Path(resolved["dataset"]["path"]) == BUNDLED


def test_every_primary_config_composes_with_defaults(tmp_path: Path) -> None:
    primary = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    assert {"train", "dataset_build"} <= set(primary)
    for name in primary:
        cfg = compose_config(name, f"out_dir={tmp_path}")
        assert OmegaConf.to_container(cfg, resolve=True)["out_dir"] == str(tmp_path)


def test_default_config_trains_yolov8n_from_scratch_on_bundled_data(tmp_path: Path) -> None:
    cfg = compose_config("train", f"out_dir={tmp_path}")
    assert cfg.model.cfg == "yolov8n.yaml" and cfg.model.weights is None
    assert Path(cfg.dataset.path) == BUNDLED
    assert cfg.mlflow.tracking_uri.startswith("sqlite:///")


def test_train_group_passes_ultralytics_arguments_unchanged(compose_train: Callable[..., DictConfig]) -> None:
    from ultralytics.cfg import DEFAULT_CFG_DICT

    cfg = compose_train("train.lr0=0.005", "+train.copy_paste=0.5")
    args = ultralytics_train_args(OmegaConf.to_container(cfg.train), DEFAULT_CFG_DICT)
    assert args["lr0"] == 0.005 and args["copy_paste"] == 0.5 and args["epochs"] == 1
    with pytest.raises(DroneVisionError, match="train.project is set by dronevision"):
        ultralytics_train_args({"project": "x"}, DEFAULT_CFG_DICT)


def test_model_zoo_lists_the_issue_models() -> None:
    assert {"yolov8n", "yolov8s", "yolo11n", "yolo11s"} <= set(group_options("model"))


@pytest.mark.parametrize(
    ("overrides", "ok"),
    [
        (["model=yolo11s"], True),
        (["model=yolov8n,yolo11n"], True),  # a multirun sweep
        (["model.weights=/x.pt", "train.epochs=3"], True),  # not group choices
        (["model=yolov5x"], False),
        (["debug=faster"], False),
    ],
)
def test_check_group_overrides(overrides: list[str], ok: bool) -> None:
    if ok:
        check_group_overrides(overrides)
    else:
        with pytest.raises(DroneVisionError, match="valid: "):
            check_group_overrides(overrides)


def _train_cli(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "dronevision.train",
        "debug=fast",
        f"out_dir={out}",
        f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
        *overrides,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env={**os.environ, "HYDRA_FULL_ERROR": "0"})


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("dataset.path={tmp}/missing", "error: dataset path {tmp}/missing does not exist"),
        ("dataset.path={tmp}/no_names.yaml", "error: {tmp}/no_names.yaml: no 'names'"),
        (
            "dataset.path={tmp}/empty_val.yaml",
            "error: {tmp}/empty_val.yaml: the val split 'val/images' holds no images",
        ),
        ("model.weights={tmp}/nope.pt", "error: model.weights {tmp}/nope.pt does not exist"),
        (
            "model=yolov99",
            "error: unknown model 'yolov99'; valid: rtdetr_l, yolo11n, yolo11s, yolo26n, yolo26n_p2, yolo26s, yolov8n,"
            " yolov8n_p2, yolov8s",
        ),
        ("train.epoch=1", "error: train.epoch is not an ultralytics train argument (did you mean train.epochs?)"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, override: str, message: str) -> None:
    (tmp_path / "no_names.yaml").write_text("train: a\nval: b\n")
    (tmp_path / "val" / "images").mkdir(parents=True)
    (tmp_path / "train" / "images").mkdir(parents=True)
    (tmp_path / "train" / "images" / "a.jpg").write_bytes(b"")
    (tmp_path / "empty_val.yaml").write_text("train: train/images\nval: val/images\nnames: [car]\n")

    result = _train_cli(tmp_path, override.format(tmp=tmp_path))

    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith(message.format(tmp=tmp_path))
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "out").exists(), "bad input must not leave an output folder"
