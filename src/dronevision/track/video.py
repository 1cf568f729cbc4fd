"""Track one video: decode, detect through the inference layer, track with ultralytics' trackers, write its folder.

:func:`track_video` is the per-video task (in this process, a process pool or a Ray worker). Everything it writes
goes to ``videos/.tmp-<id>/`` first and is renamed to ``videos/<id>/`` once complete, ``result.json`` included,
so an interrupted run leaves no half-done video that a re-run would take as done.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dronevision.schema import Detections
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
    tracker = (BOTSORT if kind == "botsort" else BYTETracker)(args)
    if kind == "botsort" and settings.get("gmc_downscale"):
        tracker.gmc.downscale = max(1, int(settings["gmc_downscale"]))
    return tracker


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


def _write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


class _Clock:
    """Seconds per stage of the loop."""

    def __init__(self) -> None:
        self.split: Counter[str] = Counter()
        self.tick = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.split[stage] += now - self.tick
        self.tick = now


def track_video(path: str, video_id: str, out_dir: str, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Track one video into ``out_dir/videos/<video_id>/``; returns its result (also its ``result.json``).

    A video that cannot be read gives a result with ``error`` set and leaves no folder. ``cfg`` is the resolved
    track config plus ``sha256`` (the video's content hash), ``fingerprint`` and ``class_ids`` (None: all).
    """
    from dronevision.infer import SliceSettings, sliced_predict
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
    }
    writer = None
    try:
        detector = detector_for(cfg)
        names = detector.names
        slicing = SliceSettings.from_config(cfg["slicing"])
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
            writer = Mp4Writer(tmp / "annotated.mp4", out_fps, crf=int(video_cfg["crf"]))
        annotator = Annotator(names, trail=int(video_cfg["trail"]))
        tracks = TrackLog(thumbnail=int(cfg["sightings"]["thumbnail"]))
        class_ids = cfg.get("class_ids")
        truth = load_truth(cfg["labels"]["format"], Path(cfg["truth_path"])) if cfg.get("truth_path") else None
        predicted: Frames = {}
        processed: list[int] = []
        detections: Counter[str] = Counter()
        first_t = last_t = None
        batch = int(cfg["detector"]["batch"])
        clock = _Clock()
        with (tmp / "tracks.jsonl").open("w") as records:
            pending: list[tuple[int, float, np.ndarray]] = []
            frame_iter = iter(frames)
            done = False
            while not done:
                for frame in frame_iter:  # decode until a batch of processed frames is ready
                    result["frames_decoded"] += 1
                    first_t = frame.time if first_t is None else first_t
                    last_t = frame.time
                    if sampler.wants(frame.time):
                        pending.append((frame.index, frame.time, frame.bgr()))
                        if len(pending) == batch:
                            break
                else:
                    done = True
                clock.lap("decode")
                if not pending:
                    break
                images = [image for _, _, image in pending]
                if slicing.enabled:
                    found = [sliced_predict(detector, image, slicing) for image in images]
                else:
                    found = detector.predict(images, batch=batch)
                clock.lap("detect")
                for (index, t, image), det in zip(pending, found):
                    if class_ids is not None:
                        det = det.filter(classes=class_ids)
                    detections.update(names.get(int(c), str(c)) for c in det.class_id)
                    rows = tracker.update(tracker_input(det, image.shape[:2]), image)
                    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 8)
                    frame_records = tracks.update(index, t, rows, image)
                    clock.lap("track")
                    for record in frame_records:
                        records.write(json.dumps(record) + "\n")
                    if writer is not None:
                        writer.write(annotator.draw(image, rows))
                    clock.lap("write")
                    result["frames_processed"] += 1
                    if truth is not None:
                        processed.append(index)
                        predicted[index] = (rows[:, 4].astype(np.int64), rows[:, :4])
                pending = []
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
        clock.lap("write")
        footage = (last_t - first_t) + 1.0 / (info["fps"] or out_fps) if last_t is not None else 0.0
        seconds = time.perf_counter() - started
        result.update(
            names={int(k): v for k, v in names.items()},
            runtime=detector.runtime,
            footage_s=round(footage, 3),
            seconds=round(seconds, 3),
            time_split_s={k: round(v, 3) for k, v in sorted(clock.split.items())},
            frames_per_s=round(result["frames_processed"] / seconds, 2) if seconds else None,
            realtime_factor=round(footage / seconds, 2) if seconds else None,
            detections=dict(sorted(detections.items())),
            sightings=dict(sorted(Counter(s["class"] for s in sightings).items())),
            n_sightings=len(sightings),
            tracks=len(tracks.tracks),
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

    _write_csv(folder / "sightings.csv", sightings, SIGHTING_COLUMNS)
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
