"""CPU inference speed and accuracy: every runtime and precision against ONNX Runtime FP32, with mAP50.

Takes a YOLOv8n ``.pt`` trained at 640 (``--weights``, or one trained here on the bundled aerial-cars data for
``--epochs`` and cached, the same model as ``bench_sliced.py``). With ``--prune-ratio`` (default 0.2) it then runs
``python -m dronevision.train`` twice from those weights, ``--finetune-epochs`` each, same settings: once as they
are (this run's ``.pt``: every row's mAP50 drop is against it) and once with ``prune.ratio`` (channel pruning, then
the same fine-tuning), so that the pruned model is judged against the model trained as long, not against a
shorter-trained one. Both are cached. Then:

1. exports the reference: ultralytics' own ONNX export of the ``.pt`` at 640 (static batch 1), run by a plain ONNX
   Runtime CPU session with ``--threads`` intra-op threads;
2. runs ``python -m dronevision.export`` (dynamic batch, ``export.int8=true export.openvino_int8=true``, calibrated on
   aerial-cars' train split): FP32 ONNX, INT8 QDQ ONNX (ONNX Runtime) and INT8 OpenVINO IR (NNCF, SiLU fused),
   each with mAP50 on the val split next to the ``.pt``'s (ultralytics' validator, every image letterboxed to 640);
   and the INT8 OpenVINO IR of the pruned model;
3. times each case with the benchmark stage's code: the same thread count, warm-up, a minimum measuring time split
   over ``--rounds`` interleaved rounds (a slow spell of a shared machine hits every case alike), sigma-clipped
   p50. Model-only: a preprocessed batch in, raw output out (what the reference session does). End to end: JPEG
   decode of 1920x1080 frames + letterbox + inference + NMS, one request at a time.

The fast rows: the OpenVINO INT8 IR taking uint8 BGR frames (OpenVINO converts and scales them inside the compiled
graph), then also with ``--batch`` images per request and ``--streams`` requests in flight (``Session.run_many``,
2x streams requests per timed call), then the same for the pruned model. Their mAP50 is the IR's as the export
measured it (ultralytics' OpenVINO backend: the same file and compiled precision; the uint8 input is the same
arithmetic).

    python scripts/bench_runtimes.py [--weights best.pt] [--prune-ratio 0.2] [--finetune-epochs 30] \\
        [--threads 2] [--min-time 6] [--rounds 3] [--batch 4] [--streams 2]

The rect row runs the fastest path on the 1920x1080 frames letterboxed to 384x640 (ultralytics' rectangular
letterbox, what footage gets with ``benchmark rect=true``): not the goal's 640x640, shown for footage throughput.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
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
from dronevision.benchmark.measure import input_hw
from dronevision.infer import open_session, read_model_info

log = logging.getLogger("bench_runtimes")

# Not the goal's 640x640: the same fastest path on 1920x1080 footage letterboxed as ultralytics' predict does, to
# 384x640 (the IR has a dynamic size). Its mAP50 is not measured: the val images are square, where rect is square.
RECT_CASE = "same, 1920x1080 frames at 384x640 (rect, footage)"
FASTEST_CASE = "OpenVINO INT8 IR, uint8 input, batched, streams"
PRUNED_CASE = "same, pruned + fine-tuned model"

REPO = Path(__file__).resolve().parents[1]
AERIAL_CARS = REPO / "data" / "samples" / "aerial-cars"


def reference_onnx(weights: Path, cache: Path, *, imgsz: int) -> Path:
    """ultralytics' plain ONNX export of ``weights`` (its defaults: static batch 1, simplified), cached."""
    from dronevision.export.convert import export_onnx

    out = cache / f"{weights.parent.parent.name}-{int(weights.stat().st_mtime)}-{imgsz}-reference.onnx"
    if not out.is_file():
        export_onnx(weights, imgsz=imgsz, opset=17, dynamic=False, simplify=True, out=out)
    return out


def fine_tune(base: Path, cache: Path, *, epochs: int, imgsz: int, threads: int, prune: float | None) -> Path:
    """``python -m dronevision.train`` from ``base`` for ``epochs`` (pruned first with ``prune``); cached best.pt."""
    out_dir = cache / f"{base.parent.parent.name}-{int(base.stat().st_mtime)}-ft{epochs}-prune{prune or 0:g}"
    summary = out_dir / "summary.json"
    done = json.loads(summary.read_text()) if summary.is_file() else {}
    if done.get("weights"):  # a finished run (a killed one's summary names no weights)
        log.info("cached fine-tuning: %s", out_dir)
        return Path(done["weights"])
    command = [
        sys.executable, "-m", "dronevision.train", f"model.weights={base}", f"train.epochs={epochs}",
        f"train.imgsz={imgsz}", "train.plots=false", f"threads={threads}", f"out_dir={out_dir}",
        f"mlflow.tracking_uri=sqlite:///{cache / 'mlflow.db'}", *([f"prune.ratio={prune}"] if prune else []),
    ]  # fmt: skip
    log.info("fine-tuning (cached for later runs): %s", " ".join(command[1:]))
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return Path(json.loads(summary.read_text())["weights"])


