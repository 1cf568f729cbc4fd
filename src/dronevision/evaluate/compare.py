"""``python -m dronevision.evaluate.compare runs=[<id>,...]`` (or ``experiment=<name>``): checkpoints side by side.

Each run's numbers come from its own evaluation (the ``evaluate/metrics.json`` artifact that
``python -m dronevision.evaluate`` logs to a model's run) or, failing that, from evaluating its ``weights/best.pt``
here; speed is the best end-to-end frames/s the benchmark logged to the run, else the evaluation's images/s.
Writes ``compare.csv``, ``compare.md`` and ``compare.png``, logged to a new MLflow run.
"""

from __future__ import annotations

import csv
import json
import logging
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from dronevision.cli import hydra_main, resolve_out_dir, write_summary
from dronevision.errors import DroneVisionError

log = logging.getLogger(__name__)

HEADLINE = ("AP", "AP50", "AP75", "AP_small")


# --- pure core -------------------------------------------------------------------------------------------------


def best_fps(metrics: Mapping[str, float]) -> float | None:
    """The best end-to-end frames/s among a run's ``benchmark/<runtime>/b<batch>/e2e_fps`` metrics.

    Examples:
        >>> best_fps({"benchmark/openvino/b1/e2e_fps": 40.0, "benchmark/ort-cpu/b1/e2e_fps": 20.0, "x": 1})
        40.0
        >>> best_fps({}) is None
        True
    """
    values = [v for k, v in metrics.items() if k.startswith("benchmark/") and k.endswith("/e2e_fps")]
    return max(values) if values else None


def compare_rows(entries: Sequence[Mapping[str, Any]], protocol: str) -> tuple[list[str], list[list[Any]]]:
    """The side-by-side table: one row per run, headline metrics, per-class AP, speed.

    Examples:
        >>> e = {"run_id": "a", "name": "r", "metrics": {"coco": {"overall": {"AP": .5, "AP50": .7, "AP75": .4,
        ...      "AP_small": .2}, "per_class": {"car": {"AP": .6}}}}, "fps": 10.0, "speed_source": "benchmark"}
        >>> header, rows = compare_rows([e], "coco")
        >>> header[2:]
        ['AP', 'AP50', 'AP75', 'AP_small', 'AP car', 'frames/s', 'speed from']
        >>> rows
        [['a', 'r', 0.5, 0.7, 0.4, 0.2, 0.6, 10.0, 'benchmark']]
    """
    classes: list[str] = []
    for e in entries:
        for name in e["metrics"][protocol]["per_class"]:
            if name not in classes:
                classes.append(name)
    header = ["run_id", "name", *HEADLINE, *(f"AP {c}" for c in classes), "frames/s", "speed from"]
    rows = []
    for e in entries:
        m = e["metrics"][protocol]
        per = m["per_class"]
        rows.append(
            [
                e["run_id"],
                e["name"],
                *(m["overall"].get(k) for k in HEADLINE),
                *((per.get(c) or {}).get("AP") for c in classes),
                e["fps"],
                e["speed_source"],
            ]
        )
    return header, rows


# --- I/O adapters ----------------------------------------------------------------------------------------------


def recorded_metrics(uri: str, run_id: str, tmp: Path) -> dict[str, Any] | None:
    from dronevision.mlflow_run import fetch_artifact

    try:
        return json.loads(fetch_artifact(uri, run_id, "evaluate/metrics.json", tmp / run_id).read_text())
    except DroneVisionError:
        return None


def evaluate_run(cfg: DictConfig, run: Any, tmp: Path, protocol: str) -> dict[str, Any]:
    """Evaluate a run's best.pt on the configured dataset (or the run's own)."""
    from dronevision.evaluate.command import (
        compute_metrics,
        default_model_settings,
        load_evaluation_detector,
        load_ground_truth,
        predict,
    )
    from dronevision.infer import SliceSettings
    from dronevision.mlflow_run import fetch_artifact

    uri, run_id = cfg.mlflow.tracking_uri, run.info.run_id
    dataset = cfg.dataset.path or run.data.params.get("dataset.path")
    if not dataset:
        raise DroneVisionError(f"run {run_id} has no evaluation and no dataset.path param: give dataset.path=<dir>")
    weights = fetch_artifact(uri, run_id, "weights/best.pt", tmp / run_id)
    truth = load_ground_truth(Path(dataset), cfg.dataset.split)
    model = default_model_settings()
    detector = load_evaluation_detector(weights, model, threads=cfg.threads)
    settings = SliceSettings.from_config(cfg.get("slicing"))  # the notebook's config has none: plain inference
    predictions, seconds = predict(detector, truth, settings=settings, batch=int(model["batch"]))
    return {protocol: compute_metrics(protocol, truth, predictions), "seconds_per_image": seconds}


