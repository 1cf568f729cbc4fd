"""Sliced inference speed and agreement: dronevision.infer against SAHI's ``get_sliced_prediction``.

Builds 2000x1500 frames from the bundled aerial-cars images (a mosaic of real photos, so there are real vehicles),
takes a YOLOv8n ``.pt`` (``--weights``, or one trained here on aerial-cars and cached in a temp folder), exports it
to a dynamic-batch ONNX, and times, on the same frames with the same tiles, confidence and merge settings:

- SAHI ``get_sliced_prediction`` with ``UltralyticsDetectionModel`` on the ``.pt`` (the reference; ultralytics runs
  torch on ``cpu_count - 1`` threads, as it sets itself), and the same with torch on every core;
- ours on the ``.pt`` (``torch``: ultralytics' predictor, tiles in batches, every core): the same backend as SAHI,
  for the agreement check;
- ours on the ONNX with OpenVINO (f32, evaluate's precision, and its CPU default precision) and ONNX Runtime: tiles
  in batches (``--batch``); OpenVINO also with the batches run ``--streams`` at a time, each stream on
  ``threads / streams`` threads.

Each method gets a warm-up pass over every frame, then ``--rounds`` interleaved rounds over all frames (so a slow
spell of a shared machine does not fall on one method). s/frame is the median over rounds of a round's mean; the
speed-up is SAHI's s/frame over the method's. The match rate is the share of SAHI's boxes that a box of ours
matches one-to-one at IoU >= 0.9 with the same class (greedy by IoU); "extra" counts our boxes SAHI lacks. A
second table splits our s/frame into stages (``sliced_predict(..., timings=...)``): ``tiles`` (crops letterboxed
into the model input), ``inference`` (the runtime; ultralytics' whole predictor for torch), ``decode`` (raw outputs
to boxes per tile: confidence filter, NMS, scaling), ``merge`` (boxes moved to the frame, greedy NMM) and ``other``
(the rest: Python around them).

    python scripts/bench_sliced.py [--weights best.pt] [--frames 4] [--rounds 3] [--batch 1 6] [--streams 1 2]

Another process using the CPU while a round is timed makes that round be timed again (``--max-others``), and each
round first waits for a quiet machine; the summary says how many cores others used at most while timed.

The goals (issue 13): ours at f32 (evaluate's precision) >= 3x faster than SAHI as it comes, >= 2x faster than
SAHI given every core, with >= 99% of SAHI's boxes matched.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import dronevision  # noqa: F401  (offline environment before ultralytics is imported)
from dronevision.benchmark.measure import OthersMeter, cpu_name, wait_for_quiet
from dronevision.infer import Detector, SliceSettings, load_detector, pairwise_overlap, slice_bboxes, sliced_predict
from dronevision.infer.detector import default_threads
from dronevision.schema import Detections

log = logging.getLogger("bench_sliced")

REPO = Path(__file__).resolve().parents[1]
AERIAL_CARS = REPO / "data" / "samples" / "aerial-cars"


# --- pure helpers ----------------------------------------------------------------------------------------------


def match_counts(reference: Detections, ours: Detections, *, iou: float = 0.9) -> int:
    """How many reference boxes a box of ours matches one-to-one (same class, IoU >= ``iou``, greedy by IoU).

    Examples:
        >>> ref = Detections(xyxy=[[0, 0, 10, 10], [20, 0, 30, 10]], class_id=[0, 0])
        >>> match_counts(ref, Detections(xyxy=[[0, 0, 10, 10.5], [20, 0, 30, 10]], class_id=[0, 1]))
        1
    """
    if not len(reference) or not len(ours):
        return 0
    overlap = pairwise_overlap(reference.xyxy, ours.xyxy, match="iou")
    overlap[reference.class_id[:, None] != ours.class_id[None, :]] = 0
    pairs = np.argwhere(overlap >= iou)
    pairs = pairs[np.argsort(-overlap[pairs[:, 0], pairs[:, 1]], kind="stable")]
    used_ref, used_ours = set(), set()
    for r, o in pairs.tolist():
        if r not in used_ref and o not in used_ours:
            used_ref.add(r)
            used_ours.add(o)
    return len(used_ref)


STAGES = ("tiles", "inference", "decode", "merge")


def split_table(rows: list[dict[str, Any]]) -> str:
    """Where a frame's time goes for each of our rows, in ms, means over the kept rounds (``other``: the time the
    stages do not account for; the total is the mean, where the main table's s/frame is the median).

    Examples:
        >>> row = {"method": "ours", "key": "openvino-f32-b6", "mean_s_per_frame": 0.2,
        ...        "split_s": {"tiles": 0.01, "inference": 0.15, "decode": 0.02, "merge": 0.01}}
        >>> print(split_table([row]).splitlines()[-1])
        | openvino-f32-b6 | 10.0 | 150.0 | 20.0 | 10.0 | 10.0 | 200.0 |
    """
    head = "| ours | " + " | ".join(STAGES) + " | other | total (ms/frame) |"
    lines = [head, "|---" * (len(STAGES) + 3) + "|"]
    for r in rows:
        if r["method"] != "ours":
            continue
        split = [1000 * r["split_s"].get(stage, 0.0) for stage in STAGES]
        total = 1000 * r["mean_s_per_frame"]
        cells = " | ".join(f"{v:.1f}" for v in [*split, total - sum(split), total])
        lines.append(f"| {r['key']} | {cells} |")
    return "\n".join(lines)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The results as a Markdown table."""
    head = "| method | runtime | threads | batch | s/frame | speed-up vs SAHI | boxes | match rate | extra |"
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        match = "reference" if r["reference"] else f"{r['match_rate']:.2%}"
        lines.append(
            f"| {r['method']} | {r['runtime']} | {r['threads']} | {r['batch']} | {r['s_per_frame']:.3f} | "
            f"{r['speedup']:.2f}x | {r['boxes']} | {match} | {r['extra']} |"
        )
    return "\n".join(lines)