def run_export(
    weights: Path, out_dir: Path, *, imgsz: int, images: int, threads: int, ort_int8: bool = True
) -> dict[str, Any]:
    """``python -m dronevision.export`` with the INT8 variants (a process of its own); returns its summary."""
    command = [
        sys.executable, "-m", "dronevision.export", f"weights={weights}", f"out_dir={out_dir}", f"threads={threads}",
        f"export.imgsz={imgsz}", "export.dynamic=true", f"export.int8={str(ort_int8).lower()}",
        "export.openvino_int8=true", f"export.calibration={AERIAL_CARS}", f"export.calibration_images={images}",
        "export.force=true",
    ]  # fmt: skip
    log.info("exporting: %s", " ".join(command[1:]))
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return json.loads((out_dir / "summary.json").read_text())


def openvino_fp32_map50(onnx: Path, out_dir: Path, *, imgsz: int) -> float:
    """mAP50 of the FP32 ONNX run by OpenVINO at its default CPU precision (bf16 where the CPU has it)."""
    import openvino as ov

    from dronevision.dataset import load_yolo_dataset, write_data_yaml
    from dronevision.export.command import square_metrics
    from dronevision.export.openvino import write_ir
    from dronevision.infer import read_metadata_props

    folder = write_ir(ov.Core().read_model(str(onnx)), out_dir / "fp32_openvino_model", read_metadata_props(onnx))
    data_yaml = write_data_yaml(load_yolo_dataset(AERIAL_CARS), out_dir / "data" / "data.yaml")
    return square_metrics(folder.parent, data_yaml, split="val", imgsz=imgsz, out_dir=out_dir / "val")["map50"]


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=None, help="a YOLOv8n .pt (default: train one, cached)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs when training the model here")
    parser.add_argument("--prune-ratio", type=float, default=0.2, help="share of channels pruned (0: no pruned rows)")
    parser.add_argument("--finetune-epochs", type=int, default=30, help="epochs of both fine-tunings (pruned or not)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "dronevision-bench-sliced")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--calibration-images", type=int, default=128)
    parser.add_argument("--min-time", type=float, default=6.0, help="seconds of timed calls per case and mode")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds the min-time is split over")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=4, help="images per request on the fastest path")
    parser.add_argument("--streams", type=int, default=2, help="OpenVINO requests in flight on the fastest path")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    return parser


