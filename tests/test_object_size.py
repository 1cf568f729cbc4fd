"""The object sizes of a built dataset (issue 16 item 2): in its manifest and summary, and in the metadata of a model
exported from a training on it."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from dronevision.dataset.command import run as build
from dronevision.infer import Detector
from dronevision.infer.model import training_object_size
from tests.conftest import compose_config, make_yolo_dataset


def _built(tmp_path: Path) -> Path:
    source = make_yolo_dataset(tmp_path / "src", n_train=8, n_val=4).parent
    out = tmp_path / "built"
    build(
        compose_config(
            "dataset_build",
            "source.format=yolo",
            f"source.path={source}",
            "source.keep_splits=true",
            "gsd_m=0.05",
            f"out_dir={out}",
        )
    )
    return out


def test_the_manifest_holds_the_object_sizes_of_each_split(tmp_path: Path) -> None:
    out = _built(tmp_path)
    manifest = json.loads((out / "manifest.json").read_text())
    sides, widths = [], []
    for label in sorted((out / "labels" / "train").glob("*.txt")):  # the boxes as written, in pixels of 64x64
        for line in label.read_text().splitlines():
            _, _, _, w, h = (float(v) for v in line.split())
            widths.append(w * 64)
            sides.append(np.sqrt(w * 64 * h * 64))
    size = manifest["object_size"]["train"]
    assert size["boxes"] == len(sides) > 0
    assert abs(size["median_side_px"] - np.median(sides)) < 0.05
    assert abs(size["median_w_px"] - np.median(widths)) < 0.05
    assert size["p10_side_px"] <= size["median_side_px"] <= size["p90_side_px"]
    assert manifest["gsd_m"] == 0.05
    summary = json.loads((out / "summary.json").read_text())
    assert summary["object_size"] == manifest["object_size"] and summary["gsd_m"] == 0.05


def test_an_export_carries_the_training_sets_object_size(tmp_path: Path) -> None:
    out = _built(tmp_path)
    training = tmp_path / "train-run"
    (training / "train" / "weights").mkdir(parents=True)
    (training / "config.yaml").write_text(f"task_name: train\ndataset:\n  path: {out}\n")
    weights = training / "train" / "weights" / "best.pt"
    manifest = json.loads((out / "manifest.json").read_text())
    assert training_object_size(weights) == {
        "train_median_box_px": str(manifest["object_size"]["train"]["median_side_px"]),
        "train_gsd_m": "0.05",
    }
    # what multi-scale inference weighs boxes by (slicing.scales_box_px null): the checkpoint's, or an export's
    checkpoint, export = _FileDetector(weights), _FileDetector(tmp_path / "model.onnx")
    export.info = SimpleNamespace(metadata={"train_median_box_px": "12.5"})
    assert checkpoint.train_box_px == manifest["object_size"]["train"]["median_side_px"]
    assert export.train_box_px == 12.5 and _FileDetector(tmp_path / "other.onnx").train_box_px is None
    (training / "config.yaml").unlink()  # no record of the training, and no checkpoint to read: nothing known
    weights.write_bytes(b"")
    (training / "config.yaml").write_text("task_name: evaluate\n")
    assert training_object_size(training / "model.onnx") == {}


class _FileDetector(Detector):
    """A detector known only by its file (no model runs)."""

    names, runtime, threads, input_hw = {0: "car"}, "fake", 1, (64, 64)

    def __init__(self, weights: Path) -> None:
        self.weights = weights

    def _predict_batch(self, images_bgr: list[np.ndarray]) -> list:
        raise AssertionError("not run")