def plot_compare(header: Sequence[str], rows: Sequence[Sequence[Any]], out: Path) -> Path:
    """Grouped bars of the headline metrics and per-class AP per run, and frames/s per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = [f"{r[1]} ({r[0][:8]})" for r in rows]
    metric_cols = [i for i, h in enumerate(header) if h in HEADLINE or h.startswith("AP ")]
    fps_col = header.index("frames/s")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [3, 1]})
    width = 0.8 / max(len(rows), 1)
    x = np.arange(len(metric_cols))
    for k, row in enumerate(rows):
        ax1.bar(x + k * width, [row[i] or 0.0 for i in metric_cols], width, label=labels[k])
    ax1.set_xticks(x + width * (len(rows) - 1) / 2, [header[i] for i in metric_cols], rotation=30, ha="right")
    ax1.set(ylabel="value", ylim=(0, 1), title="accuracy")
    ax1.legend(fontsize=7)
    ax2.bar(range(len(rows)), [row[fps_col] or 0.0 for row in rows], color="tab:gray")
    ax2.set_xticks(range(len(rows)), [r[0][:8] for r in rows], rotation=30, ha="right")
    ax2.set(ylabel="frames/s", title="speed")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def run(cfg: DictConfig) -> dict[str, Any]:
    """Compare runs; returns summary.json's content."""
    from dronevision.benchmark.report import md_table
    from dronevision.evaluate.command import check_protocols
    from dronevision.mlflow_run import MlflowRun, find_runs

    started = time.perf_counter()
    out_dir = resolve_out_dir(cfg)
    (protocol,) = check_protocols(cfg.protocol)
    run_ids = list(cfg.runs) if cfg.runs else None
    if not run_ids and not cfg.experiment:
        raise DroneVisionError("name the runs to compare: runs=[<run_id>,...] or experiment=<name>")
    runs = find_runs(cfg.mlflow.tracking_uri, run_ids=run_ids, experiment=cfg.experiment)[: int(cfg.max_runs)]
    if not runs:
        raise DroneVisionError(f"experiment '{cfg.experiment}' has no finished runs to compare")
    entries = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in runs:
            metrics = recorded_metrics(cfg.mlflow.tracking_uri, r.info.run_id, Path(tmp))
            source = "recorded"
            if metrics is None or protocol not in metrics:
                metrics, source = evaluate_run(cfg, r, Path(tmp), protocol), "evaluated here"
            fps = best_fps(r.data.metrics)
            speed_source = "benchmark e2e"
            if fps is None and metrics.get("seconds_per_image"):
                fps, speed_source = 1.0 / metrics["seconds_per_image"], "evaluation"
            entries.append(
                {
                    "run_id": r.info.run_id,
                    "name": r.info.run_name,
                    "metrics": metrics,
                    "metrics_source": source,
                    "fps": fps,
                    "speed_source": speed_source if fps is not None else "none",
                }
            )
    header, rows = compare_rows(entries, protocol)
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "compare.csv").open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    fmt = [[f"{v:.3f}" if isinstance(v, float) else ("-" if v is None else v) for v in row] for row in rows]
    (out_dir / "compare.md").write_text(md_table(header, fmt) + "\n")
    plot_compare(header, rows, out_dir / "compare.png")
    tracker = MlflowRun.from_config(cfg.mlflow, out_dir).start(
        tags={"dronevision.stage": "compare", "compared_runs": ",".join(e["run_id"] for e in entries)}
    )
    for name in ("compare.csv", "compare.md", "compare.png"):
        tracker.log_artifact(out_dir / name, "compare")
    tracker.end("FINISHED")
    summary = {
        "protocol": protocol,
        "runs": [
            {"run_id": e["run_id"], "name": e["name"], "metrics_source": e["metrics_source"], "fps": e["fps"]}
            for e in entries
        ],
        "table": {"header": header, "rows": rows},
        "files": [str(out_dir / n) for n in ("compare.csv", "compare.md", "compare.png")],
        "mlflow": tracker.summary(),
        "out_dir": str(out_dir),
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_summary(out_dir, summary)
    print(f"dronevision compare: {len(entries)} runs ({protocol} protocol)\n" + (out_dir / "compare.md").read_text())
    return summary


main = hydra_main("compare", run)

if __name__ == "__main__":
    main()