# --- data and model --------------------------------------------------------------------------------------------


def build_frames(*, n: int, wh: tuple[int, int], scale: float, seed: int) -> list[np.ndarray]:
    """``n`` BGR frames of ``wh``: mosaics of aerial-cars validation and test photos, each resized by ``scale``."""
    import cv2

    photos = sorted((AERIAL_CARS / "valid" / "images").glob("*.jpg")) + sorted(
        (AERIAL_CARS / "test" / "images").glob("*.jpg")
    )
    if not photos:
        raise SystemExit(f"no images under {AERIAL_CARS}")
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        side = round(416 * scale)
        cols, rows = math.ceil(wh[0] / side), math.ceil(wh[1] / side)
        canvas = np.zeros((rows * side, cols * side, 3), np.uint8)
        for k, i in enumerate(rng.choice(len(photos), rows * cols, replace=len(photos) < rows * cols)):
            photo = cv2.resize(cv2.imread(str(photos[i])), (side, side), interpolation=cv2.INTER_LINEAR)
            r, c = divmod(k, cols)
            canvas[r * side : (r + 1) * side, c * side : (c + 1) * side] = photo
        frames.append(np.ascontiguousarray(canvas[: wh[1], : wh[0]]))
    return frames


def train_weights(cache: Path, *, epochs: int, imgsz: int) -> Path:
    """A YOLOv8n trained from scratch on aerial-cars (``yolov8n.yaml``: nothing downloaded), cached in ``cache``."""
    from ultralytics import YOLO

    name = f"yolov8n-aerial-cars-e{epochs}-{imgsz}"
    weights = cache / name / "weights" / "last.pt"
    if weights.is_file():
        log.info("cached weights: %s", weights)
        return weights
    data = cache / "aerial-cars.yaml"
    data.write_text(
        f"path: {AERIAL_CARS}\ntrain: train/images\nval: valid/images\ntest: test/images\nnames:\n  0: vehicle\n"
    )

    def mlflow_off(trainer: Any) -> None:
        for event, fns in trainer.callbacks.items():
            trainer.callbacks[event] = [f for f in fns if "callbacks.mlflow" not in getattr(f, "__module__", "")]

    log.info("training %s for %d epochs at %d (CPU; cached for later runs)", name, epochs, imgsz)
    model = YOLO("yolov8n.yaml", task="detect")
    model.add_callback("on_pretrain_routine_start", mlflow_off)
    model.train(
        data=str(data),
        epochs=epochs,
        imgsz=imgsz,
        batch=16,
        device="cpu",
        workers=2,
        project=str(cache),
        name=name,
        exist_ok=True,
        plots=False,
        verbose=False,
        seed=0,
    )
    return weights


