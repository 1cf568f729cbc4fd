"""Track objects over footage and count unique sightings, per video and per day, over an archive.

Run ``python -m dronevision.track model=<.pt|.onnx|IR folder> input=<video | folder | glob> out_dir=<dir>``;
tests call :func:`run`. Per video (``videos/<id>/``): ``sightings.csv``/``.json``, ``tracks.jsonl``,
``annotated.mp4``, ``contact_sheet.png``, ``thumbnails/``, ``result.json``. Merged: ``sightings.csv``,
``sightings_per_day.csv``/``.png`` and ``summary.json``. A re-run skips the videos already done with the same
content and settings, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dronevision.cli import hydra_main, model_overrides, resolve_out_dir, write_summary
from dronevision.errors import DroneVisionError
from dronevision.track.report import PER_DAY_COLUMNS, per_day, per_day_chart, video_day, write_csv
from dronevision.track.sightings import SIGHTING_COLUMNS

log = logging.getLogger(__name__)

RUN_FILE = "track_run.json"  # which model this out_dir's results belong to
MERGED = ("sightings.csv", "sightings_per_day.csv", "sightings_per_day.png", "summary.json")
# the settings a video's result depends on: change one and the video is tracked again
RESULT_KEYS = ("detector", "slicing", "tracker", "sightings", "video", "labels", "every_s", "start_s", "end_s",
               "classes", "image_fps", "skip_frames")  # fmt: skip


def content_sha256(path: Path) -> str:
    """Content hash of a file, or of a folder's files with their relative names (an image sequence, an IR)."""
    from dronevision.dataset.writer import sha256_file

    if not path.is_dir():
        return sha256_file(path)
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return hashlib.sha256("".join(f"{p.relative_to(path)} {sha256_file(p)}\n" for p in files).encode()).hexdigest()


def check_out_dir(out_dir: Path, model: Path, model_sha: str, *, overwrite: bool) -> None:
    """Refuse an ``out_dir`` holding another model's results unless ``overwrite`` (which clears them)."""
    marker = out_dir / RUN_FILE
    if marker.is_file():
        previous = json.loads(marker.read_text())
        if previous.get("model_sha256") != model_sha:
            if not overwrite:
                raise DroneVisionError(
                    f"{out_dir} holds the results of another model ({previous.get('model')}); "
                    "pass overwrite=true to replace them, or choose another out_dir"
                )
            shutil.rmtree(out_dir / "videos", ignore_errors=True)
            for name in MERGED:
                (out_dir / name).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    part = marker.with_suffix(".json.part")
    part.write_text(json.dumps({"model": str(model), "model_sha256": model_sha}, indent=2) + "\n")
    part.replace(marker)


def class_ids(names: Mapping[int, str], wanted: Sequence[str] | None) -> list[int] | None:
    """Class ids of the names asked for; None keeps every class.

    Examples:
        >>> class_ids({0: "car", 1: "truck"}, ["truck"])
        [1]
        >>> class_ids({0: "car"}, ["tank"])
        Traceback (most recent call last):
        ...
        dronevision.errors.DroneVisionError: classes ['tank'] are not in the model's classes ['car']
    """
    if not wanted:
        return None
    by_name = {v: k for k, v in names.items()}
    missing = [c for c in wanted if c not in by_name]
    if missing:
        raise DroneVisionError(f"classes {missing} are not in the model's classes {list(names.values())}")
    return [by_name[c] for c in wanted]


