"""YOLO26n against YOLOv8n: accuracy and CPU speed, same training budget, same machine, same run.

1. builds the bundled aerial-cars images into a dataset (``python -m dronevision.dataset``, split by flight, as the
   demo does) and trains each model from scratch with ``python -m dronevision.train model=<m> train.epochs=E
   train.imgsz=640`` (identical settings; both cached by model and epochs);
2. reads each ``.pt``'s mAP50 and mAP50-95 on the val split from its training summary (ultralytics' validator; the
   COCO protocol's AP50/AP from the same evaluation is printed beside it);
3. exports each with ``python -m dronevision.export`` (dynamic FP32 ONNX and the OpenVINO INT8 IR, NNCF), whose
   parity check gives the IR's mAP50 on val;
4. times, per model, in ``--rounds`` interleaved rounds with the benchmark stage's code: ONNX Runtime FP32 (batch 1)
   and the fastest CPU path measured for YOLOv8n (the OpenVINO INT8 IR with uint8 input, ``--batch`` images per
   request, ``--streams`` requests in flight). End to end = 1920x1080 JPEG decode + letterbox + inference + decoding
   into boxes through ``dronevision.infer`` (NMS for YOLOv8n; YOLO26's end-to-end head needs none).

    python scripts/bench_yolo26.py [--epochs 10] [--threads 2] [--min-time 6] [--rounds 3] [--batch 4] [--streams 2]

YOLO26 becomes the default model only if it wins on both accuracy and speed; the verdict line says which it does.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

import dronevision  # noqa: F401  (offline environment before ultralytics is imported)
from dronevision.benchmark import (
    cpu_name,
    fixed_threads,
    latency_stats,
    make_e2e_step,
    make_model_call,
    model_tensor,
    random_frames,
    requests_per_call,
    time_calls,
)
from dronevision.infer import open_session, read_model_info

log = logging.getLogger("bench_yolo26")

REPO = Path(__file__).resolve().parents[1]
AERIAL_CARS = REPO / "data" / "samples" / "aerial-cars"
MODELS = ("yolov8n", "yolo26n")


def run_command(args: list[str]) -> None:
    """A dronevision command in a process of its own (its output in the log only when it fails)."""
    log.info("running: %s", " ".join(args))
    done = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def build_dataset(cache: Path) -> Path:
    """aerial-cars as a built dataset, split by flight (cached)."""
    out = cache / "dataset"
    if not (out / "data.yaml").is_file():
        run_command(
            ["dronevision.dataset", "source.format=yolo", f"source.path={AERIAL_CARS}", "split=roboflow_flights",
             f"out_dir={out}", "overwrite=true"]
        )  # fmt: skip
    return out


def train(model: str, dataset: Path, cache: Path, *, epochs: int, imgsz: int, threads: int) -> dict[str, Any]:
    """``python -m dronevision.train`` for ``model``; its summary.json (cached when finished)."""
    out = cache / f"{model}-e{epochs}-{imgsz}"
    summary = out / "summary.json"
    done = json.loads(summary.read_text()) if summary.is_file() else {}
    if not done.get("weights"):
        run_command(
            ["dronevision.train", f"model={model}", f"dataset.path={dataset}", f"train.epochs={epochs}",
             f"train.imgsz={imgsz}", "train.plots=false", f"threads={threads}", f"out_dir={out}",
             f"mlflow.tracking_uri=sqlite:///{cache / 'mlflow.db'}", "mlflow.experiment=bench-yolo26"]
        )  # fmt: skip
        done = json.loads(summary.read_text())
    return done


def export(weights: Path, dataset: Path, out: Path, *, imgsz: int, threads: int) -> dict[str, Any]:
    """``python -m dronevision.export`` with the OpenVINO INT8 IR; its summary.json (cached)."""
    summary = out / "summary.json"
    if not summary.is_file():
        run_command(
            ["dronevision.export", f"weights={weights}", f"out_dir={out}", f"threads={threads}",
             f"export.imgsz={imgsz}", "export.dynamic=true", "export.openvino_int8=true",
             f"export.calibration={dataset}", "export.force=true"]
        )  # fmt: skip
    return json.loads(summary.read_text())


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10, help="training epochs of each model (the same budget)")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "dronevision-bench-yolo26")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-time", type=float, default=6.0, help="seconds of timed calls per case and mode")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds the min-time is split over")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4, help="images per request on the fastest path")
    parser.add_argument("--streams", type=int, default=2, help="OpenVINO requests in flight on the fastest path")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    return parser


def main(args: argparse.Namespace) -> dict[str, Any]:
    args.cache.mkdir(parents=True, exist_ok=True)
    dataset = build_dataset(args.cache)
    trained = {
        m: train(m, dataset, args.cache, epochs=args.epochs, imgsz=args.imgsz, threads=args.threads) for m in MODELS
    }
    exported = {
        m: export(Path(s["weights"]), dataset, args.cache / f"{m}-e{args.epochs}-export", imgsz=args.imgsz,
                  threads=args.threads)
        for m, s in trained.items()
    }  # fmt: skip
    frames = random_frames(8, frame_wh=(1920, 1080))
    nms = {"conf": 0.25, "iou": 0.7, "max_det": 300}
    timing = {"warmup": 1, "min_time_s": args.min_time / args.rounds, "min_iters": 5, "max_iters": 2000}
    fastest = {"streams": args.streams, "u8_input": True}
    cases = []  # (model, path, label, runtime, batch, options)
    for m, summary in exported.items():
        variants = summary["variants"]
        cases.append((m, Path(variants["fp32"]["path"]), "ONNX Runtime FP32", "ort-cpu", 1, {}))
        cases.append((m, Path(variants["int8_openvino"]["path"]), "OpenVINO INT8 IR, uint8, batched, streams",
                      "openvino", args.batch, fastest))  # fmt: skip
    opened = []
    with fixed_threads(args.threads):
        for m, path, label, runtime, batch, options in cases:
            info = read_model_info(path)
            info = replace(info, imgsz=(args.imgsz, args.imgsz))
            session = open_session(path, runtime, threads=args.threads, batch=batch, info=info, **options)
            x = model_tensor(frames, batch=batch, imgsz=info.imgsz, dtype=session.input_dtype)
            step = make_e2e_step(session, frames, imgsz=info.imgsz, nms=nms, end2end=info.end2end)
            calls = (make_model_call(session, x), step)
            for _ in range(args.warmup):
                for call in calls:
                    call()
            per_call = batch * requests_per_call(session)
            opened.append((m, label, info, session, calls, per_call, {"model": [], "e2e": []}))
        for i in range(args.rounds):
            for m, label, _, _, calls, _, samples in opened:
                log.info("round %d/%d: %s %s", i + 1, args.rounds, m, label)
                samples["model"].append(time_calls(calls[0], **timing))
                samples["e2e"].append(time_calls(calls[1], **timing))
    rows = []
    for m, label, info, session, _, per_call, samples in opened:
        session.close()
        model_fps = latency_stats(np.concatenate(samples["model"]), batch=per_call)["fps"]
        e2e_fps = latency_stats(np.concatenate(samples["e2e"]), batch=per_call)["fps"]
        variant = exported[m]["variants"]["fp32" if label.startswith("ONNX") else "int8_openvino"]
        rows.append({
            "model": m, "case": label, "end2end_head": info.end2end, **session.describe(),
            "ms_per_image": 1000 / model_fps, "e2e_ms_per_image": 1000 / e2e_fps, "map50": variant.get("map50"),
        })  # fmt: skip
    accuracy = {
        m: {
            "map50": s["metrics"]["map50"],
            "map50_95": s["metrics"]["map50_95"],
            "coco_AP50": s["coco"]["AP50"],
            "coco_AP": s["coco"]["AP"],
            "train_s": s.get("seconds"),
        }
        for m, s in trained.items()
    }
    record = {"rows": rows, "accuracy": accuracy, "epochs": args.epochs, "cpu": cpu_name()}
    print_report(record, args)
    if args.out:
        args.out.write_text(json.dumps(record, indent=2, default=str))
    return record


def print_report(record: dict[str, Any], args: argparse.Namespace) -> None:
    """The command's final human summary: accuracy, speed, ratios YOLO26n / YOLOv8n and the verdict."""
    acc, rows = record["accuracy"], record["rows"]
    print(
        f"\nYOLO26n vs YOLOv8n, both trained from scratch {args.epochs} epochs at {args.imgsz} on aerial-cars "
        f"(split by flight), {args.threads} threads, {cpu_name()} ({os.cpu_count()} cores)\n"
    )
    print("| model | mAP50 (.pt) | mAP50-95 (.pt) | COCO AP50 | COCO AP | training s |")
    print("|---|---:|---:|---:|---:|---:|")
    for m in MODELS:
        a = acc[m]
        train_s = f"{a['train_s']:.0f}" if a["train_s"] else "–"
        print(
            f"| {m} | {a['map50']:.4f} | {a['map50_95']:.4f} | {a['coco_AP50'] or 0:.4f} | {a['coco_AP'] or 0:.4f} "
            f"| {train_s} |"
        )
    print("\n| model | case | precision | batch | streams | ms/image (model) | ms/image (end to end) | mAP50 |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        map50 = "–" if r["map50"] is None else f"{r['map50']:.4f}"
        print(
            f"| {r['model']} | {r['case']} | {r['precision']} | {r['input_shape'][0]} | {r['streams']} "
            f"| {r['ms_per_image']:.2f} | {r['e2e_ms_per_image']:.2f} | {map50} |"
        )
    by = {(r["model"], r["case"]): r for r in rows}
    print("\nYOLO26n / YOLOv8n (below 1: YOLO26n is faster):")
    faster = []
    for case in dict.fromkeys(r["case"] for r in rows):
        a, b = by[("yolo26n", case)], by[("yolov8n", case)]
        ratio = a["e2e_ms_per_image"] / b["e2e_ms_per_image"]
        faster.append(ratio < 1)
        print(f"  {case}: end to end {ratio:.2f}x, model only {a['ms_per_image'] / b['ms_per_image']:.2f}x")
    d50 = acc["yolo26n"]["map50"] - acc["yolov8n"]["map50"]
    d95 = acc["yolo26n"]["map50_95"] - acc["yolov8n"]["map50_95"]
    print(f"  mAP50 {d50 * 100:+.2f} points, mAP50-95 {d95 * 100:+.2f} points")
    wins_accuracy, wins_speed = d50 > 0 and d95 > 0, all(faster)
    verdict = "make YOLO26n the default" if wins_accuracy and wins_speed else "keep YOLOv8n the default"
    won = {True: "won", False: "not won"}
    print(f"verdict: accuracy {won[wins_accuracy]}, speed {won[wins_speed]}: {verdict}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main(get_args_parser().parse_args())
