"""The ``python -m dronevision.benchmark`` command: checks, measuring, report, MLflow, summary."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dronevision.benchmark.core import (
    MODES,
    capacity,
    measured_entries,
    pick_best,
    summarise_runtimes,
    track_capacity,
)
from dronevision.benchmark.measure import host_facts, load_frames, make_plan, measure_grid
from dronevision.benchmark.report import plot_fps, report_markdown
from dronevision.cli import hydra_main, model_overrides, resolve_out_dir, write_summary
from dronevision.errors import DroneVisionError, first_line
from dronevision.fsio import write_text
from dronevision.mlflow_run import RunRef

log = logging.getLogger(__name__)


def _track_capacity(cfg: DictConfig, target: dict[str, Any]) -> dict[str, Any] | None:
    """The capacity measured by a track run, when ``track_summary=<summary.json>`` is given."""
    if not cfg.get("track_summary"):
        return None
    path = Path(str(cfg.track_summary)).expanduser()
    if path.is_dir():
        path = path / "summary.json"
    try:
        track = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DroneVisionError(f"track_summary {path}: cannot be read as JSON ({first_line(e)})") from None
    return track_capacity(
        track,
        footage_hours_per_week=target["footage_hours_per_week"],
        hours_per_week_per_machine=target["hours_per_week_per_machine"],
        target_sightings_per_week=target["target_sightings_per_week"],
        source=str(path),
    )


def run(cfg: DictConfig) -> dict[str, Any]:
    """Benchmark ``cfg.model`` over ``cfg.runtime`` × ``cfg.batch``; returns summary.json's content."""
    started = time.perf_counter()
    plan = make_plan(cfg)  # everything the user gave is checked before anything is written
    frames, images = load_frames(cfg)
    mlflow_run = _mlflow_run(cfg, plan.info.path)
    objects, objects_source = plan.target["objects_per_frame"], "target.objects_per_frame"
    if objects is None and images.get("objects_per_frame") is not None:
        objects, objects_source = images["objects_per_frame"], f"mean boxes per image of {images['source']}"
    target = {**plan.target, "objects_per_frame": objects, "objects_per_frame_source": objects_source}
    target["track"] = _track_capacity(cfg, target)

    entries = measure_grid(plan, frames, cfg)
    keys = ("footage_hours_per_week", "sample_fps", "tiles_per_frame", "hours_per_week_per_machine")
    for _, _, res in measured_entries(entries):
        res["capacity"] = capacity(
            res["e2e"]["fps"],
            **{k: target[k] for k in keys},
            objects_per_frame=objects,
            target_sightings_per_week=target["target_sightings_per_week"],
        )
    best = pick_best(entries)
    info = plan.info
    result = {
        "model": str(info.path),
        "input": {
            "name": info.input_name,
            "shape": list(info.input_shape),
            "dtype": info.input_dtype,
            "imgsz": list(info.imgsz),
            "stride": info.stride,
            "classes": len(info.names),
        },
        "threads": plan.threads,
        "host": host_facts(),
        "timing": {k: cfg[k] for k in ("warmup", "min_time_s", "min_iters", "max_iters")}
        | {
            "sigma_clip": {"sigma": 2.0, "max_iters": 3},
            "latency": "per call of requests_per_call batches; frames/s = batch * requests_per_call / p50",
        },
        "images": images,
        "nms": OmegaConf.to_container(cfg.nms),
        "target": target,
        "runtimes": entries,
        "best": best,
    }
    out_dir = resolve_out_dir(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(out_dir / "benchmark.json", json.dumps(result, indent=2, default=str) + "\n")
    write_text(out_dir / "report.md", report_markdown(result))
    plot_fps(result, out_dir / "fps.png")

    best_capacity = None
    if best is not None:
        best_capacity = {"runtime": best["runtime"], "batch": best["batch"]}
        best_capacity |= entries[best["runtime"]]["batches"][str(best["batch"])]["capacity"]
    summary: dict[str, Any] = {
        "model": str(info.path),
        "input_shape": list(info.input_shape),
        "threads": plan.threads,
        "runtimes": summarise_runtimes(entries),
        "best": best,
        "capacity": best_capacity,
        "target": target,
        "run_id": mlflow_run.run_id if mlflow_run else None,
        "tracking_uri": mlflow_run.tracking_uri if mlflow_run else None,
        "out_dir": str(out_dir),
        "seconds": round(time.perf_counter() - started, 2),
    }
    _track(summary, entries, out_dir, mlflow_run)
    _print_summary(summary, entries)
    return summary


def _mlflow_run(cfg: DictConfig, model: Path) -> RunRef | None:
    """The MLflow run the benchmark adds to: ``mlflow.run_id`` (in ``mlflow.tracking_uri``, else
    ``$MLFLOW_TRACKING_URI``), else the model's training run (:func:`dronevision.mlflow_run.find_training_run`), in
    the store ``mlflow.tracking_uri`` names when it is set."""
    from dronevision.mlflow_run import find_training_run

    if cfg.mlflow.run_id is not None:
        uri = cfg.mlflow.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            raise DroneVisionError(f"MLflow run {cfg.mlflow.run_id} (from mlflow.run_id) needs mlflow.tracking_uri")
        return RunRef(str(uri), str(cfg.mlflow.run_id), found_in="config")
    found = find_training_run(model)
    if found is not None and cfg.mlflow.tracking_uri:
        found = replace(found, tracking_uri=str(cfg.mlflow.tracking_uri))
    return found


def _track(summary: dict[str, Any], entries: Mapping[str, Any], out_dir: Path, found: RunRef | None) -> None:
    """Write summary.json and add the numbers and files to the model's MLflow run, when there is one."""
    from dronevision.mlflow_run import MlflowRun

    if found is None:
        reason = "no MLflow run: none given (mlflow.run_id) or found for the model"
        summary["mlflow"] = MlflowRun.untracked(reason, found_in=None)
        write_summary(out_dir, summary)
        return
    tracker = MlflowRun.attach(found.tracking_uri, found.run_id, out_dir=out_dir)
    metrics: dict[str, float] = {}
    for name, entry in entries.items():
        for batch, res in entry.get("batches", {}).items():
            if "skipped" in res:
                continue
            for mode in MODES:
                metrics[f"benchmark/{name}/b{batch}/{mode}_p50_ms"] = res[mode]["p50_ms"]
                metrics[f"benchmark/{name}/b{batch}/{mode}_p90_ms"] = res[mode]["p90_ms"]
                metrics[f"benchmark/{name}/b{batch}/{mode}_fps"] = res[mode]["fps"]
            metrics[f"benchmark/{name}/b{batch}/machines_needed"] = res["capacity"]["machines_needed"]
    tracker.log_metrics(metrics)
    best = summary["best"]
    tracker.set_tags(
        {
            "benchmark.best": f"{best['runtime']} batch {best['batch']}" if best else "none",
            "benchmark.threads": summary["threads"],
            "benchmark.passes": summary["capacity"]["passes"] if summary["capacity"] else "none",
        }
    )
    folder = f"benchmark/{out_dir.name}"
    for name in ("benchmark.json", "report.md", "fps.png"):
        tracker.log_artifact(out_dir / name, folder)
    summary["mlflow"] = tracker.summary(found_in=found.found_in)
    tracker.log_artifact(write_summary(out_dir, summary), folder)
    if summary["mlflow"]["ok"] != tracker.active:  # the last upload failed
        summary["mlflow"] = tracker.summary(found_in=found.found_in)
        write_summary(out_dir, summary)


def _print_summary(summary: Mapping[str, Any], entries: Mapping[str, Any]) -> None:
    lines = [f"dronevision benchmark: done in {summary['seconds']:.0f} s ({summary['threads']} threads)"]
    for name, entry in entries.items():
        if "skipped" in entry:
            lines.append(f"  {name:<9} skipped: {entry['skipped']}")
            continue
        for batch, r in entry["batches"].items():
            if "skipped" in r:
                lines.append(f"  {name:<9} batch {batch:<3} skipped: {r['skipped']}")
                continue
            m, calls = r["model_only"], r.get("requests_per_call", 1)
            per = f" per {calls} requests" if calls > 1 else ""
            lines.append(
                f"  {name:<9} batch {batch:<3} {r['provider']} {r['precision']}: model {m['p50_ms']:.1f} ms{per}"
                f" ({m['fps']:.1f} frames/s), end to end {r['e2e']['p50_ms']:.1f} ms{per}"
                f" ({r['e2e']['fps']:.1f} frames/s), {r['capacity']['machines_needed']} machine(s) for the target"
            )
    cap = summary["capacity"]
    if cap:
        verdict = "passes" if cap["passes"] else "fails"
        lines.append(
            f"  target   {summary['target']['footage_hours_per_week']} footage h/week: best {cap['runtime']} batch"
            f" {cap['batch']} carries {cap['footage_hours_per_week_per_machine']:.0f} h/week per machine,"
            f" {cap['machines_needed']} machine(s) needed; {verdict} (one machine)"
        )
    tracked = summary["target"].get("track")
    if tracked:
        m = tracked["measured"]
        lines.append(
            f"  measured on a track run: {m['footage_hours_per_machine_hour']:.2f} footage h per machine-hour end to"
            f" end, {tracked['machines_needed']} machine(s) for the target; {m['sightings_per_footage_hour']:.1f}"
            f" sightings per footage hour, {tracked['sightings_per_week']:,.0f} a week"
        )
    lines.append(f"  report   {Path(summary['out_dir']) / 'report.md'}")
    if summary["mlflow"]["ok"]:
        lines.append(f"  mlflow   added to run {summary['run_id']} at {summary['tracking_uri']}")
    else:
        lines.append(f"  mlflow   not logged: {summary['mlflow']['error']}")
    print("\n".join(lines))


_hydra_main = hydra_main("benchmark", run)


def main() -> None:
    """``python -m dronevision.benchmark model=<file.onnx> out_dir=<dir> [key=value ...]``."""
    sys.argv[1:] = model_overrides(sys.argv[1:], to="onnx")
    _hydra_main()
