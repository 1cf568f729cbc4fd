"""The archive report: the day of each video, sightings per class per day (CSV and a PNG chart), merged CSV."""

from __future__ import annotations

import csv
import datetime as dt
import os
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dronevision.errors import DroneVisionError

DAY_SOURCES = ("name", "creation_time", "file_time")
PER_DAY_COLUMNS = ("day", "class", "sightings", "videos", "footage_s")


def day_from_name(name: str, pattern: str) -> dt.date | None:
    """The date in a file name, from ``pattern``'s groups ``y``, ``m`` and ``d``; None when absent or impossible.

    Examples:
        >>> p = r"(?P<y>20\\d\\d)-?(?P<m>[01]\\d)-?(?P<d>[0-3]\\d)"
        >>> day_from_name("DJI_20260314_101500.MP4", p), day_from_name("flight-2026-02-30.mp4", p)
        (datetime.date(2026, 3, 14), None)
    """
    match = re.search(pattern, name)
    if match is None:
        return None
    try:
        return dt.date(int(match["y"]), int(match["m"]), int(match["d"]))
    except (ValueError, IndexError):
        return None


def creation_day(path: Path) -> dt.date | None:
    """The container's ``creation_time`` tag (drones and phones write it), as a UTC date."""
    if not path.is_file():
        return None
    import av

    try:
        with av.open(str(path)) as container:
            tags = {**container.metadata, **(container.streams.video[0].metadata if container.streams.video else {})}
    except av.error.FFmpegError:
        return None
    stamp = tags.get("creation_time")
    if not stamp:
        return None
    try:
        return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(dt.timezone.utc).date()
    except ValueError:
        return None


def video_day(path: Path, sources: Sequence[str], pattern: str) -> tuple[str | None, str | None]:
    """``(YYYY-MM-DD, source)`` from the first of ``sources`` that knows it (name, creation_time, file_time)."""
    for source in sources:
        if source not in DAY_SOURCES:
            raise DroneVisionError(f"day.sources: unknown '{source}'; valid: {', '.join(DAY_SOURCES)}")
        if source == "name":
            day = day_from_name(path.name, pattern)
        elif source == "creation_time":
            day = creation_day(path)
        else:
            day = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.timezone.utc).date() if path.exists() else None
        if day is not None:
            return day.isoformat(), source
    return None, None


def per_day(results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Sightings per day and class over the videos that were tracked (failed ones are left out).

    Examples:
        >>> a = {"error": None, "day": "2026-03-14", "sightings": {"car": 3}, "footage_s": 60.0}
        >>> b = {"error": None, "day": "2026-03-14", "sightings": {"car": 1, "truck": 2}, "footage_s": 30.0}
        >>> rows = per_day([a, b])
        >>> [(r["day"], r["class"], r["sightings"], r["videos"]) for r in rows]
        [('2026-03-14', 'car', 4, 2), ('2026-03-14', 'truck', 2, 1)]
    """
    counts: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0, 0.0])
    for r in results:
        if r.get("error"):
            continue
        day = r.get("day") or "unknown"
        for cls, n in r["sightings"].items():
            entry = counts[(day, cls)]
            entry[0] += n
            entry[1] += 1
            entry[2] += r.get("footage_s") or 0.0
    return [
        {"day": day, "class": cls, "sightings": int(n), "videos": int(v), "footage_s": round(s, 3)}
        for (day, cls), (n, v, s) in sorted(counts.items())
    ]


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> Path:
    """Write a CSV through a temporary name, so the real name never holds half a file."""
    part = path.with_name(path.name + ".part")
    with part.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(part, path)
    return path


def per_day_chart(rows: Sequence[Mapping[str, Any]], path: Path) -> Path | None:
    """A stacked bar chart of sightings per day, one colour per class; None without rows."""
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    days = sorted({r["day"] for r in rows})
    classes = sorted({r["class"] for r in rows})
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(days) + 2), 3.5), dpi=120)
    bottom = np.zeros(len(days))
    for cls in classes:
        heights = np.array([sum(r["sightings"] for r in rows if r["day"] == d and r["class"] == cls) for d in days])
        ax.bar(days, heights, bottom=bottom, label=cls)
        bottom += heights
    ax.set_ylabel("sightings")
    ax.set_title("unique sightings per day")
    ax.legend(fontsize=8)
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right")
    fig.tight_layout()
    part = path.with_name(path.name + ".part.png")
    fig.savefig(part)
    plt.close(fig)
    os.replace(part, path)
    return path
