"""Sample frames from drone footage: choose, filter, deduplicate, write; label the kept frames.

Run ``python -m dronevision.sample input=<video | folder | glob> out_dir=<dir>``; tests call :func:`run`.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dronevision.cli import hydra_main, resolve_out_dir, write_summary
from dronevision.errors import DroneVisionError
from dronevision.executor import run_tasks
from dronevision.fsio import atomic_write, is_write_fault
from dronevision.sample.decode import (
    DecodedFrame,
    DecodeError,
    VideoError,
    damage_reason,
    find_inputs,
    read_frames,
)
from dronevision.sample.frames import Sampler, find_duplicate, judge, thumbnail

log = logging.getLogger(__name__)


def video_ids(paths: Sequence[Path]) -> list[str]:
    """File-name-safe, unique ids for the inputs (a repeated stem gets its position appended).

    Examples:
        >>> video_ids([Path("a/DJI 0001.MP4"), Path("b/DJI 0001.MP4"), Path("c/seq")])
        ['DJI_0001', 'DJI_0001-1', 'seq']
    """
    ids, seen = [], Counter()
    for path in paths:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem if path.suffix else path.name).strip("_") or "video"
        ids.append(stem if not seen[stem] else f"{stem}-{seen[stem]}")
        seen[stem] += 1
    return ids


def frame_name(video_id: str, t: float) -> str:
    """A kept frame's file name: video id and timestamp in milliseconds.

    Examples:
        >>> frame_name("flight1", 12.3456)
        'flight1_000012346ms.jpg'
    """
    return f"{video_id}_{round(t * 1000):09d}ms.jpg"


def check_window(start_s: float | None, end_s: float | None) -> None:
    """Raise :class:`DroneVisionError` for a time window that no video can have.

    Examples:
        >>> check_window(2, None), check_window(0, 0)
        (None, None)
        >>> check_window(30, 10)
        Traceback (most recent call last):
        ...
        dronevision.errors.DroneVisionError: end_s=10 is before start_s=30: the time window holds no footage
    """
    if start_s is not None and start_s < 0:
        raise DroneVisionError(f"start_s={start_s:g} is negative: it counts seconds from the start of each video")
    if end_s is not None and end_s < (start_s or 0):
        raise DroneVisionError(f"end_s={end_s:g} is before start_s={start_s or 0:g}: the time window holds no footage")


def _until_damaged(frames: Iterator[DecodedFrame], stopped: dict[str, str]) -> Iterator[DecodedFrame]:
    """The frames until FFmpeg stops part-way (damaged or cut data); its reason goes to ``stopped["failure"]``."""
    try:
        yield from frames
    except DecodeError as e:
        stopped["failure"] = e.reason


def sample_video(path: str, video_id: str, out_dir: str, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Sample one video into ``out_dir/frames``; a failed video leaves no frame files. Runs in a worker.

    A video whose decoding stops part-way (damaged or cut) keeps the frames before it, with ``damaged`` set to the
    reason, the count of frames decoded and the time decoding stopped.
    """
    import cv2

    started = time.perf_counter()
    tmp = Path(out_dir) / "frames" / f".tmp-{video_id}"
    tmp.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "video": path,
        "video_id": video_id,
        "error": None,
        "damaged": None,
        "decoded": 0,
        "kept": 0,
        "drops": {},
        "records": [],
        "seconds": {"decode": 0.0, "filters": 0.0, "write": 0.0},
    }
    sampling, filters = cfg["sampling"], cfg["filters"]
    drops: Counter[str] = Counter()
    try:
        info, frames = read_frames(
            Path(path),
            skip_frames=sampling.get("skip_frames"),
            start_s=float(cfg["start_s"] or 0),
            end_s=cfg["end_s"],
            threads=int(cfg["decode_threads"]),
            image_fps=float(cfg["image_fps"]),
        )
        result.update(fps=info["fps"], duration_s=info["duration_s"], codec=info["codec"])
        sampler = Sampler(
            sampling["method"],
            every_s=float(sampling.get("every_s") or 0),
            threshold=float(sampling.get("threshold") or 0),
            start_s=float(cfg["start_s"] or 0),
        )
        width, last_t = int(filters["analysis_width"]), None
        regions = int(filters.get("region_grid") or 0) > 0
        kept_hashes: list[int] = []
        kept_thumbs: list[Any] | None = [] if regions else None
        max_frames, quality = cfg.get("max_frames"), int(cfg["jpeg_quality"])
        stopped: dict[str, str] = {}
        tick = time.perf_counter()
        for frame in _until_damaged(frames, stopped):
            result["decoded"] += 1
            last_t = frame.time
            thumb = frame.gray(64) if sampler.method == "scene" else None
            if not sampler.wants(frame.time, thumb):
                continue
            gray = frame.gray(width)
            now = time.perf_counter()
            result["seconds"]["decode"] += now - tick
            stats, reason = judge(gray, filters=filters, seen=kept_hashes, thumbs=kept_thumbs)
            record = {
                "video": video_id,
                "frame_index": frame.index,
                "pts_s": round(frame.time, 6),
                **stats,
                "kept": reason is None,
                "reason": reason,
                "file": None,
            }
            tick = time.perf_counter()
            result["seconds"]["filters"] += tick - now
            if reason is None:
                name = frame_name(video_id, frame.time)
                ok, jpeg = cv2.imencode(".jpg", frame.bgr(), [cv2.IMWRITE_JPEG_QUALITY, quality])
                if not ok:
                    raise VideoError(f"frame at {frame.time:.3f} s could not be encoded")
                (tmp / name).write_bytes(jpeg.tobytes())
                kept_hashes.append(int(stats["hash"], 16))
                if kept_thumbs is not None:  # for the region check, here and across videos (not written)
                    record["thumb"] = thumbnail(gray)
                    kept_thumbs.append(record["thumb"])
                record["file"] = f"frames/{name}"
                result["kept"] += 1
                now = time.perf_counter()
                result["seconds"]["write"] += now - tick
                tick = now
            else:
                drops[reason] += 1
            result["records"].append(record)
            if max_frames and result["kept"] >= int(max_frames):
                break
        result["seconds"]["decode"] += time.perf_counter() - tick
        damage = damage_reason(
            info,
            last_t,
            frames=result["decoded"],
            failure=stopped.get("failure"),
            end_s=cfg["end_s"],
            stopped_early=bool(max_frames) and result["kept"] >= int(max_frames),
            any_frame_may_end=sampling["method"] == "keyframes",  # the last key frame can be anywhere before the end
        )
        if damage:
            log.warning("%s: %s (%d frames kept from before it)", path, damage, result["kept"])
            result["damaged"] = {
                "reason": damage,
                "frames_decoded": result["decoded"],
                "stopped_at_s": round(last_t, 3),
            }
    except (VideoError, OSError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_write_fault(e, out_dir):  # a full or read-only out_dir is not this video's fault: stop, in one line
            raise
        result.update(error=str(e).strip().splitlines()[0], records=[], kept=0)
        return result
    result["drops"] = dict(drops)
    result["seconds"] = {k: round(v, 3) for k, v in result["seconds"].items()}
    result["seconds"]["total"] = round(time.perf_counter() - started, 3)
    return result


def dedupe_across_videos(
    results: Sequence[dict[str, Any]], max_distance: int, *, region_grid: int = 0, region_change: float = 0.0
) -> int:
    """Drop kept frames that repeat a frame kept from an earlier video (in input order; with ``region_grid``, by
    the same region check as within a video for records that hold a thumbnail); returns how many."""
    kept: list[int] = []
    thumbs: list[Any] = []
    dropped = 0
    for result in results:
        mine: list[tuple[int, Any]] = []
        for record in result["records"]:
            if not record["kept"]:
                continue
            h, thumb = int(record["hash"], 16), record.get("thumb")
            duplicate, _ = find_duplicate(
                h,
                thumb,
                seen=kept,
                thumbs=thumbs,
                max_distance=max_distance,
                grid=region_grid,
                min_change=region_change,
            )
            if duplicate:
                record.update(kept=False, reason="duplicate_across_videos")
                result["drops"]["duplicate_across_videos"] = result["drops"].get("duplicate_across_videos", 0) + 1
                result["kept"] -= 1
                record["drop_file"], record["file"] = record["file"], None
                dropped += 1
            else:
                mine.append((h, thumb))
        kept += [h for h, _ in mine]
        thumbs += [thumb for _, thumb in mine]
    return dropped


def run(cfg: DictConfig) -> dict[str, Any]:
    """Sample every input video; write frames/, frames.jsonl, labels and summary.json. Returns the summary."""
    started = time.perf_counter()
    if not cfg.get("input"):
        raise DroneVisionError("input is required: a video file, a folder, a glob or an image-sequence folder")
    from dronevision.sample.labels import check_label_config, write_labels

    check_window(cfg.start_s, cfg.end_s)
    if not isinstance(cfg.filters.region_grid, int) or cfg.filters.region_grid < 0:
        raise DroneVisionError(
            f"filters.region_grid must be a whole number >= 0 (0: no region check), got {cfg.filters.region_grid}"
        )
    inputs = find_inputs(str(cfg.input))
    check_label_config(cfg)
    out_dir = resolve_out_dir(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    task_cfg = OmegaConf.to_container(cfg, resolve=True)
    ids = video_ids(inputs)
    tasks = [(str(p), vid, str(out_dir), task_cfg) for p, vid in zip(inputs, ids)]
    results = run_tasks(sample_video, tasks, cfg.executor, workers=cfg.workers)
    max_distance = cfg.filters.max_hash_distance
    if cfg.filters.dedupe_across_videos and max_distance is not None and max_distance >= 0:
        dedupe_across_videos(
            results,
            int(max_distance),
            region_grid=cfg.filters.region_grid,
            region_change=float(cfg.filters.region_change),
        )
    _finalise_frames(out_dir, results)
    with atomic_write(out_dir / "frames.jsonl") as f:
        for result in results:
            for record in result["records"]:
                record.pop("drop_file", None)
                record.pop("thumb", None)
                f.write(json.dumps(record) + "\n")
    labels = write_labels(out_dir, results, cfg)
    seconds = time.perf_counter() - started
    summary = _summary(results, seconds, out_dir, labels)
    write_summary(out_dir, summary)
    print(
        f"dronevision sample: {summary['kept_frames']} of {summary['decoded_frames']} decoded frames kept from "
        f"{summary['videos']} videos ({summary['failed_videos']} failed, {summary['damaged_videos']} damaged) in "
        f"{seconds:.1f} s, "
        f"{summary['realtime_factor']}x real time\n  frames   {out_dir / 'frames'}"
    )
    if summary["failed_videos"] == summary["videos"]:
        raise DroneVisionError(f"every input failed (see {out_dir / 'summary.json'}): {results[0]['error']}")
    return summary


def _finalise_frames(out_dir: Path, results: Sequence[dict[str, Any]]) -> None:
    """Move each good video's frames out of its temporary folder; delete frames dropped across videos."""
    frames = out_dir / "frames"
    for result in results:
        tmp = frames / f".tmp-{result['video_id']}"
        if result["error"]:
            shutil.rmtree(tmp, ignore_errors=True)
            continue
        for record in result["records"]:
            name = (record.get("file") or record.get("drop_file") or "").removeprefix("frames/")
            if not name:
                continue
            if record["file"]:
                (tmp / name).replace(frames / name)
            else:
                (tmp / name).unlink()
        shutil.rmtree(tmp, ignore_errors=True)


def _summary(
    results: Sequence[dict[str, Any]], seconds: float, out_dir: Path, labels: Mapping[str, Any]
) -> dict[str, Any]:
    drops: Counter[str] = Counter()
    split = Counter()
    for result in results:
        drops.update(result["drops"])
        for key, value in result["seconds"].items():
            if key != "total":
                split[key] += value
    footage = sum(
        r["damaged"]["stopped_at_s"] if r.get("damaged") else r.get("duration_s") or 0
        for r in results
        if not r["error"]
    )
    return {
        "out_dir": str(out_dir),
        "videos": len(results),
        "failed_videos": sum(1 for r in results if r["error"]),
        "damaged_videos": sum(1 for r in results if r.get("damaged")),
        "decoded_frames": sum(r["decoded"] for r in results),
        "kept_frames": sum(r["kept"] for r in results),
        "drops": dict(sorted(drops.items())),
        "seconds": round(seconds, 3),
        "footage_s": round(footage, 3),
        "realtime_factor": round(footage / seconds, 2) if seconds else None,
        "time_split_s": {k: round(v, 3) for k, v in sorted(split.items())},
        "errors": {r["video"]: r["error"] for r in results if r["error"]},
        "damaged": {r["video"]: r["damaged"]["reason"] for r in results if r.get("damaged")},
        "per_video": [
            {
                k: r.get(k)
                for k in (
                    "video",
                    "video_id",
                    "codec",
                    "fps",
                    "duration_s",
                    "decoded",
                    "kept",
                    "drops",
                    "error",
                    "damaged",
                    "seconds",
                )
            }
            for r in results
        ],
        "labels": dict(labels),
    }


main = hydra_main("sample", run)

if __name__ == "__main__":
    main()
