"""Training speed on CPU: dronevision's thread setting against ultralytics' own (cpu_count - 1).

Runs the real training pipeline for a few epochs on the bundled data with each thread count and prints a
Markdown table of seconds per epoch (from ultralytics' results.csv) with the ratio against the reference.

    python scripts/bench_train_threads.py [--epochs 2] [--imgsz 416]
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir

from dronevision.cli import CONFIG_DIR
from dronevision.train import run


def seconds_per_epoch(out_dir: Path) -> float:
    """Mean training seconds per epoch, excluding the first (warm-up) when there are several."""
    with (out_dir / "train" / "results.csv").open() as f:
        times = [float(row["time"]) for row in csv.DictReader(f)]
    per_epoch = [b - a for a, b in zip([0.0, *times], times)]
    return sum(per_epoch[1:]) / (len(per_epoch) - 1) if len(per_epoch) > 1 else per_epoch[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--imgsz", type=int, default=416)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from ultralytics.utils import NUM_THREADS

    cores = os.cpu_count() or 1
    cases = [("ultralytics default (reference)", NUM_THREADS), ("dronevision (all cores)", cores)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, threads) in enumerate(cases):
            out = Path(tmp) / f"case{i}"
            overrides = [
                f"out_dir={out}",
                f"mlflow.tracking_uri=sqlite:///{tmp}/mlflow.db",
                f"threads={threads}",
                f"train.epochs={args.epochs}",
                f"train.imgsz={args.imgsz}",
                "train.device=cpu",
                "train.plots=false",
                "train.verbose=false",
                "export.enabled=false",
            ]
            with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
                cfg = compose("train", overrides=overrides)
            run(cfg)
            rows.append((label, threads, seconds_per_epoch(out)))
    reference = rows[0][2]
    print(f"\nyolov8n, bundled aerial-cars (321 train images), imgsz {args.imgsz}, batch 16, {cores} CPU cores\n")
    print("| setting | torch threads | s / epoch | speed-up vs reference |")
    print("|---|---:|---:|---:|")
    for label, threads, sec in rows:
        print(f"| {label} | {threads} | {sec:.1f} | {reference / sec:.2f}x |")


if __name__ == "__main__":
    main()
