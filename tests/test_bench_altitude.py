"""scripts/bench_altitude.py: its command line and its report (no training)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_altitude.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_altitude", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_help_runs():
    done = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    options = (
        "--epochs",
        "--imgsz",
        "--batch",
        "--out",
        "--recipe",
        "--infer",
        "--known",
        "--fraction",
        "--skip-plain",
        "--seed",
        "--bootstrap",
    )
    assert all(option in done.stdout for option in options)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            [],
            {
                "epochs": 30,
                "imgsz": 416,
                "batch": 16,
                "recipe": "",
                "infer": "slicing=altitude",
                "known": "scales_known_gsd=true",
                "seed": 0,
                "bootstrap": 200,
            },
        ),
        (
            ["--epochs", "1", "--imgsz", "64", "--fraction", "0.1", "--recipe", "augment=aerial model=yolov8n_p2"],
            {"epochs": 1, "imgsz": 64, "fraction": 0.1, "recipe": "augment=aerial model=yolov8n_p2"},
        ),
        (["--skip-plain", "--skip-recipe"], {"skip_plain": True, "skip_recipe": True}),
        (["--seed", "1", "--bootstrap", "0"], {"seed": 1, "bootstrap": 0}),
    ],
)
def test_arguments(bench, argv, expected):
    args = bench.get_args_parser().parse_args(argv)
    assert {k: getattr(args, k) for k in expected} == expected
    assert args.out == Path("runs/bench_altitude")


def test_report_marks_targets(bench):
    runs = {"plain": {"train_s": 100.0, "seconds": 120.0}, "recipe": {"train_s": 150.0, "seconds": 170.0}}
    args = {"device": "cpu", "epochs": 30, "imgsz": 416, "batch": 16, "fraction": 1.0, "data": "d", "recipe": "r"}
    scores = {
        "plain": (0.6, 0.3),
        "plain+infer": (0.62, 0.31),
        "plain+known": (0.64, 0.32),
        "recipe": (0.7, 0.35),
        "recipe+infer": (0.72, 0.36),
        "recipe+known": (0.74, 0.37),
    }
    record = {
        "command": "python scripts/bench_altitude.py",
        "date": "2025-01-01T00:00:00+00:00",
        "cpu": "some CPU",
        "cores": 2,
        "args": {**args, "infer": "slicing=altitude", "known": "scales_known_gsd=true"},
        "runs": runs,
        "table": [{"scale": "1", **{c: {"map50": a, "map50_95": b} for c, (a, b) in scores.items()}}],
        "targets": [
            {"scale": "1", "target": 0.71, "recipe": 0.7, "recipe+infer": 0.72, "recipe+known": 0.74},
            {"scale": "2", "target": 0.65, "recipe": None, "recipe+infer": 0.5, "recipe+known": 0.66},
        ],
        "json": "out/bench_altitude.json",
    }
    text = bench.report(record)
    assert "| 1x | 0.600 | 0.620 | 0.640 | 0.700 | 0.720 | 0.740 |" in text  # mAP50, then mAP50-95
    assert "| 1x | 0.300 | 0.310 | 0.320 | 0.350 | 0.360 | 0.370 |" in text
    assert text.index("| map50 |") < text.index("0.740") < text.index("| map50_95 |") < text.index("0.370")
    assert "Target 1x: mAP50 >= 0.71: recipe 0.700 not met, recipe+infer 0.720 met, recipe+known 0.740 met" in text
    assert "Target 2x: mAP50 >= 0.65: recipe – not met, recipe+infer 0.500 not met, recipe+known 0.660 met" in text
    assert "| recipe | 150 | 170 | 1.50x |" in text
    assert "+infer: python -m dronevision.evaluate slicing=altitude;" in text
    assert "+known: python -m dronevision.evaluate scales_known_gsd=true" in text


def _truth(n_images):
    from dronevision.evaluate.ground_truth import GroundTruth
    from dronevision.schema import Detections

    boxes = [Detections(np.array([[10.0, 10, 30, 30], [50, 50, 70, 70]]), np.array([0, 0])) for _ in range(n_images)]
    return GroundTruth(
        source=Path("test"),
        kind="dataset",
        names={0: "vehicle"},
        images=[Path(f"{i}.jpg") for i in range(n_images)],
        sizes=[(100, 100)] * n_images,
        boxes=boxes,
        ignored=[np.zeros((0, 4))] * n_images,
    )


def test_bootstrap_difference_measures_the_gap_and_its_spread(bench):
    from dronevision.schema import Detections

    truth = _truth(6)
    perfect = [Detections(b.xyxy, b.class_id, np.array([0.9, 0.8])) for b in truth.boxes]
    # the second model misses one of the two vehicles in the first two images: never better, worse in most draws
    misses = [Detections(b.xyxy[:1], b.class_id[:1], np.array([0.9])) if i < 2 else p
              for i, (b, p) in enumerate(zip(truth.boxes, perfect))]  # fmt: skip
    got = bench.bootstrap_difference(truth, perfect, misses, rounds=200, seed=1)
    assert got["first"] == pytest.approx(1.0) and got["second"] < 1.0
    assert got["difference"] == pytest.approx(got["second"] - got["first"]) and got["difference"] < 0
    assert got["low"] < got["high"] <= 0 and got["p_second_better"] == 0
    assert got["rounds"] == 200 and got["n_images"] == 6
    same = bench.bootstrap_difference(truth, perfect, perfect, rounds=50)
    assert same["difference"] == same["low"] == same["high"] == 0


def test_report_says_how_far_the_1x_gap_is_from_noise(bench):
    record = {
        "command": "c", "date": "d", "cpu": "x", "cores": 2, "json": "j", "table": [], "targets": [],
        "args": {"device": "cpu", "epochs": 30, "imgsz": 416, "batch": 16, "fraction": 1.0, "data": "d", "recipe": "",
                 "infer": "slicing=altitude"},
        "runs": {"plain": {"train_s": 1.0, "seconds": 1.0}, "recipe": {"train_s": 1.0, "seconds": 1.0}},
        "noise_1x": {"difference": -0.022, "low": -0.1, "high": 0.042, "p_second_better": 0.27, "rounds": 1000,
                     "n_images": 15},
    }  # fmt: skip
    assert (
        "1x, recipe - plain, mAP50: -0.022; 95% paired bootstrap interval over the 15 test images: [-0.100, +0.042];"
        " the recipe scores higher in 27% of 1000 draws" in bench.report(record)
    )
