"""Track one video: decode, detect through the inference layer, track with ultralytics' trackers, write its folder.

:func:`track_video` is the per-video task (in this process, a process pool or a Ray worker). Everything it writes
goes to ``videos/.tmp-<id>/`` first and is renamed to ``videos/<id>/`` once complete, ``result.json`` included,
so an interrupted run leaves no half-done video that a re-run would take as done.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections import Counter, deque
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from dronevision.fsio import is_write_fault
from dronevision.schema import Detections
from dronevision.track.report import write_csv
from dronevision.track.sightings import SIGHTING_COLUMNS, TrackLog

log = logging.getLogger(__name__)

TRACKERS = ("botsort", "bytetrack")
_DETECTORS: dict[str, Any] = {}  # one detector per process and settings: a worker reuses it across videos


def make_tracker(settings: Mapping[str, Any]) -> Any:
    """An ultralytics tracker (``tracker_type`` botsort or bytetrack) from the ``tracker/`` config group's keys."""
    from ultralytics.trackers import BOTSORT, BYTETracker
    from ultralytics.utils import IterableSimpleNamespace

    from dronevision.errors import DroneVisionError

    kind = settings.get("tracker_type")
    if kind not in TRACKERS:
        raise DroneVisionError(f"tracker.tracker_type must be one of {', '.join(TRACKERS)}, got '{kind}'")
    args = IterableSimpleNamespace(**{k: v for k, v in settings.items() if k != "gmc_downscale"})
    return (BOTSORT if kind == "botsort" else BYTETracker)(args)


def tracker_input(det: Detections, shape: tuple[int, int]) -> Any:
    """Detections as the ultralytics ``Boxes`` its trackers take (``xyxy, conf, cls`` rows, NumPy)."""
    from ultralytics.engine.results import Boxes

    conf = det.confidence if det.confidence is not None else np.ones(len(det))
    return Boxes(np.c_[det.xyxy, conf, det.class_id].astype(np.float32), orig_shape=shape)


def detector_for(cfg: Mapping[str, Any]) -> Any:
    """The detector of these settings, loaded once per process."""
    from dronevision.infer import load_detector

    d = cfg["detector"]
    key = json.dumps([cfg["weights"], d], sort_keys=True, default=str)
    if key not in _DETECTORS:
        _DETECTORS[key] = load_detector(
            Path(cfg["weights"]),
            runtime=d["runtime"],
            imgsz=d["imgsz"],
            conf=float(d["conf"]),
            iou=float(d["iou"]),
            max_det=int(d["max_det"]),
            threads=d["threads"],
            device=d["device"],
            precision=d["precision"],
        )
    return _DETECTORS[key]


def skip_frames(setting: str | None, every_s: float) -> str | None:
    """What FFmpeg may leave undecoded: ``auto`` skips frames no other frame refers to (most B-frames) when only
    one frame per ``every_s`` seconds is tracked, and nothing when every frame is.

    Examples:
        >>> skip_frames("auto", 1.0), skip_frames("auto", 0.0), skip_frames(None, 1.0), skip_frames("nonkey", 0.0)
        ('nonref', None, None, 'nonkey')
    """
    if setting == "auto":
        return "nonref" if every_s > 0 else None
    return setting


def release_detectors() -> None:
    """Drop the detectors this process loaded (their sessions, threads and memory)."""
    _DETECTORS.clear()


def set_gmc_downscale(tracker: Any, setting: int | str | None, shape: tuple[int, int]) -> None:
    """BoT-SORT's motion compensation works on frames ``downscale`` times smaller; ``auto`` picks the factor that
    brings the longer side near 480 px (2 for 640 px, 4 for 1920 px; never below ultralytics' 2)."""
    gmc = getattr(tracker, "gmc", None)
    if gmc is None or setting in (None, ""):
        return
    gmc.downscale = max(2, round(max(shape) / 480)) if setting == "auto" else max(1, int(setting))


def _batches(
    frames: Iterator[Any], sampler: Any, batch: int, decoded: dict[str, Any], seconds: Counter[str]
) -> Iterator[list[tuple[int, float, np.ndarray]]]:
    """The frames to process, decoded to BGR, ``batch`` at a time; counts every decoded frame in ``decoded``."""
    pending: list[tuple[int, float, np.ndarray]] = []
    tick = time.perf_counter()
    for frame in frames:
        decoded["frames"] += 1
        decoded["first_t"] = frame.time if decoded["first_t"] is None else decoded["first_t"]
        decoded["last_t"] = frame.time
        if sampler.wants(frame.time):
            pending.append((frame.index, frame.time, frame.bgr()))
            if len(pending) == batch:
                seconds["decode"] += time.perf_counter() - tick
                yield pending
                pending, tick = [], time.perf_counter()
    seconds["decode"] += time.perf_counter() - tick
    if pending:
        yield pending


