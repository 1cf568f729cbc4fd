"""Wrong types and unknown keys stop before anything runs (issue 15, item 3): one line naming the key, the value and
what is expected; no output folder, no MLflow store, no run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dronevision.cli import CONFIG_DIR
from dronevision.config_check import check_overrides
from dronevision.errors import DroneVisionError

pytestmark = pytest.mark.faults

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data" / "samples" / "aerial-cars"


@pytest.mark.parametrize(
    ("command", "overrides", "message"),
    [
        (
            "train",
            ["train.epochs=abc"],
            "train.epochs='abc': is of invalid type str. 'epochs' must be an int (i.e. 'epochs=8')",
        ),
        ("train", ["+trian.epochs=5"], "unknown key trian.epochs in the train config; did you mean train.epochs?"),
        (
            "dataset",
            ["source.format=yolo", f"source.path={SAMPLES}", "split.val_fraction=abc"],
            "split.val_fraction='abc': expected a number (the default is 0.2)",
        ),
        ("sample", ["input=x.mp4", "+sampling.every_z=3"], "unknown key sampling.every_z in the sample config"),
        ("evaluate", ["predictions=x"], "dataset.path is required"),
        (
            "track",
            ["model=x.onnx", "input=x.mp4", "tracker.track_buffer=long"],
            "tracker.track_buffer='long': expected an integer",
        ),
    ],
)
def test_bad_values_and_unknown_keys_are_one_line_and_nothing_is_made(
    tmp_path: Path, command: str, overrides: list[str], message: str
) -> None:
    out, store = tmp_path / "out", tmp_path / "mlflow.db"
    done = subprocess.run(
        [sys.executable, "-m", f"dronevision.{command}", f"out_dir={out}", *overrides]
        + ([f"mlflow.tracking_uri=sqlite:///{store}"] if command in ("train", "evaluate", "track") else []),
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), done.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no out_dir, no store, no Hydra folder in the cwd


@pytest.mark.parametrize(
    ("command", "overrides", "message"),
    [
        ("train", ["train.epochs=0"], "train.epochs=0: is an invalid value. 'epochs' must be >= 1."),
        ("train", ["trian.epochs=5"], "unknown key trian.epochs in the train config; did you mean train.epochs?"),
        ("train", ["mlflow.retries=many"], "mlflow.retries='many': expected an integer (the default is 1)"),
        ("train", ["threads=0"], "threads=0: expected at least 1 (null: all cores)"),
        (
            "dataset_build",
            ["source.format=yolo", f"source.path={SAMPLES}", "split.val_fraction=1.5"],
            "split.val_fraction=1.5: expected a fraction of the images, 0..1",
        ),
        (
            "dataset_build",
            ["source.format=yolo", "overwrite=maybe"],
            "overwrite='maybe': expected true or false (the default is False)",
        ),
    ],
)
def test_more_bad_values_are_one_line(command: str, overrides: list[str], message: str) -> None:
    """The same check in-process (the command lines above show that nothing is made before it)."""
    from dronevision.train.args import ultralytics_check, ultralytics_defaults

    kwargs = {"extra_defaults": ultralytics_defaults(), "validators": {"train.": ultralytics_check}}
    with pytest.raises(DroneVisionError) as e:
        check_overrides(command, overrides, config_dir=CONFIG_DIR, **(kwargs if command == "train" else {}))
    assert str(e.value).startswith(message)


def test_what_the_configs_allow_still_composes() -> None:
    """The checker refuses no value the project documents (ultralytics' own unions included)."""
    ok = [
        (
            "train",
            [
                "train.cache=ram",
                "train.batch=0.7",
                "train.imgsz=[640,384]",
                "model=yolo11n",
                "++train.mixup=0.1",
                "++train.copy_paste=0.2",
            ],
        ),
        ("train", ["train.epochs=1,2", "--multirun"]),
        ("evaluate", ["weights=x.pt"]),  # dataset.path is taken from the training when not given
        ("evaluate", ["weights=x.pt", "protocol=coco", "dataset.path=d"]),
        ("export", ["weights=x.pt", "export.int8=true", "export.calibration=null"]),
        ("dataset_build", ["source.format=coco", "source.path=a.json", "split.val_fraction=0", "tiling=none"]),
        ("track", ["weights=x.onnx", "input=v.mp4", "every_s=0.5", "tracker=bytetrack", "start_s=12.5"]),
        ("sample", ["input=x.mp4", "start_s=1.5"]),
        ("train", ["mlflow.timeout_s=2.5"]),
    ]
    from dronevision.train.args import ultralytics_check, ultralytics_defaults

    for name, overrides in ok:
        kwargs = {
            "train": {"extra_defaults": ultralytics_defaults(), "validators": {"train.": ultralytics_check}},
            "evaluate": {"may_be_missing": ["dataset.path"]},
        }.get(name, {})
        assert check_overrides(name, overrides, config_dir=CONFIG_DIR, **kwargs) is not None, overrides


def test_help_and_cfg_flags_are_left_to_hydra() -> None:
    assert check_overrides("train", ["--cfg", "job", "train.epochs=abc"], config_dir=CONFIG_DIR) is None
    assert check_overrides("train", ["-cd", "/tmp", "train.epochs=2"], config_dir=CONFIG_DIR) is None  # another config
    with pytest.raises(DroneVisionError, match="train.epochs=2.5: expected an integer"):
        check_overrides("train", ["train.epochs=2,2.5", "-m"], config_dir=CONFIG_DIR)  # every choice of a sweep