def unscaled_settings(slicing: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The ``slicing`` settings without ``scales``/``gsd`` while both are off, so that results tracked before those
    keys existed keep their fingerprint.

    Examples:
        >>> unscaled_settings({"tile": 640, "scales": None, "gsd": {"train_m": None, "sidecar": True}})
        {'tile': 640}
        >>> unscaled_settings({"tile": 640, "scales": [1.0, 1.5], "gsd": None})
        {'tile': 640, 'scales': [1.0, 1.5]}
    """
    if not slicing:
        return slicing
    out = dict(slicing)
    if out.get("scales") is None:
        out.pop("scales", None)
    if not (out.get("gsd") or {}).get("train_m"):
        out.pop("gsd", None)
    return out


def _done(out_dir: Path, video_id: str, sha: str, fingerprint: str) -> dict[str, Any] | None:
    """The stored result of a video tracked before with the same content and settings, else None."""
    path = out_dir / "videos" / video_id / "result.json"
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return result if result.get("sha256") == sha and result.get("fingerprint") == fingerprint else None


def run(cfg: DictConfig) -> dict[str, Any]:
    """Track every input video; write the per-video folders, the merged reports and summary.json."""
    from dronevision.track.video import release_detectors

    try:
        return _run(cfg)
    finally:
        release_detectors()  # a notebook or test process keeps no inference sessions alive after the run


def _run(cfg: DictConfig) -> dict[str, Any]:
    from dronevision.cli import interruptible
    from dronevision.executor import run_tasks
    from dronevision.sample.command import video_ids
    from dronevision.sample.decode import find_inputs
    from dronevision.sample.labels import annotation_for, check_labels
    from dronevision.track.video import detector_for, track_video

    started = time.perf_counter()
    if not cfg.get("weights"):
        raise DroneVisionError("model is required (model=<file>): a .pt, an .onnx or an OpenVINO IR folder")
    if not cfg.get("input"):
        raise DroneVisionError("input is required: a video file, a folder, a glob or an image-sequence folder")
    model = Path(str(cfg.weights)).expanduser().resolve()
    if not model.exists():
        raise DroneVisionError(f"model {model} does not exist")
    check_labels(cfg.labels)
    fmt, labels_path = cfg.labels.get("format"), cfg.labels.get("path")
    inputs = find_inputs(str(cfg.input))
    out_dir = resolve_out_dir(cfg)
    model_sha = content_sha256(model.parent if model.suffix.lower() == ".xml" else model)  # an IR: .xml and .bin

    task_cfg: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    task_cfg["weights"] = str(model)
    detector = detector_for(task_cfg)  # loaded once here: the model and class checks, before anything is written
    task_cfg["class_ids"] = class_ids(detector.names, cfg.get("classes"))
    check_out_dir(out_dir, model, model_sha, overwrite=bool(cfg.overwrite))
    settings = {k: task_cfg.get(k) for k in RESULT_KEYS}
    settings["slicing"] = unscaled_settings(settings["slicing"])
    task_cfg["fingerprint"] = hashlib.sha256(json.dumps([model_sha, settings], sort_keys=True).encode()).hexdigest()

    results: list[dict[str, Any] | None] = []
    tasks = []
    from tqdm import tqdm

    for path, vid in zip(tqdm(inputs, desc="hashing", unit="video", leave=False), video_ids(inputs)):
        sha = content_sha256(path) if path.exists() else ""
        done = _done(out_dir, vid, sha, task_cfg["fingerprint"])
        results.append(done)
        if done is None:
            truth = annotation_for(Path(str(labels_path)), vid, len(inputs)) if fmt else None
            tasks.append(
                (str(path), vid, str(out_dir), {**task_cfg, "sha256": sha, "truth_path": truth and str(truth)})
            )
    skipped = len(inputs) - len(tasks)
    if skipped:
        log.info("%d of %d videos already tracked with these settings: skipped", skipped, len(inputs))
    workers = int(cfg.workers or 1)
    with interruptible():
        fresh = iter(run_tasks(track_video, tasks, cfg.executor, workers=workers, desc="tracking"))
    merged = [r if r is not None else next(fresh) for r in results]
    for path, r in zip(inputs, merged):
        r["day"], r["day_source"] = video_day(path, list(cfg.day.sources), str(cfg.day.pattern))
    summary = _report(out_dir, merged, cfg, model, time.perf_counter() - started, skipped)
    summary["mlflow"] = _log_run(cfg, model, out_dir, summary)
    write_summary(out_dir, summary)
    print(format_summary(summary))
    if summary["failed_videos"] == summary["videos"]:
        first = next(r for r in merged if r["error"])
        raise DroneVisionError(
            f"every input failed (see {out_dir / 'summary.json'}): {first['video']}: {first['error']}"
        )
    return summary


def _report(
    out_dir: Path, results: Sequence[dict[str, Any]], cfg: DictConfig, model: Path, seconds: float, skipped: int
) -> dict[str, Any]:
    """Write the merged reports; return the summary (without its ``mlflow`` block)."""
    good = [r for r in results if not r["error"]]
    rows = []
    for r in good:
        for s in json.loads((out_dir / "videos" / r["video_id"] / "sightings.json").read_text()):
            rows.append({**s, "thumbnail": f"videos/{r['video_id']}/{s['thumbnail']}" if s["thumbnail"] else ""})
    write_csv(out_dir / "sightings.csv", rows, SIGHTING_COLUMNS)
    days = per_day(results)
    write_csv(out_dir / "sightings_per_day.csv", days, PER_DAY_COLUMNS)
    chart = per_day_chart(days, out_dir / "sightings_per_day.png")
    classes: dict[str, dict[str, int]] = {}
    for r in good:
        for key in ("sightings", "detections"):
            for cls, n in r[key].items():
                classes.setdefault(cls, {"sightings": 0, "detections": 0})[key] += n
    split: Counter[str] = Counter()
    for r in good:
        split.update(r["time_split_s"])
    video_seconds = sum(r["seconds"] for r in good)
    processed = sum(r["frames_processed"] for r in good)
    footage = sum(r["footage_s"] for r in good)
    return {
        "out_dir": str(out_dir),
        "model": str(model),
        "runtime": good[0]["runtime"] if good else None,
        "videos": len(results),
        "failed_videos": len(results) - len(good),
        "skipped_videos": skipped,
        "frames_decoded": sum(r["frames_decoded"] for r in results),
        "frames_processed": processed,
        "footage_s": round(footage, 3),
        "seconds": round(seconds, 3),
        "tracking_seconds": round(video_seconds, 3),
        "setup_seconds": round(sum(r.get("setup_s", 0.0) for r in good), 3),
        "frames_per_s": round(processed / video_seconds, 2) if video_seconds else None,
        "realtime_factor": round(footage / video_seconds, 2) if video_seconds else None,
        "sightings": sum(c["sightings"] for c in classes.values()),
        "per_class": dict(sorted(classes.items())),
        "time_split_s": {k: round(v, 3) for k, v in sorted(split.items())},
        "every_s": cfg.every_s,
        "tracker": cfg.tracker.tracker_type,
        "outputs": {
            "sightings": str(out_dir / "sightings.csv"),
            "per_day": str(out_dir / "sightings_per_day.csv"),
            "per_day_chart": str(chart) if chart else None,
            "videos": str(out_dir / "videos"),
        },
        "errors": {r["video"]: r["error"] for r in results if r["error"]},
        "per_video": [{k: v for k, v in r.items() if k not in ("fingerprint", "names")} for r in results],
    }


def _log_run(cfg: DictConfig, model: Path, out_dir: Path, summary: Mapping[str, Any]) -> dict[str, Any]:
    """One MLflow run per track run, tagged with the model's training run; returns the summary's ``mlflow`` block."""
    from dronevision.mlflow_run import MlflowRun, find_training_run, flatten

    training = find_training_run(model)
    if not cfg.mlflow.get("tracking_uri"):
        return MlflowRun.untracked("mlflow.tracking_uri is null")
    tracker = MlflowRun.from_config(cfg.mlflow, out_dir)
    tags = {"dronevision.stage": "track"}
    if training is not None:
        tags["dronevision.training_run_id"] = training.run_id
        tags["dronevision.training_tracking_uri"] = training.tracking_uri
    tracker.start(tags=tags)
    tracker.log_params(flatten(OmegaConf.to_container(cfg, resolve=True)))
    metrics = {k: summary[k] for k in ("videos", "failed_videos", "frames_processed", "footage_s", "sightings")}
    metrics.update({k: summary[k] for k in ("frames_per_s", "realtime_factor") if summary[k] is not None})
    for cls, counts in summary["per_class"].items():
        metrics.update({f"{key}/{cls}": n for key, n in counts.items()})
    tracker.log_metrics(metrics)
    for name in ("sightings.csv", "sightings_per_day.csv", "sightings_per_day.png"):
        if (out_dir / name).is_file():
            tracker.log_artifact(out_dir / name, "track")
    tracker.end("FINISHED")
    return tracker.summary(training_run_id=training.run_id if training else None)


def format_summary(summary: Mapping[str, Any]) -> str:
    """The command's closing lines: the sightings table and where the reports are."""
    lines = [
        f"dronevision track: {summary['sightings']} sightings in {summary['videos']} videos "
        f"({summary['failed_videos']} failed, {summary['skipped_videos']} already done), "
        f"{summary['footage_s']:.0f} s of footage at {summary['frames_per_s']} frames/s, "
        f"{summary['realtime_factor']}x real time",
        f"  {'class':<16} {'sightings':>9} {'detections':>10}",
    ]
    for cls, counts in summary["per_class"].items():
        lines.append(f"  {cls:<16} {counts['sightings']:>9} {counts['detections']:>10}")
    lines.append(f"  report   {summary['outputs']['sightings']}")
    if summary["mlflow"].get("ok"):
        lines.append(f"  mlflow   run {summary['mlflow']['run_id']}")
    return "\n".join(lines)


main = hydra_main("track", run, partial(model_overrides, to="weights"))

if __name__ == "__main__":
    main()