def _prefetch(items: Iterator[Any], pool: ThreadPoolExecutor) -> Iterator[Any]:
    """The items of ``items``, each next one computed in ``pool`` while the caller works on the current one."""
    end = object()
    future = pool.submit(next, items, end)
    while (item := future.result()) is not end:
        future = pool.submit(next, items, end)
        yield item


def warm_up(detector: Any, size_hw: tuple[int, int] | None, batch: int) -> None:
    """One detector call on blank frames of the video's size before its clock starts: OpenVINO and TensorRT compile a
    session per input shape on first use, and ultralytics sets its predictor up on its first call; like loading the
    model, these are paid once per process, not per frame of footage."""
    if size_hw:
        detector.predict([np.zeros((*size_hw, 3), np.uint8)] * batch, batch=batch)


def _write_frame(writer: Any, annotator: Any, image: np.ndarray, rows: np.ndarray, seconds: Counter[str]) -> None:
    tick = time.perf_counter()
    writer.write(annotator.draw(image, rows))
    seconds["write"] += time.perf_counter() - tick


def track_video(path: str, video_id: str, out_dir: str, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Track one video into ``out_dir/videos/<video_id>/``; returns its result (also its ``result.json``).

    A video that cannot be read gives a result with ``error`` set and leaves no folder. ``cfg`` is the resolved
    track config plus ``sha256`` (the video's content hash), ``fingerprint`` and ``class_ids`` (None: all).
    """
    from dronevision.infer import GsdScaler, SliceSettings, scaled_predict, sliced_predict
    from dronevision.sample.decode import VideoError, check_complete, read_frames
    from dronevision.sample.frames import Sampler
    from dronevision.track.draw import Annotator, Mp4Writer, contact_sheet
    from dronevision.track.mot import Frames, load_truth, mot_metrics

    started = time.perf_counter()
    videos = Path(out_dir) / "videos"
    tmp, final = videos / f".tmp-{video_id}", videos / video_id
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    result: dict[str, Any] = {
        "video": path,
        "video_id": video_id,
        "sha256": cfg["sha256"],
        "fingerprint": cfg["fingerprint"],
        "error": None,
        "frames_decoded": 0,
        "frames_processed": 0,
        "gsd": None,
    }
    writer = None
    try:
        detector = detector_for(cfg)
        names = detector.names
        slicing = SliceSettings.from_config(cfg["slicing"])
        scaler = GsdScaler.for_video(Path(path), slicing.gsd)  # its sidecar or SRT, read once per video
        tracker = make_tracker(cfg["tracker"])
        every_s = float(cfg["every_s"] or 0)
        info, frames = read_frames(
            Path(path),
            skip_frames=skip_frames(cfg.get("skip_frames"), every_s),
            start_s=float(cfg["start_s"] or 0),
            end_s=cfg["end_s"],
            threads=int(cfg["decode_threads"]),
            image_fps=float(cfg["image_fps"]),
        )
        result.update(fps=info["fps"], duration_s=info["duration_s"], codec=info["codec"])
        sampler = Sampler("uniform", every_s=every_s, start_s=float(cfg["start_s"] or 0))
        out_fps = 1.0 / every_s if every_s else (info["fps"] or 30.0)
        video_cfg = cfg["video"]
        if video_cfg["enabled"]:
            writer = Mp4Writer(tmp / "annotated.mp4", out_fps, crf=int(video_cfg["crf"]), preset=video_cfg["preset"])
        annotator = Annotator(names, trail=int(video_cfg["trail"]), max_side=video_cfg["max_side"])
        tracks = TrackLog(thumbnail=int(cfg["sightings"]["thumbnail"]))
        class_ids = cfg.get("class_ids")
        truth = load_truth(cfg["labels"]["format"], Path(cfg["truth_path"])) if cfg.get("truth_path") else None
        predicted: Frames = {}
        processed: list[int] = []
        detections: Counter[str] = Counter()
        batch = int(cfg["detector"]["batch"])
        pad = detector.runtime in ("openvino", "ort-trt")  # sessions per batch size: keep one size, no recompiles
        if not (slicing.scaling or slicing.enabled):
            warm_up(detector, info.get("size_hw"), batch)
        split: Counter[str] = Counter()
        decoded: dict[str, Any] = {"frames": 0, "first_t": None, "last_t": None}
        clock = time.perf_counter()  # the video's own time: from its first decoded frame to its last written file
        with (
            (tmp / "tracks.jsonl").open("w") as records,
            ThreadPoolExecutor(1, "decode") as decode_pool,
            ThreadPoolExecutor(1, "write") as write_pool,
        ):
            writes: deque[Future] = deque()
            batches = _batches(frames, sampler, batch, decoded, split)
            for pending in _prefetch(batches, decode_pool):  # the next batch decodes while this one is detected
                tick = time.perf_counter()
                images = [image for _, _, image in pending]
                if slicing.scaling:  # GSD resizing and/or multi-scale (the frame's altitude at its time)
                    factors = [scaler.factor(image.shape[1], t) for _, t, image in pending]
                    found = scaled_predict(detector, images, slicing, factors=factors, batch=batch)
                elif slicing.enabled:
                    found = [sliced_predict(detector, image, slicing) for image in images]
                else:
                    padded = images + images[-1:] * (batch - len(images)) if pad else images
                    found = detector.predict(padded, batch=batch)[: len(images)]
                now = time.perf_counter()
                split["detect"] += now - tick
                for (index, t, image), det in zip(pending, found):
                    if class_ids is not None:
                        det = det.filter(classes=class_ids)
                    detections.update(names.get(int(c), str(c)) for c in det.class_id)
                    if result["frames_processed"] == 0:
                        set_gmc_downscale(tracker, cfg["tracker"].get("gmc_downscale"), image.shape[:2])
                    rows = tracker.update(tracker_input(det, image.shape[:2]), image)
                    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 8)
                    for record in tracks.update(index, t, rows, image):
                        records.write(json.dumps(record) + "\n")
                    if writer is not None:  # drawn and encoded beside the detection of the next frames
                        writes.append(write_pool.submit(_write_frame, writer, annotator, image, rows, split))
                        while len(writes) > 2 * batch or (writes and writes[0].done()):
                            writes.popleft().result()
                    result["frames_processed"] += 1
                    if truth is not None:
                        processed.append(index)
                        predicted[index] = (rows[:, 4].astype(np.int64), rows[:, :4])
                split["track"] += time.perf_counter() - now
            while writes:
                writes.popleft().result()
        result["frames_decoded"] = decoded["frames"]
        first_t, last_t = decoded["first_t"], decoded["last_t"]
        check_complete(info, last_t, end_s=cfg["end_s"])
        sightings = tracks.sightings(
            names,
            min_frames=int(cfg["sightings"]["min_frames"]),
            min_seconds=cfg["sightings"]["min_seconds"],
            min_conf=float(cfg["sightings"]["min_conf"]),
            video=video_id,
        )
        thumbs = _write_sightings(tmp, sightings, tracks)
        contact_sheet(thumbs, tmp / "contact_sheet.png", size=int(cfg["sightings"]["thumbnail"]) or 96)
        if writer is not None:
            writer.close()
            writer = None
        footage = (last_t - first_t) + 1.0 / (info["fps"] or out_fps) if last_t is not None else 0.0
        seconds = time.perf_counter() - clock
        result.update(
            names={int(k): v for k, v in names.items()},
            runtime=detector.runtime,
            footage_s=round(footage, 3),
            seconds=round(seconds, 3),
            setup_s=round(clock - started, 3),
            time_split_s={k: round(v, 3) for k, v in sorted(split.items())},
            frames_per_s=round(result["frames_processed"] / seconds, 2) if seconds else None,
            realtime_factor=round(footage / seconds, 2) if seconds else None,
            detections=dict(sorted(detections.items())),
            sightings=dict(sorted(Counter(s["class"] for s in sightings).items())),
            n_sightings=len(sightings),
            tracks=len(tracks.tracks),
            gsd=scaler.summary(),
        )
        if truth is not None:
            result["mot"] = mot_metrics(truth, predicted, processed, iou=float(cfg["labels"]["iou"]))
        (tmp / "result.json").write_text(json.dumps(result, indent=2) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    except (VideoError, OSError) as e:
        if writer is not None:
            writer.abort()
        shutil.rmtree(tmp, ignore_errors=True)
        if is_write_fault(e, out_dir):  # a full or read-only out_dir is not this video's fault: stop, in one line
            raise
        result.update(error=str(e).strip().splitlines()[0])
        log.warning("%s: %s", path, result["error"])
    except BaseException:
        if writer is not None:
            writer.abort()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


def _write_sightings(folder: Path, sightings: list[dict[str, Any]], tracks: TrackLog) -> list[tuple[str, np.ndarray]]:
    """``sightings.csv``, ``sightings.json`` and ``thumbnails/<id>.jpg``; returns the contact sheet's cells."""
    import cv2

    write_csv(folder / "sightings.csv", sightings, SIGHTING_COLUMNS)
    (folder / "sightings.json").write_text(json.dumps(sightings, indent=1) + "\n")
    thumbs = []
    (folder / "thumbnails").mkdir(exist_ok=True)
    for s in sightings:
        thumb = tracks.tracks[s["id"]].thumbnail
        if thumb is None:
            continue
        if not cv2.imwrite(str(folder / s["thumbnail"]), thumb):
            raise OSError(f"{folder / s['thumbnail']}: could not be written")
        thumbs.append((f"#{s['id']} {s['class']}", thumb))
    return thumbs
