"""Inference speed on the CPU: OpenVINO (and an INT8 model on ONNX Runtime) against ONNX Runtime CPU FP32.

Builds YOLOv8n from ultralytics' architecture YAML (random weights: the speed does not depend on them), exports it
to ONNX at 640 without downloading anything, and times each runtime with the benchmark stage's own code: a fixed
thread count, warm-up, a minimum measuring time, sigma-clipping; model-only (a preprocessed tensor) and end to end
(JPEG decode of a 1920x1080 frame + letterbox + inference + NMS). Prints a Markdown table of p50 latency and
frames/s with the speed-up against ORT CPU FP32, measured in the same run.

    python scripts/bench_runtimes.py [--threads 2] [--imgsz 640] [--min-time 3] [--rounds 3] [--int8 model_int8.onnx]

The cases are timed in interleaved rounds (``--rounds``) and each case's samples pooled, so that a slow spell of a
shared machine does not land on one case only.

OpenVINO runs twice: with its default precision for the CPU (bf16 where the CPU has native bf16, as AVX512-BF16
or AMX), and forced to f32, like for like with the reference.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from dronevision.benchmark import (
    cpu_name,
    fixed_threads,
    latency_stats,
    make_e2e_step,
    model_tensor,
    random_frames,
    time_calls,
)
from dronevision.runtime import available, open_session, read_model_info

log = logging.getLogger("bench_runtimes")


def export_yolov8n(folder: Path, *, imgsz: int) -> Path:
    """YOLOv8n with random weights, as ONNX (static batch 1, simplified, ultralytics metadata)."""
    from ultralytics import YOLO

    pt = folder / "yolov8n.pt"
    YOLO("yolov8n.yaml").save(pt)
    return Path(YOLO(str(pt)).export(format="onnx", imgsz=imgsz, simplify=True, device="cpu", verbose=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--min-time", type=float, default=3.0, help="seconds of timed calls per case and mode")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds the min-time is split over")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--int8", type=Path, default=None, help="an INT8 ONNX of the same model, run on ORT CPU")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_yolov8n(Path(tmp), imgsz=args.imgsz)
        cases = [("ORT CPU FP32 (reference)", fp32, "ort-cpu", None)]
        if available("openvino") is None:
            cases += [
                ("OpenVINO, default precision", fp32, "openvino", None),
                ("OpenVINO f32", fp32, "openvino", "f32"),
            ]
        else:
            log.warning("OpenVINO skipped: %s", available("openvino"))
        if args.int8 is not None:
            cases.append(("ORT CPU INT8", args.int8.resolve(), "ort-cpu", None))
        frames = random_frames(8, frame_wh=(1920, 1080))
        nms = {"conf": 0.25, "iou": 0.7, "max_det": 300}
        opened, reference_out = [], None
        with fixed_threads(args.threads):
            for label, model, runtime, precision in cases:
                info = read_model_info(model)
                session = open_session(model, runtime, threads=args.threads, batch=1, info=info, precision=precision)
                x = model_tensor(frames, batch=1, imgsz=info.imgsz[0], dtype=session.input_dtype)
                out = session.run(x).astype(np.float32)
                reference_out = out if reference_out is None else reference_out
                same_weights = model == fp32  # an --int8 file may come from other weights: no comparison
                diff = float(np.abs(out - reference_out).max()) if same_weights else float("nan")
                step = make_e2e_step(session, frames, imgsz=info.imgsz[0], nms=nms, end2end=info.end2end)
                for _ in range(args.warmup):
                    step()
                opened.append((label, session, x, step, diff, {"model_only": [], "e2e": []}))
            # Interleaved rounds: a slow spell of the machine hits every case alike, not just one.
            timing = {"warmup": 2, "min_time_s": args.min_time / args.rounds, "min_iters": 5, "max_iters": 1000}
            for i in range(args.rounds):
                for label, session, x, step, _, samples in opened:
                    log.info("round %d/%d: %s (%s, %s)", i + 1, args.rounds, label, session.provider, session.precision)
                    samples["model_only"] += list(time_calls(lambda s=session, x=x: s.run(x), **timing))
                    samples["e2e"] += list(time_calls(step, **timing))
    rows = [
        (label, session, latency_stats(t["model_only"], batch=1), latency_stats(t["e2e"], batch=1), diff)
        for label, session, _, _, diff, t in opened
    ]
    ref_model, ref_e2e = rows[0][2]["fps"], rows[0][3]["fps"]
    shape = "x".join(map(str, rows[0][1].input_shape))
    print(f"\nYOLOv8n {shape}, {args.threads} threads, {cpu_name()} ({os.cpu_count()} cores); 1920x1080 JPEG frames\n")
    print(
        "| runtime | provider | precision | model-only p50 ms | model-only frames/s | end-to-end p50 ms "
        "| end-to-end frames/s | speed-up model-only | speed-up end to end | max abs diff vs reference |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, session, m, e, diff in rows:
        print(
            f"| {label} | {session.provider} | {session.precision} | {m['p50_ms']:.1f} | {m['fps']:.1f} "
            f"| {e['p50_ms']:.1f} | {e['fps']:.1f} | {m['fps'] / ref_model:.2f}x | {e['fps'] / ref_e2e:.2f}x "
            f"| {'–' if np.isnan(diff) else f'{diff:.3g}'} |"
        )


if __name__ == "__main__":
    main()