def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    args.cache.mkdir(parents=True, exist_ok=True)
    trained = "as given" if args.weights else f"{args.epochs} epochs"
    if args.weights is None:
        sys.path.insert(0, str(Path(__file__).parent))
        from bench_sliced import train_weights

        args.weights = train_weights(args.cache, epochs=args.epochs, imgsz=args.imgsz)
    weights, pruned = args.weights.resolve(), None
    if args.prune_ratio:
        tune = {"epochs": args.finetune_epochs, "imgsz": args.imgsz, "threads": args.threads}
        pruned = fine_tune(weights, args.cache, prune=args.prune_ratio, **tune)
        weights = fine_tune(weights, args.cache, prune=None, **tune)
    reference = reference_onnx(weights, args.cache, imgsz=args.imgsz)
    work = Path(tempfile.mkdtemp(prefix="bench-runtimes-", dir=args.cache))
    export = {"imgsz": args.imgsz, "images": args.calibration_images, "threads": args.threads}
    summary = run_export(weights, work / "export", **export)
    variants, pt_map50 = summary["variants"], summary["pt_metrics"]["map50"]
    ov_map50 = openvino_fp32_map50(Path(variants["fp32"]["path"]), work, imgsz=args.imgsz)

    fp32, int8, ir = (Path(variants[k]["path"]) for k in ("fp32", "int8", "int8_openvino"))
    # label, model, runtime, batch, mAP50 (None: not measured), open_session's options
    ir_map50 = variants["int8_openvino"]["map50"]
    fastest = {"streams": args.streams, "u8_input": True}
    cases = [
        ("ONNX Runtime FP32 (reference)", reference, "ort-cpu", 1, variants["fp32"]["map50"], {}),
        ("OpenVINO, FP32 ONNX, default precision", fp32, "openvino", 1, ov_map50, {}),
        ("OpenVINO, FP32 ONNX, f32", fp32, "openvino", 1, None, {"precision": "f32"}),
        ("ONNX Runtime INT8 QDQ", int8, "ort-cpu", 1, variants["int8"]["map50"], {}),
        ("OpenVINO INT8 IR (NNCF)", ir, "openvino", 1, ir_map50, {}),
        ("OpenVINO INT8 IR, uint8 input", ir, "openvino", 1, ir_map50, {"u8_input": True}),
        (FASTEST_CASE, ir, "openvino", args.batch, ir_map50, fastest),
    ]
    if pruned is not None:
        pruned_summary = run_export(pruned, work / "export-pruned", ort_int8=False, **export)
        pruned_ir = pruned_summary["variants"]["int8_openvino"]
        trained += (
            f" + {args.finetune_epochs} more; pruned: {args.prune_ratio:g} of the channels of that model pruned, then"
            f" the same {args.finetune_epochs} epochs (its .pt mAP50 {pruned_summary['pt_metrics']['map50']:.4f})"
        )
        cases.append((PRUNED_CASE, Path(pruned_ir["path"]), "openvino", args.batch, pruned_ir["map50"], fastest))
    cases.append((RECT_CASE, cases[-1][1], "openvino", args.batch, None, fastest))
    frames = random_frames(8, frame_wh=(1920, 1080))
    nms = {"conf": 0.25, "iou": 0.7, "max_det": 300}
    timing = {"warmup": 2, "min_time_s": args.min_time / args.rounds, "min_iters": 5, "max_iters": 2000}
    opened = []
    with fixed_threads(args.threads):
        for label, model, runtime, batch, map50, options in cases:
            info = read_model_info(model)
            hw = input_hw(info, frames[0], rect=label == RECT_CASE)  # (imgsz, imgsz) but for the rect case
            info = replace(info, imgsz=hw)
            session = open_session(model, runtime, threads=args.threads, batch=batch, info=info, **options)
            x = model_tensor(frames, batch=batch, imgsz=hw, dtype=session.input_dtype)
            calls = (make_model_call(session, x), make_e2e_step(session, frames, imgsz=hw, nms=nms, end2end=False))
            for _ in range(args.warmup):
                for call in calls:
                    call()
            per_call = batch * requests_per_call(session)
            opened.append((label, session, calls, per_call, map50, {"model": [], "e2e": []}))
        for i in range(args.rounds):
            for label, session, calls, _, _, samples in opened:
                log.info("round %d/%d: %s (%s, %s)", i + 1, args.rounds, label, session.provider, session.precision)
                samples["model"].append(time_calls(calls[0], **timing))
                samples["e2e"].append(time_calls(calls[1], **timing))
    for _, session, *_ in opened:
        session.close()
    shutil.rmtree(work)

    rows = []
    for label, session, _, per_call, map50, samples in opened:
        model_fps = latency_stats(np.concatenate(samples["model"]), batch=per_call)["fps"]
        rows.append({
            "case": label, **session.describe(), "ms_per_image": round(1000 / model_fps, 2), "fps": model_fps,
            "e2e_fps": latency_stats(np.concatenate(samples["e2e"]), batch=per_call)["fps"],
            "round_fps": [latency_stats(t, batch=per_call)["fps"] for t in samples["model"]],
            "map50": map50, "map50_drop": None if map50 is None else round((pt_map50 - map50) * 100, 2),
        })  # fmt: skip
    ref = rows[0]
    for row in rows:
        row["speedup"] = round(row["fps"] / ref["fps"], 2)
        row["e2e_speedup"] = round(row["e2e_fps"] / ref["e2e_fps"], 2)
        row["round_speedups"] = [round(f / r, 2) for f, r in zip(row["round_fps"], ref["round_fps"], strict=True)]
    print_table(rows, args, pt_map50, trained)
    if args.out:
        record = {"rows": rows, "pt_map50": pt_map50, "weights": str(weights), "pruned": pruned and str(pruned)}
        args.out.write_text(json.dumps(record, indent=2))
    return rows


def print_table(rows: list[dict[str, Any]], args: argparse.Namespace, pt_map50: float, trained: str) -> None:
    """The Markdown table (the command's final human summary); ``trained``: how the .pt (and the pruned model) came
    to be."""

    def fmt(value: Any, spec: str, suffix: str = "") -> str:
        return "–" if value is None else f"{value:{spec}}{suffix}"

    print(
        f"\nYOLOv8n at {args.imgsz}x{args.imgsz}, {args.threads} threads, {cpu_name()} ({os.cpu_count()} cores);"
        f" .pt ({trained}) mAP50 {pt_map50:.4f} on aerial-cars val;"
        " end to end = 1920x1080 JPEG decode + letterbox + NMS\n"
    )
    print(
        "| case | precision | batch | streams | ms/image | frames/s | speed-up | end-to-end frames/s "
        "| end-to-end speed-up | mAP50 | drop (pts) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['case']} | {r['precision']} | {r['input_shape'][0]} | {r['streams']} | {r['ms_per_image']:.2f}"
            f" | {r['fps']:.1f} | {r['speedup']:.2f}x | {fmt(r['e2e_fps'], '.1f')}"
            f" | {fmt(r['e2e_speedup'], '.2f', 'x')} | {fmt(r['map50'], '.4f')} | {fmt(r['map50_drop'], '.2f')} |"
        )
    ref = rows[0]
    print(f"\nPer round (model-only): reference {', '.join(f'{1000 / f:.1f}' for f in ref['round_fps'])} ms/image")
    for r in rows:
        if r["case"] in (FASTEST_CASE, PRUNED_CASE):
            speedups = ", ".join(f"{s:.2f}x" for s in r["round_speedups"])
            print(f"  {r['case']}: {speedups} the reference of the same round")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main(get_args_parser().parse_args())
