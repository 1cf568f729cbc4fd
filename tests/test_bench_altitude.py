"""scripts/bench_altitude.py: its command line and its report (no training)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

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
    options = ("--epochs", "--imgsz", "--batch", "--out", "--recipe", "--fraction", "--skip-plain", "--skip-recipe")
    assert all(option in done.stdout for option in options)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], {"epochs": 30, "imgsz": 416, "batch": 16, "recipe": "augment=aerial", "fraction": 1.0}),
        (
            ["--epochs", "1", "--imgsz", "64", "--fraction", "0.1", "--recipe", "augment=aerial model=yolov8n_p2"],
            {"epochs": 1, "imgsz": 64, "fraction": 0.1, "recipe": "augment=aerial model=yolov8n_p2"},
        ),
        (["--skip-plain", "--skip-recipe"], {"skip_plain": True, "skip_recipe": True}),
    ],
)
def test_arguments(bench, argv, expected):
    args = bench.get_args_parser().parse_args(argv)
    assert {k: getattr(args, k) for k in expected} == expected
    assert args.out == Path("runs/bench_altitude")


def test_report_marks_targets(bench):
    runs = {"plain": {"train_s": 100.0, "seconds": 120.0}, "recipe": {"train_s": 150.0, "seconds": 170.0}}
    record = {
        "command": "python scripts/bench_altitude.py",
        "date": "2025-01-01T00:00:00+00:00",
        "cpu": "some CPU",
        "cores": 2,
        "args": {"device": "cpu", "epochs": 30, "imgsz": 416, "batch": 16, "fraction": 1.0, "data": "d", "recipe": "r"},
        "runs": runs,
        "table": [
            {
                "scale": "1",
                "plain_map50": 0.6,
                "recipe_map50": 0.72,
                "diff_map50": 0.12,
                "plain_map50_95": 0.3,
                "recipe_map50_95": 0.35,
                "diff_map50_95": 0.05,
            },
        ],  # fmt: skip
        "targets": [
            {"scale": "1", "target": 0.71, "map50": 0.72, "met": True},
            {"scale": "2", "target": 0.65, "map50": None, "met": False},
        ],
        "json": "out/bench_altitude.json",
    }
    text = bench.report(record)
    assert "| 1x | 0.600 | 0.720 | +0.120 | 0.300 | 0.350 | +0.050 |" in text
    assert "Target 1x: recipe mAP50 0.720 >= 0.71: met" in text
    assert "Target 2x: recipe mAP50 – >= 0.65: not met" in text
    assert "| recipe | 150 | 170 | 1.50x |" in text