def export_dynamic_onnx(weights: Path, cache: Path, *, imgsz: int) -> Path:
    """The checkpoint as a dynamic-batch ONNX (cached by the checkpoint's name, size and mtime)."""
    from dronevision.export.convert import export_onnx

    out = cache / f"{weights.parent.parent.name}-{weights.stem}-{int(weights.stat().st_mtime)}-{imgsz}-dynamic.onnx"
    if not out.is_file():
        export_onnx(weights, imgsz=imgsz, opset=17, dynamic=True, simplify=True, out=out)
    return out


# --- methods ---------------------------------------------------------------------------------------------------


def torch_threads(n: int) -> Callable[[], None]:
    """A call that sets torch's thread count to ``n`` (SAHI's ultralytics predictor resets it when set up)."""
    import torch

    return lambda: torch.set_num_threads(n)


def sahi_method(weights: Path, args: argparse.Namespace, threads: int) -> Callable[[np.ndarray], Detections]:
    """SAHI's get_sliced_prediction on the .pt, with torch on ``threads`` threads; returns a frame -> boxes call."""
    from sahi.models.ultralytics import UltralyticsDetectionModel
    from sahi.predict import get_sliced_prediction

    model = UltralyticsDetectionModel(
        model_path=str(weights), confidence_threshold=args.conf, device="cpu", image_size=args.imgsz
    )
    set_threads = torch_threads(threads)

    def run(frame_bgr: np.ndarray) -> Detections:
        set_threads()
        result = get_sliced_prediction(
            np.ascontiguousarray(frame_bgr[..., ::-1]),  # SAHI takes RGB arrays
            model,
            slice_height=args.tile,
            slice_width=args.tile,
            overlap_height_ratio=args.overlap,
            overlap_width_ratio=args.overlap,
            perform_standard_pred=args.full_frame,
            postprocess_type={"nmm": "GREEDYNMM", "nms": "NMS"}[args.merge],
            postprocess_match_metric=args.match.upper(),
            postprocess_match_threshold=args.match_threshold,
            postprocess_class_agnostic=args.class_agnostic,
            verbose=0,
        )
        preds = result.object_prediction_list
        return Detections(
            xyxy=np.array([p.bbox.to_xyxy() for p in preds], float).reshape(-1, 4),
            class_id=[p.category.id for p in preds],
            confidence=[p.score.value for p in preds],
        )

    return run


def ours_method(
    detector: Detector, args: argparse.Namespace, *, batch: int, timings: dict[str, float]
) -> Callable[[np.ndarray], Detections]:
    """Our sliced_predict with ``detector``, the same tiles and merge settings as SAHI's, ``batch`` tiles a pass;
    the seconds per stage are added to ``timings``."""
    settings = SliceSettings(
        enabled=True,
        tile=args.tile,
        overlap=args.overlap,
        batch=batch,
        full_frame=args.full_frame,
        merge=args.merge,
        match=args.match,
        match_threshold=args.match_threshold,
        class_agnostic=args.class_agnostic,
    )
    return lambda frame: sliced_predict(detector, frame, settings, timings=timings)


# --- entry point -----------------------------------------------------------------------------------------------


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=None, help="a YOLOv8 .pt (default: train one, cached)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs when training the model here")
    parser.add_argument("--train-imgsz", type=int, default=640)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "dronevision-bench-sliced")
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--size", type=int, nargs=2, default=(2000, 1500), metavar=("W", "H"))
    parser.add_argument("--scale", type=float, default=640 / 416, help="photo scale in the mosaic (training scale)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tile", type=int, default=640)
    parser.add_argument("--overlap", type=float, default=0.2)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--conf", type=float, default=0.25)
    parser.add_argument("--full-frame", action=argparse.BooleanOptionalAction, default=True, help="SAHI's default")
    parser.add_argument("--merge", choices=("nmm", "nms"), default="nmm")
    parser.add_argument("--match", choices=("ios", "iou"), default="ios")
    parser.add_argument("--match-threshold", type=float, default=0.5)
    parser.add_argument("--class-agnostic", action="store_true")
    parser.add_argument(
        "--batch", type=int, nargs="+", default=[1, 6], help="tiles per forward pass for ours (a row each)"
    )
    parser.add_argument(
        "--streams", type=int, nargs="+", default=[1, 2], help="OpenVINO batches in flight at once (a row each)"
    )
    parser.add_argument("--threads", type=int, default=None, help="threads for ours (default: every core)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-others", type=float, default=0.25, help="retime a round if others used more cores")
    parser.add_argument("--retries", type=int, default=2, help="times a disturbed round is timed again")
    parser.add_argument("--max-wait", type=float, default=300.0, help="seconds to wait for a quiet machine per round")
    parser.add_argument(
        "--methods", nargs="*", default=None, help="subset of sahi, sahi-all, torch, openvino-f32, openvino, ort-cpu"
    )
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    return parser


