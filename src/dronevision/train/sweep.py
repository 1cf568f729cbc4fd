"""Sweep summary: after a Hydra multirun, one table (CSV and PNG) of the metric each job reached."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)

COLUMNS = ("job", "overrides", "map50", "map50_95", "coco_AP", "epochs", "seconds", "run_id", "status")


def sweep_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job folder of a sweep: its overrides and, when it finished, its metrics."""
    rows = []
    for job in sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)):
        overrides_file = job / ".hydra" / "overrides.yaml"
        import yaml

        overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
        row: dict[str, Any] = {"job": int(job.name), "overrides": " ".join(overrides or []), "status": "failed"}
        summary_file = job / "summary.json"
        if summary_file.is_file():
            summary = json.loads(summary_file.read_text())
            row.update(
                map50=summary["metrics"]["map50"],
                map50_95=summary["metrics"]["map50_95"],
                coco_AP=summary["coco"]["AP"],
                epochs=summary.get("epochs_completed"),
                seconds=summary["seconds"],
                run_id=summary.get("run_id"),
                status="finished",
            )
        rows.append(row)
    return rows


def write_sweep_summary(sweep_dir: Path, metric: str = "map50") -> tuple[Path, Path]:
    """Write ``sweep_summary.csv`` and ``sweep_summary.png`` (``metric`` per job) into the sweep folder."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sweep_rows(sweep_dir)
    csv_path = sweep_dir / "sweep_summary.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    labels = [f"{r['job']}: {r['overrides']}" for r in rows]
    values = [float(r.get(metric) or 0.0) for r in rows]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(rows) + 1.5))
    ax.barh(range(len(rows)), values, color=["tab:blue" if r["status"] == "finished" else "tab:red" for r in rows])
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(metric)
    ax.set_title(f"sweep {sweep_dir.name}: {metric} per job (red: failed)")
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.3f}", va="center", fontsize=8)
    fig.tight_layout()
    png_path = sweep_dir / "sweep_summary.png"
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return csv_path, png_path


class SweepSummary(Callback):
    """Hydra callback: at the end of a multirun, write the sweep summary table and print where it is."""

    def __init__(self, metric: str = "map50") -> None:
        self.metric = metric

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        csv_path, png_path = write_sweep_summary(sweep_dir, self.metric)
        print(f"dronevision sweep: {csv_path}\n                   {png_path}")
