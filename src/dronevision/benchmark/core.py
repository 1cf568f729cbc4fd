"""Pure parts of the benchmark: latency statistics, capacity against the target, choosing the best."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from dronevision.errors import DroneVisionError

log = logging.getLogger(__name__)


MODES = {
    "model_only": "model only (a fixed preprocessed tensor)",
    "e2e": "end to end (JPEG decode + letterbox + inference + NMS)",
}


def sigma_clip(samples: Sequence[float] | np.ndarray, *, sigma: float = 2.0, max_iters: int = 3) -> np.ndarray:
    """Drop samples outside mean ± ``sigma`` standard deviations, repeated up to ``max_iters`` times (ultralytics).

    Examples:
        >>> sigma_clip([1.0] * 9 + [100.0]).tolist()
        [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
        >>> sigma_clip([1.0, 2.0, 3.0]).tolist()
        [1.0, 2.0, 3.0]
    """
    data = np.asarray(samples, dtype=np.float64)
    for _ in range(max_iters):
        mean, std = data.mean(), data.std()
        kept = data[(data >= mean - sigma * std) & (data <= mean + sigma * std)]
        if len(kept) == len(data):
            break
        data = kept
    return data


def latency_stats(seconds: Sequence[float] | np.ndarray, *, batch: int) -> dict[str, float | int]:
    """Latency of one call (one batch) in ms after sigma-clipping, and frames/s = ``batch`` / p50.

    ``p99_raw_ms`` and ``max_raw_ms`` come from all samples: clipping removes the tail that p99 is meant to show.

    Examples:
        >>> s = latency_stats([0.010] * 9 + [1.0], batch=2)
        >>> s["p50_ms"], s["p90_ms"], s["fps"], s["iterations"], s["kept"], s["max_raw_ms"]
        (10.0, 10.0, 200.0, 10, 9, 1000.0)
        >>> latency_stats([0.001, 0.002, 0.003, 0.004], batch=1)["p50_ms"]
        2.5
    """
    raw = np.asarray(seconds, dtype=np.float64)
    if raw.size == 0:
        raise ValueError("no latency samples")
    kept = sigma_clip(raw)
    p50, p90, p99 = np.percentile(kept, [50, 90, 99])
    return {
        "p50_ms": round(float(p50) * 1e3, 4),
        "p90_ms": round(float(p90) * 1e3, 4),
        "p99_ms": round(float(p99) * 1e3, 4),
        "mean_ms": round(float(kept.mean()) * 1e3, 4),
        "std_ms": round(float(kept.std()) * 1e3, 4),
        "p99_raw_ms": round(float(np.percentile(raw, 99)) * 1e3, 4),
        "max_raw_ms": round(float(raw.max()) * 1e3, 4),
        "fps": round(batch / float(p50), 3),
        "iterations": int(raw.size),
        "kept": int(kept.size),
    }


def capacity(
    fps: float,
    *,
    footage_hours_per_week: float,
    sample_fps: float,
    tiles_per_frame: int,
    hours_per_week_per_machine: float,
    objects_per_frame: float | None = None,
    target_sightings_per_week: float | None = None,
) -> dict[str, Any]:
    """What one machine carries at ``fps`` end-to-end images/s, against the target footage.

    Units: ``fps`` counts model inputs per second of machine time (one input = one tile of one frame). A machine
    runs ``hours_per_week_per_machine`` h/week, so it handles ``fps × 3600 × hours_per_week_per_machine`` inputs a
    week; one hour of footage needs ``sample_fps × 3600 × tiles_per_frame`` inputs. The 3600s cancel::

        footage_hours_per_week_per_machine = fps × hours_per_week_per_machine / (sample_fps × tiles_per_frame)
        machines_needed = ceil(footage_hours_per_week / footage_hours_per_week_per_machine)
        passes = machines_needed <= 1   (one machine keeps up with all the footage)

    With ``objects_per_frame``, ``detections_per_week`` = objects in the frames one machine analyses a week (its
    footage, capped at the target footage): an upper bound on sightings, as one object seen in several frames counts
    once per frame. ``objects_per_frame_needed`` is the density at which those frames would reach the target.

    Examples:
        >>> c = capacity(30.0, footage_hours_per_week=10000, sample_fps=1.0, tiles_per_frame=1,
        ...              hours_per_week_per_machine=168, objects_per_frame=0.5, target_sightings_per_week=12000)
        >>> c["footage_hours_per_week_per_machine"], c["machines_needed"], c["passes"]
        (5040.0, 2, False)
        >>> c["frames_per_week_per_machine"], c["detections_per_week"], c["detections_vs_target"]
        (18144000.0, 9072000.0, 756.0)
        >>> capacity(30.0, footage_hours_per_week=10000, sample_fps=0.25, tiles_per_frame=2,
        ...          hours_per_week_per_machine=168)["machines_needed"]
        1
    """
    if fps <= 0 or sample_fps <= 0 or tiles_per_frame < 1 or hours_per_week_per_machine <= 0:
        raise ValueError("fps, sample_fps and hours_per_week_per_machine must be > 0 and tiles_per_frame >= 1")
    hours = fps * hours_per_week_per_machine / (sample_fps * tiles_per_frame)
    machines = math.ceil(footage_hours_per_week / hours - 1e-9) if footage_hours_per_week > 0 else 0
    frames = sample_fps * 3600 * min(hours, footage_hours_per_week)
    out: dict[str, Any] = {
        "fps": fps,
        "footage_hours_per_week_per_machine": round(hours, 3),
        "machines_needed": machines,
        "passes": machines <= 1,
        "frames_per_week_per_machine": round(frames, 3),
        "detections_per_week": None,
        "detections_vs_target": None,
        "objects_per_frame_needed": None,
    }
    if objects_per_frame is not None:
        out["detections_per_week"] = round(objects_per_frame * frames, 3)
    if target_sightings_per_week and frames > 0:
        out["objects_per_frame_needed"] = round(target_sightings_per_week / frames, 9)
        if out["detections_per_week"] is not None:
            out["detections_vs_target"] = round(out["detections_per_week"] / target_sightings_per_week, 4)
    return out


TRACK_KEYS = ("footage_s", "tracking_seconds", "sightings", "frames_processed")


def track_capacity(
    track: Mapping[str, Any],
    *,
    footage_hours_per_week: float,
    hours_per_week_per_machine: float,
    target_sightings_per_week: float | None = None,
    source: str = "",
) -> dict[str, Any]:
    """Capacity measured on the real job: a track run's ``summary.json`` (decode, detect, track and write, end to
    end, on its footage) against the weekly target.

    Measured: footage-hours per machine-hour (footage seconds / tracking seconds) and sightings per footage-hour
    (unique tracked objects, not detections). Assumed (``target/``): the footage a week, the hours a machine runs,
    and that the archive looks like the tracked footage.

    Examples:
        >>> run = {"footage_s": 600.0, "tracking_seconds": 300.0, "sightings": 20, "frames_processed": 600}
        >>> c = track_capacity(run, footage_hours_per_week=1000, hours_per_week_per_machine=100,
        ...                    target_sightings_per_week=100000)
        >>> c["measured"]["footage_hours_per_machine_hour"], c["machines_needed"], c["sightings_per_week"]
        (2.0, 5, 120000.0)
    """
    missing = [k for k in TRACK_KEYS if not isinstance(track.get(k), (int, float))]
    if missing:
        raise DroneVisionError(f"{source or 'track summary'}: not a track summary.json (no {', '.join(missing)})")
    if track["footage_s"] <= 0 or track["tracking_seconds"] <= 0:
        raise DroneVisionError(f"{source or 'track summary'}: it tracked no footage")
    rate = track["footage_s"] / track["tracking_seconds"]
    per_hour = track["sightings"] / (track["footage_s"] / 3600)
    per_machine = rate * hours_per_week_per_machine
    sightings = per_hour * footage_hours_per_week
    return {
        "source": source,
        "measured": {
            "footage_hours_per_machine_hour": round(rate, 4),
            "sightings_per_footage_hour": round(per_hour, 3),
            "footage_s": track["footage_s"],
            "sightings": track["sightings"],
            "frames_processed": track["frames_processed"],
            "every_s": track.get("every_s"),
            "runtime": track.get("runtime"),
        },
        "assumed": {
            "footage_hours_per_week": footage_hours_per_week,
            "hours_per_week_per_machine": hours_per_week_per_machine,
            "target_sightings_per_week": target_sightings_per_week,
        },
        "footage_hours_per_week_per_machine": round(per_machine, 3),
        "machines_needed": math.ceil(footage_hours_per_week / per_machine - 1e-9) if footage_hours_per_week else 0,
        "passes": per_machine >= footage_hours_per_week,
        "sightings_per_week": round(sightings, 3),
        "sightings_vs_target": round(sightings / target_sightings_per_week, 4) if target_sightings_per_week else None,
    }


def check_target(target: Mapping[str, Any]) -> dict[str, Any]:
    """The ``target`` group as plain values, refusing what capacity cannot use.

    Examples:
        >>> check_target({"footage_hours_per_week": 10, "sample_fps": 1, "tiles_per_frame": 1,
        ...               "target_sightings_per_week": 5, "objects_per_frame": None,
        ...               "hours_per_week_per_machine": 168})["tiles_per_frame"]
        1
        >>> check_target({"footage_hours_per_week": 10, "sample_fps": 0, "tiles_per_frame": 1,
        ...               "target_sightings_per_week": 5, "objects_per_frame": None,
        ...               "hours_per_week_per_machine": 168})
        Traceback (most recent call last):
        ...
        dronevision.errors.DroneVisionError: target.sample_fps must be a number > 0, got 0
    """
    out = dict(target)
    rules = {
        "footage_hours_per_week": lambda v: v >= 0,
        "sample_fps": lambda v: v > 0,
        "tiles_per_frame": lambda v: v >= 1 and float(v).is_integer(),
        "target_sightings_per_week": lambda v: v >= 0,
        "hours_per_week_per_machine": lambda v: 0 < v <= 168,
        "objects_per_frame": lambda v: v >= 0,
    }
    for key, ok in rules.items():
        value = out.get(key)
        if value is None and key == "objects_per_frame":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
            raise DroneVisionError(f"target.{key} must be a number {_RULE_TEXT[key]}, got {value}")
    out["tiles_per_frame"] = int(out["tiles_per_frame"])
    return out


_RULE_TEXT = {
    "footage_hours_per_week": ">= 0",
    "sample_fps": "> 0",
    "tiles_per_frame": ">= 1 (whole)",
    "target_sightings_per_week": ">= 0",
    "hours_per_week_per_machine": "in (0, 168]",
    "objects_per_frame": ">= 0 (or null)",
}


def as_list(value: Any, name: str) -> list[Any]:
    """A config value that may be one item or a list, as a non-empty list without repeats.

    Examples:
        >>> as_list("ort-cpu", "runtime"), as_list([1, 8, 1], "batch")
        (['ort-cpu'], [1, 8])
    """
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    items = list(dict.fromkeys(i for i in items if i is not None))
    if not items:
        raise DroneVisionError(f"{name} must name at least one value")
    return items


def pick_best(runtimes: Mapping[str, Mapping[str, Any]]) -> dict[str, Any] | None:
    """The measured runtime and batch with the most end-to-end frames/s (first wins a tie); None if none ran.

    Examples:
        >>> def res(fps):
        ...     return {"provider": "P", "precision": "f32", "e2e": {"fps": fps, "p50_ms": 1e3 / fps},
        ...             "model_only": {"fps": 2 * fps, "p50_ms": 5e2 / fps}}
        >>> r = {"a": {"batches": {"1": res(5.0), "8": res(9.0)}}, "b": {"skipped": "no GPU"}}
        >>> best = pick_best(r)
        >>> best["runtime"], best["batch"], best["e2e_fps"], pick_best({"b": {"skipped": "x"}})
        ('a', 8, 9.0, None)
    """
    best: dict[str, Any] | None = None
    for name, entry in runtimes.items():
        for batch, res in entry.get("batches", {}).items():
            if "skipped" in res or (best is not None and res["e2e"]["fps"] <= best["e2e_fps"]):
                continue
            best = {
                "runtime": name,
                "batch": int(batch),
                "provider": res["provider"],
                "precision": res["precision"],
                "e2e_fps": res["e2e"]["fps"],
                "e2e_p50_ms": res["e2e"]["p50_ms"],
                "model_only_fps": res["model_only"]["fps"],
                "model_only_p50_ms": res["model_only"]["p50_ms"],
            }
    return best


def summarise_runtimes(entries: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The key numbers of each runtime and batch, for summary.json; skipped ones keep their reason.

    Examples:
        >>> stats = {"p50_ms": 2.0, "p90_ms": 3.0, "fps": 500.0}
        >>> e = {"provider": "P", "precision": "f32", "batches": {"1": {"model_only": stats, "e2e": stats,
        ...      "capacity": {"machines_needed": 1}}, "8": {"skipped": "static batch"}}}
        >>> s = summarise_runtimes({"ort-cpu": e, "ort-cuda": {"skipped": "no GPU"}})
        >>> s["ort-cpu"]["batches"]["1"]["e2e_fps"], s["ort-cpu"]["batches"]["8"], s["ort-cuda"]
        (500.0, {'skipped': 'static batch'}, {'skipped': 'no GPU'})
    """
    out: dict[str, Any] = {}
    for name, entry in entries.items():
        if "skipped" in entry:
            out[name] = {"skipped": entry["skipped"]}
            continue
        batches: dict[str, Any] = {}
        for batch, r in entry["batches"].items():
            if "skipped" in r:
                batches[batch] = {"skipped": r["skipped"]}
                continue
            batches[batch] = {f"{mode}_{k}": r[mode][k] for mode in MODES for k in ("p50_ms", "p90_ms", "fps")}
            batches[batch]["machines_needed"] = r["capacity"]["machines_needed"]
        out[name] = {"provider": entry["provider"], "precision": entry["precision"], "batches": batches}
    return out


def measured_entries(entries: Mapping[str, Any]) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """(runtime, batch, entry) of every measured runtime and batch, in order."""
    for name, entry in entries.items():
        for batch, r in entry.get("batches", {}).items():
            if "skipped" not in r:
                yield name, int(batch), r