def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    from ultralytics.utils import NUM_THREADS

    args.cache.mkdir(parents=True, exist_ok=True)
    weights = args.weights or train_weights(args.cache, epochs=args.epochs, imgsz=args.train_imgsz)
    onnx = export_dynamic_onnx(weights, args.cache, imgsz=args.imgsz)
    frames = build_frames(n=args.frames, wh=tuple(args.size), scale=args.scale, seed=args.seed)
    threads = args.threads or default_threads()
    n_tiles = len(slice_bboxes(tuple(args.size), size=args.tile, overlap=args.overlap))

    methods: dict[str, tuple[str, str, int, Any, Callable[[np.ndarray], Detections]]] = {}
    splits: dict[str, dict[str, float]] = {}  # per method of ours: seconds per stage, reset before each timed round
    wanted = set(args.methods or ["sahi", "sahi-all", "torch", "openvino-f32", "openvino", "ort-cpu"]) | {"sahi"}
    for key, n_threads in (("sahi", NUM_THREADS), ("sahi-all", threads)):
        if key in wanted:
            methods[key] = (
                "SAHI get_sliced_prediction",
                "torch (.pt)",
                n_threads,
                1,
                sahi_method(weights, args, n_threads),
            )
    ours = {  # key: (model file, load_detector arguments)
        "torch": (weights, {"runtime": "torch"}),
        "openvino-f32": (onnx, {"runtime": "openvino", "precision": "f32"}),
        "openvino": (onnx, {"runtime": "openvino"}),  # OpenVINO's default precision for this CPU
        "ort-cpu": (onnx, {"runtime": "ort-cpu"}),
    }
    for key, (model, kwargs) in ours.items():
        if key not in wanted:
            continue
        for streams in args.streams if kwargs["runtime"] == "openvino" else [1]:
            detector = load_detector(
                model, imgsz=args.imgsz, conf=args.conf, device="cpu", threads=threads, streams=streams, **kwargs
            )
            facts = detector.describe()
            runtime = f"{facts['runtime']} {facts.get('precision', 'f32')} ({model.suffix})"
            runtime += f", {streams} streams" if streams > 1 else ""
            for batch in args.batch:
                name = f"{key}-b{batch}" + (f"-s{streams}" if streams > 1 else "")
                splits[name] = {}
                run = ours_method(detector, args, batch=batch, timings=splits[name])
                methods[name] = ("ours", runtime, threads, batch, run)

    wait_for_quiet(args.max_wait)
    log.info("warm-up: every method once over %d frames", len(frames))
    outputs: dict[str, list[Detections]] = {}
    for key, (*_, run) in methods.items():
        outputs[key] = [run(f) for f in frames]
    times: dict[str, list[float]] = {key: [] for key in methods}
    kept_splits: dict[str, list[dict[str, float]]] = {key: [] for key in splits}
    others: list[float] = []
    disturbed: list[dict[str, float]] = []  # rounds left out: others used the CPU through every attempt
    for round_ in range(args.rounds):
        for _attempt in range(1 + args.retries):
            waited = wait_for_quiet(args.max_wait)
            if waited > 5:
                log.info("waited %.0f s for a quiet machine", waited)
            timed: dict[str, float] = {}
            for split in splits.values():
                split.clear()
            with OthersMeter() as meter:
                for key, (*_, run) in methods.items():
                    started = time.perf_counter()
                    outputs[key] = [run(f) for f in frames]
                    timed[key] = (time.perf_counter() - started) / len(frames)
            if meter.cores < args.max_others:
                break
            log.info("round %d: other processes used %.2f cores; timing it again", round_ + 1, meter.cores)
        else:
            log.warning("round %d: disturbed %d times; left out", round_ + 1, 1 + args.retries)
            disturbed.append({k: round(v, 4) for k, v in timed.items()})
            continue
        others.append(meter.cores)
        for key, value in timed.items():
            times[key].append(value)
        for key, split in splits.items():
            kept_splits[key].append({stage: v / len(frames) for stage, v in split.items()})
        log.info(
            "round %d/%d (others %.2f cores): %s",
            round_ + 1,
            args.rounds,
            meter.cores,
            {k: round(v, 3) for k, v in timed.items()},
        )

    if not others:
        raise SystemExit(f"every round was disturbed by other processes: {disturbed}")
    reference = outputs["sahi"]
    sahi_s = statistics.median(times["sahi"])
    total_ref = sum(len(d) for d in reference)
    rows = []
    for key, (method, runtime, n_threads, batch, _) in methods.items():
        matched = sum(match_counts(r, o) for r, o in zip(reference, outputs[key]))
        boxes = sum(len(d) for d in outputs[key])
        s = statistics.median(times[key])
        rounds = kept_splits.get(key, [])
        rows.append(
            {
                "key": key,
                "method": method,
                "runtime": runtime,
                "threads": n_threads,
                "batch": batch,
                "s_per_frame": s,
                "rounds_s_per_frame": times[key],
                "mean_s_per_frame": statistics.mean(times[key]),
                "speedup": sahi_s / s,
                "speedup_vs_sahi_all": statistics.median(times["sahi-all"]) / s if "sahi-all" in times else None,
                "boxes": boxes,
                "match_rate": matched / total_ref if total_ref else float("nan"),
                "extra": boxes - matched,
                "reference": key == "sahi",
                "split_s": {stage: statistics.mean(r.get(stage, 0.0) for r in rounds) for stage in STAGES}
                if rounds
                else {},
            }
        )
    print(
        f"\n{len(frames)} frames {args.size[0]}x{args.size[1]}, {n_tiles} tiles of {args.tile} at {args.overlap:.0%} "
        f"overlap, full-frame pass {'on' if args.full_frame else 'off'}, merge {args.merge.upper()}/"
        f"{args.match.upper()} {args.match_threshold}, {'class-agnostic' if args.class_agnostic else 'class-aware'}, "
        f"conf {args.conf}, imgsz {args.imgsz}; model {weights}; CPU {cpu_name()} ({os.cpu_count()} cores); "
        f"{len(others)} of {args.rounds} rounds kept after a warm-up; other processes used at most {max(others):.2f} "
        "cores while timed\n"
    )
    print(markdown_table(rows))
    print("\ntime split per frame (ms, means over the kept rounds):\n")
    print(split_table(rows))
    f32 = [r for r in rows if r["method"] == "ours" and (" f32 " in r["runtime"] or r["key"].startswith("torch-"))]
    best = max((r for r in f32 if not r["key"].startswith("torch-")), key=lambda r: r["speedup"], default=None)
    if best:
        print(
            f"\nfastest ours at f32: {best['key']} ({best['runtime']}), {best['speedup']:.2f}x SAHI (goal >= 3x: "
            f"{best['speedup'] >= 3}), match rate {best['match_rate']:.2%} (goal >= 99%: {best['match_rate'] >= 0.99})"
        )
        if best["speedup_vs_sahi_all"] is not None:
            ratio = best["speedup_vs_sahi_all"]
            print(f"  {ratio:.2f}x SAHI given every core ({threads} threads; goal >= 2x: {ratio >= 2})")
        inference = best["split_s"].get("inference")
        if inference:  # what no change outside the model can pass: the same inferences with nothing around them
            ms = 1000 * inference
            ceiling = f"  ceiling with nothing but its inference ({ms:.0f} ms/frame): {sahi_s / inference:.2f}x SAHI"
            if "sahi-all" in times:
                ceiling += f", {statistics.median(times['sahi-all']) / inference:.2f}x SAHI given every core"
            print(ceiling)
    same_backend = min((r for r in rows if r["key"].startswith("torch-")), key=lambda r: r["match_rate"], default=None)
    if same_backend:
        rate = same_backend["match_rate"]
        print(
            f"same backend (torch) match rate at IoU >= 0.9, lowest over batches: {rate:.2%} "
            f"(goal >= 99%: {rate >= 0.99})"
        )
    if args.out:
        args_text = {k: str(v) for k, v in vars(args).items()}
        payload = {"args": args_text, "others_cores": others, "disturbed_rounds": disturbed, "rows": rows}
        args.out.write_text(json.dumps(payload, indent=2))
    return rows


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main(get_args_parser().parse_args())
