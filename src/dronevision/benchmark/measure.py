"""Timing sessions: frames, preprocessing, model-only and end-to-end steps, the runtime x batch grid."""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from dronevision.benchmark.core import (
    as_list,
    check_target,
    latency_stats,
    measured_entries,
)
from dronevision.errors import DroneVisionError, first_line
from dronevision.infer import ModelInfo, RuntimeUnavailable, Session, available, check_runtime, open_session
from dronevision.schema import Detections

log = logging.getLogger(__name__)


def time_calls(fn: Callable[[], Any], *, warmup: int, min_time_s: float, min_iters: int, max_iters: int) -> np.ndarray:
    """Call ``fn`` ``warmup`` times, then time calls until ``min_time_s`` has passed and ``min_iters`` calls were
    made, or ``max_iters`` calls; returns the seconds of each timed call."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_iters and (len(times) < min_iters or time.perf_counter() - start < min_time_s):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return np.asarray(times)


def random_frames(n: int, *, frame_wh: tuple[int, int], seed: int = 0) -> list[bytes]:
    """``n`` JPEG frames of smooth random colour with noise: decoding costs about what a real frame costs."""
    import cv2

    rng = np.random.default_rng(seed)
    w, h = frame_wh
    frames = []
    for _ in range(n):
        small = rng.integers(0, 256, (max(h // 32, 2), max(w // 32, 2), 3), dtype=np.uint8)
        image = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
        image = np.clip(image.astype(np.int16) + rng.integers(-12, 13, image.shape), 0, 255).astype(np.uint8)
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        frames.append(buf.tobytes())
    return frames


def load_frames(cfg: DictConfig) -> tuple[list[bytes], dict[str, Any]]:
    """Encoded frames for the end-to-end timing, and where they came from (with objects per frame when labelled)."""
    import cv2

    from dronevision.dataset.yolo import IMAGE_SUFFIXES, label_path, load_yolo_dataset, parse_label_lines

    limit = int(cfg.max_images)
    if cfg.images is None:
        wh = (int(cfg.frame_wh[0]), int(cfg.frame_wh[1]))
        return random_frames(min(limit, 8), frame_wh=wh), {"kind": "random", "source": None, "frame_wh": list(wh)}
    path = Path(cfg.images).expanduser().resolve()
    if not path.exists():
        raise DroneVisionError(f"images {path} does not exist")
    is_dataset = path.suffix in (".yaml", ".yml") or any((path / n).is_file() for n in ("data.yaml", "dataset.yaml"))
    n_classes = None
    if is_dataset:
        dataset = load_yolo_dataset(path)
        images, n_classes, kind = list(dataset.splits["val"]), len(dataset.names), "dataset val split"
    else:
        images = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        kind = "image folder"
        if not images:
            raise DroneVisionError(f"images {path}: no image files in this folder")
    labels = [label_path(p) for p in images]
    counts = [
        len(parse_label_lines(lab.read_text().splitlines(), n_classes=n_classes or 10**9, source=lab))
        if lab.is_file()
        else 0
        for lab in labels
    ]
    labelled = is_dataset or any(lab.is_file() for lab in labels)
    picked = [images[int(i)] for i in np.linspace(0, len(images) - 1, min(limit, len(images)))]
    frames, sizes = [], []
    for image in dict.fromkeys(picked):
        data = image.read_bytes()
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if decoded is None:
            raise DroneVisionError(f"{image}: cannot be decoded as an image")
        frames.append(data)
        sizes.append(decoded.shape[1::-1])
    info = {
        "kind": kind,
        "source": str(path),
        "images": len(images),
        "timed_images": len(frames),
        "mean_wh": [round(float(v), 1) for v in np.mean(sizes, axis=0)],
        "objects_per_frame": round(float(np.mean(counts)), 4) if labelled else None,
    }
    return frames, info


@contextmanager
def fixed_threads(threads: int) -> Iterator[None]:
    """Give OpenCV and torch (letterbox) the same thread count as the runtime, restored afterwards."""
    import cv2
    import torch

    saved = cv2.getNumThreads(), torch.get_num_threads()
    cv2.setNumThreads(threads)
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        cv2.setNumThreads(saved[0])
        torch.set_num_threads(saved[1])


def make_e2e_step(
    session: Session, frames: Sequence[bytes], *, imgsz: int | tuple[int, int], nms: Mapping[str, Any], end2end: bool
) -> Callable[[], list[Detections]]:
    """One end-to-end call: decode JPEGs, letterbox, run, decode the raw output into :class:`Detections` in image
    pixels through the inference layer (:func:`dronevision.infer.decode`: the NMS evaluate uses, or none for an
    end-to-end head); it handles ``batch`` x :func:`requests_per_call` frames (a session with several streams gets
    them all busy)."""
    import cv2

    from dronevision.infer import decode, letterbox_plan

    batch, dtype, requests = session.input_shape[0], session.input_dtype, requests_per_call(session)
    hw = (imgsz, imgsz) if isinstance(imgsz, int) else (int(imgsz[0]), int(imgsz[1]))
    cycle = itertools.cycle(frames)
    settings = {"conf": float(nms["conf"]), "iou": float(nms["iou"]), "max_det": int(nms["max_det"])}

    def step() -> list[Detections]:
        inputs, images = [], []
        for _ in range(requests):
            chunk = [cv2.imdecode(np.frombuffer(next(cycle), np.uint8), cv2.IMREAD_COLOR) for _ in range(batch)]
            inputs.append(session_input(chunk, imgsz=hw, dtype=dtype))
            images.extend(chunk)
        y = np.concatenate(session.run_many(inputs)).astype(np.float32, copy=False)
        plans = [letterbox_plan(im.shape[:2], hw, stride=32, auto=False) for im in images]
        return [decode(y[i : i + 1], plan, end2end=end2end, **settings)[0] for i, plan in enumerate(plans)]

    return step


def requests_per_call(session: Session) -> int:
    """Requests one timed call makes: 1, or twice the streams of a session that runs several in parallel."""
    return 1 if session.streams <= 1 else 2 * session.streams


def make_model_call(session: Session, x: np.ndarray) -> Callable[[], Any]:
    """One model-only call on the fixed input ``x`` (:func:`requests_per_call` requests of it)."""
    requests = requests_per_call(session)
    if requests == 1:
        return lambda: session.run(x)
    xs = [x] * requests
    return lambda: session.run_many(xs)


def session_input(images_bgr: Sequence[np.ndarray], *, imgsz: int | tuple[int, int], dtype: np.dtype) -> np.ndarray:
    """Letterboxed frames as a session takes them: (N,3,H,W) RGB 0..1 in ``dtype``, or for a uint8 input
    (OpenVINO's ``u8_input``, which preprocesses in the graph) the (N,H,W,3) BGR canvases as they are."""
    from dronevision.infer import letterbox_image

    if np.dtype(dtype) == np.uint8:
        return np.stack([letterbox_image(im, imgsz=imgsz, uint8=True) for im in images_bgr])
    return np.concatenate([letterbox_image(im, imgsz=imgsz) for im in images_bgr]).astype(dtype, copy=False)


def model_tensor(frames: Sequence[bytes], *, batch: int, imgsz: int | tuple[int, int], dtype: np.dtype) -> np.ndarray:
    """The fixed preprocessed input of the model-only timing: the first ``batch`` frames (cycled), letterboxed."""
    import cv2

    images = [cv2.imdecode(np.frombuffer(frames[i % len(frames)], np.uint8), cv2.IMREAD_COLOR) for i in range(batch)]
    return session_input(images, imgsz=imgsz, dtype=dtype)


def measure(
    info: ModelInfo, runtime: str, batch: int, frames: Sequence[bytes], cfg: DictConfig, *, threads: int
) -> tuple[dict[str, Any], np.ndarray | None]:
    """Time one runtime at one batch; returns its entry (or ``{"skipped": reason}``) and its output for frame 0."""
    timing = {k: int(cfg[k]) for k in ("warmup", "min_iters", "max_iters")} | {"min_time_s": float(cfg.min_time_s)}
    openvino = runtime == "openvino"
    try:
        session = open_session(
            info.path,
            runtime,
            threads=threads,
            batch=batch,
            info=info,
            precision=cfg.openvino.precision,
            streams=int(cfg.openvino.streams) if openvino else 1,
            u8_input=bool(cfg.openvino.u8_input) and openvino,
        )
    except RuntimeUnavailable as e:
        log.info("%s batch %d skipped: %s", runtime, batch, e)
        return {"skipped": str(e)}, None
    imgsz = info.imgsz  # (h, w): rectangular with benchmark.rect on a dynamic-size model
    per_call = batch * requests_per_call(session)
    try:
        x = model_tensor(frames, batch=batch, imgsz=imgsz, dtype=session.input_dtype)
        first = session.run(x)
        model_s = time_calls(make_model_call(session, x), **timing)
        step = make_e2e_step(session, frames, imgsz=imgsz, nms=cfg.nms, end2end=info.end2end)
        e2e_s = time_calls(step, **timing)
    except Exception as e:  # e.g. out of GPU memory at a large batch: keep the rest of the grid
        log.warning("%s batch %d failed; the other runs go on", runtime, batch, exc_info=True)
        return {"skipped": f"failed while running: {type(e).__name__}: {first_line(e, default='')}"}, None
    finally:
        session.close()
    if not np.isfinite(first).all():
        log.warning("%s batch %d: the output holds non-finite values", runtime, batch)
    entry = {
        **session.describe(),
        "batch": batch,
        "requests_per_call": requests_per_call(session),
        "model_only": latency_stats(model_s, batch=per_call),
        "e2e": latency_stats(e2e_s, batch=per_call),
    }
    return entry, np.asarray(first[0], dtype=np.float32)


def busy_cpu_s() -> float | None:
    """CPU seconds all processes have used since boot (Linux ``/proc/stat``); None elsewhere."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class OthersMeter:
    """How many cores other processes used while we timed (this machine is shared): system busy minus ours."""

    def __enter__(self) -> OthersMeter:
        self.busy, self.ours, self.wall = busy_cpu_s(), time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        busy = busy_cpu_s()
        wall = time.perf_counter() - self.wall
        if busy is None or self.busy is None or wall <= 0:
            self.cores = 0.0
            return
        self.cores = max(0.0, (busy - self.busy) - (time.process_time() - self.ours)) / wall


def wait_for_quiet(max_wait_s: float, *, idle_cores: float = 0.2, window_s: float = 3.0) -> float:
    """Wait (up to ``max_wait_s``) until other processes use less than ``idle_cores`` cores; returns the seconds."""
    started = time.time()
    while time.time() - started < max_wait_s:
        with OthersMeter() as meter:
            time.sleep(window_s)
        if meter.cores < idle_cores:
            break
        log.info("other processes use %.2f cores; waiting for a quiet machine", meter.cores)
    return time.time() - started


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity), else the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else the platform's word for it."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@dataclass(frozen=True)
class Plan:
    """What a benchmark will do, checked before anything is written."""

    info: ModelInfo
    runtimes: list[str]
    batches: list[int]
    threads: int
    reasons: dict[str, str | None]  # runtime -> why it cannot run here (None: it can)
    target: dict[str, Any]


def make_plan(cfg: DictConfig) -> Plan:
    """Check the model, runtimes, batches, timing and target; refuse with one line if nothing can run."""
    from dronevision.infer import read_model_info

    if cfg.onnx is None:
        raise DroneVisionError("model=<an .onnx file or an OpenVINO IR folder> is required")
    runtimes = [check_runtime(str(r)) for r in as_list(OmegaConf.to_object(cfg.runtime), "runtime")]
    batches = as_list(OmegaConf.to_object(cfg.batch), "batch")
    if not all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in batches):
        raise DroneVisionError(f"batch must be whole numbers >= 1, got {batches}")
    threads = int(cfg.threads or usable_cores())
    if threads < 1 or cfg.min_iters < 1 or cfg.max_iters < cfg.min_iters or cfg.warmup < 0 or cfg.min_time_s < 0:
        raise DroneVisionError("need threads >= 1, warmup >= 0, min_time_s >= 0 and 1 <= min_iters <= max_iters")
    target = check_target(OmegaConf.to_container(cfg.target, resolve=True))
    info = read_model_info(Path(cfg.onnx))
    if info.imgsz[0] != info.imgsz[1]:
        raise DroneVisionError(f"model {info.path}: imgsz {list(info.imgsz)} is not square; export it square")
    reasons = {r: available(r) for r in runtimes}
    if all(reasons.values()):
        raise DroneVisionError("no runtime available: " + "; ".join(f"{r}: {why}" for r, why in reasons.items()))
    return Plan(info, runtimes, batches, threads, reasons, target)


def input_hw(info: ModelInfo, frame: bytes, *, rect: bool) -> tuple[int, int]:
    """The model input (h, w) for frames like ``frame``: the model's square size, or with ``rect`` and a model of
    dynamic height and width, ultralytics' rectangular letterbox (long side at imgsz, the other side padded only to
    the stride): 1920x1080 footage at 640 runs at 384x640, not 640x640."""
    import cv2

    from dronevision.infer.yolo import letterbox_plan

    if not rect or info.input_shape[2] is not None or info.input_shape[3] is not None:
        return info.imgsz
    hw = cv2.imdecode(np.frombuffer(frame, np.uint8), cv2.IMREAD_COLOR).shape[:2]
    return letterbox_plan(hw, info.imgsz, stride=info.stride or 32, auto=True).input_hw


def measure_grid(plan: Plan, frames: Sequence[bytes], cfg: DictConfig) -> dict[str, dict[str, Any]]:
    """Time every runtime × batch (a progress bar over the grid); unavailable ones get ``{"skipped": reason}``."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    entries: dict[str, dict[str, Any]] = {}
    outputs: dict[tuple[str, int], np.ndarray] = {}
    total = len(plan.runtimes) * len(plan.batches)
    info = replace(plan.info, imgsz=input_hw(plan.info, frames[0], rect=bool(cfg.rect)))
    if info.imgsz != plan.info.imgsz:
        log.info("input %dx%d: rect=true keeps the frames' aspect ratio, padded to the stride", *info.imgsz)
    bar = tqdm(total=total, desc="benchmark", unit="run")
    with fixed_threads(plan.threads), logging_redirect_tqdm(), bar:
        for name in plan.runtimes:
            if plan.reasons[name]:
                entries[name] = {"skipped": plan.reasons[name]}
                log.info("%s skipped: %s", name, plan.reasons[name])
                bar.update(len(plan.batches))
                continue
            per_batch: dict[str, Any] = {}
            for batch in plan.batches:
                bar.set_postfix_str(f"{name} batch {batch}")
                per_batch[str(batch)], out = measure(info, name, batch, frames, cfg, threads=plan.threads)
                if out is not None:
                    outputs[name, batch] = out
                bar.update()
            measured = [e for e in per_batch.values() if "skipped" not in e]
            if not measured:  # the same reason at every batch, as a rule
                entries[name] = {"skipped": next(iter(per_batch.values()))["skipped"]}
                continue
            entries[name] = {k: measured[0][k] for k in ("provider", "precision", "threads")} | {"batches": per_batch}
    if not any("batches" in e for e in entries.values()):
        reasons = "; ".join(f"{r}: {e['skipped']}" for r, e in entries.items())
        raise DroneVisionError(f"no runtime could run the model: {reasons}")
    reference = next((out for (name, _), out in outputs.items() if name == "ort-cpu"), None)
    for name, batch, res in measured_entries(entries):
        mine = outputs.get((name, batch))
        same = reference is not None and mine is not None and reference.shape == mine.shape
        ref = reference
        if same and info.end2end:  # final detections, whose order follows floating-point noise: paired as such
            from dronevision.export.core import comparable_outputs

            (ref,), (mine,) = comparable_outputs([reference], [mine], end2end=True)
        res["max_abs_diff_vs_ort_cpu"] = round(float(np.abs(mine - ref).max(initial=0.0)), 6) if same else None
    return entries


def host_facts() -> dict[str, Any]:
    """CPU, cores and runtime versions, reported with every number."""
    import onnxruntime

    host: dict[str, Any] = {"cpu": cpu_name(), "cores": os.cpu_count(), "onnxruntime": onnxruntime.__version__}
    try:
        import openvino

        host["openvino"] = openvino.__version__
    except ImportError:
        pass
    return host
