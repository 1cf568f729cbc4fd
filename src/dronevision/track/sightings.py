"""Tracks into sightings: the pure part of the track stage (no video, no model).

A *sighting* is one tracked object: a track that lasts at least ``min_frames`` processed frames (or
``min_seconds`` of footage) and whose best confidence reaches ``min_conf``. The same truck in 300 frames is one
sighting; an object per frame times frames is not.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# tracks.jsonl: MOTChallenge's ten columns (frame 1-based, box left/top/width/height, world x/y/z = -1) plus ours
MOT_COLUMNS = ("frame", "id", "bb_left", "bb_top", "bb_width", "bb_height", "conf", "x", "y", "z")
SIGHTING_COLUMNS = (
    "video",
    "id",
    "class",
    "first_s",
    "last_s",
    "frames",
    "best_conf",
    "best_frame",
    "x1",
    "y1",
    "x2",
    "y2",
    "thumbnail",
)


@dataclass
class Track:
    """What is known of one track id so far."""

    track_id: int
    first_frame: int
    first_s: float
    last_frame: int = 0
    last_s: float = 0.0
    frames: int = 0
    best_conf: float = -1.0
    best_frame: int = 0
    best_xyxy: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    classes: Counter[int] = field(default_factory=Counter)
    thumbnail: np.ndarray | None = field(default=None, repr=False)

    @property
    def class_id(self) -> int:
        """The class seen most often (ties: the smallest id)."""
        return min(self.classes.items(), key=lambda kv: (-kv[1], kv[0]))[0]


def crop_thumbnail(image: np.ndarray, xyxy: Sequence[float], size: int, margin: float = 0.25) -> np.ndarray:
    """The box with ``margin`` of its size around it, cut from ``image`` and scaled to fit ``size`` x ``size``.

    Examples:
        >>> crop_thumbnail(np.zeros((100, 200, 3), np.uint8), [10, 10, 50, 30], 32).shape
        (16, 32, 3)
    """
    import cv2

    h, w = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    mx, my = (x2 - x1) * margin, (y2 - y1) * margin
    left, top = int(max(0, np.floor(x1 - mx))), int(max(0, np.floor(y1 - my)))
    right, bottom = int(min(w, np.ceil(x2 + mx))), int(min(h, np.ceil(y2 + my)))
    crop = image[top : max(bottom, top + 1), left : max(right, left + 1)]
    scale = size / max(crop.shape[:2])
    out_wh = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
    return cv2.resize(crop, out_wh, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


class TrackLog:
    """Every tracked box, frame by frame, folded into per-track records.

    Args:
        thumbnail: side of the thumbnail crops in pixels (0: none).
    """

    def __init__(self, thumbnail: int = 96) -> None:
        self.thumbnail = thumbnail
        self.tracks: dict[int, Track] = {}

    def update(self, frame: int, t: float, rows: np.ndarray, image: np.ndarray | None = None) -> list[dict[str, Any]]:
        """Add one processed frame's tracker output, ``(N, >=7)`` rows of ``x1, y1, x2, y2, id, score, class``.

        Returns:
            The frame's boxes as ``tracks.jsonl`` records (MOTChallenge columns, frame ``frame + 1``).
        """
        records = []
        for x1, y1, x2, y2, tid, score, cls in np.asarray(rows, dtype=np.float64).reshape(-1, rows.shape[-1])[:, :7]:
            track_id, class_id = int(tid), int(cls)
            track = self.tracks.get(track_id)
            if track is None:
                track = self.tracks[track_id] = Track(track_id, first_frame=frame, first_s=t)
            track.last_frame, track.last_s = frame, t
            track.frames += 1
            track.classes[class_id] += 1
            if score > track.best_conf:
                track.best_conf, track.best_frame = float(score), frame
                track.best_xyxy = (float(x1), float(y1), float(x2), float(y2))
                if image is not None and self.thumbnail:
                    track.thumbnail = crop_thumbnail(image, track.best_xyxy, self.thumbnail)
            records.append(
                {
                    "frame": frame + 1,
                    "id": track_id,
                    "bb_left": round(float(x1), 2),
                    "bb_top": round(float(y1), 2),
                    "bb_width": round(float(x2 - x1), 2),
                    "bb_height": round(float(y2 - y1), 2),
                    "conf": round(float(score), 4),
                    "x": -1,
                    "y": -1,
                    "z": -1,
                    "class_id": class_id,
                    "time_s": round(t, 4),
                }
            )
        return records

    def sightings(
        self,
        names: Mapping[int, str],
        *,
        min_frames: int = 1,
        min_seconds: float | None = None,
        min_conf: float = 0.0,
        video: str = "",
    ) -> list[dict[str, Any]]:
        """The tracks that count as sightings, in order of first appearance, as ``sightings.csv`` rows.

        A track counts when it lasts ``min_frames`` processed frames (or, when ``min_seconds`` is set, that long
        from its first to its last frame) and its best confidence is at least ``min_conf``.

        Examples:
            >>> log = TrackLog(thumbnail=0)
            >>> rows = [[0, 0, 10, 10, 1, 0.5, 0], [5, 5, 9, 9, 2, 0.9, 1]]  # track 2 is seen once
            >>> for f in range(3):
            ...     _ = log.update(f, f / 10, np.array(rows[: 2 - (f > 0)]) + [0, 0, 0, 0, 0, f / 10, 0])
            >>> found = log.sightings({0: "car", 1: "van"}, min_frames=2)
            >>> [(s["id"], s["class"], s["frames"], s["best_conf"]) for s in found]
            [(1, 'car', 3, 0.7)]
        """
        out = []
        for track in sorted(self.tracks.values(), key=lambda tr: (tr.first_frame, tr.track_id)):
            lasted = (track.last_s - track.first_s) >= min_seconds if min_seconds else track.frames >= min_frames
            if not lasted or track.best_conf < min_conf:
                continue
            x1, y1, x2, y2 = (round(v, 1) for v in track.best_xyxy)
            out.append(
                {
                    "video": video,
                    "id": track.track_id,
                    "class": names.get(track.class_id, str(track.class_id)),
                    "first_s": round(track.first_s, 3),
                    "last_s": round(track.last_s, 3),
                    "frames": track.frames,
                    "best_conf": round(track.best_conf, 4),
                    "best_frame": track.best_frame,
                    "x1": x1,
                    "y1": y1,
                    "x2": x2,
                    "y2": y2,
                    "thumbnail": f"thumbnails/{track.track_id}.jpg" if track.thumbnail is not None else "",
                }
            )
        return out


def truth_sightings(truth: Mapping[int, tuple[np.ndarray, Any]], *, min_frames: int) -> int:
    """Unique ground-truth objects seen on at least ``min_frames`` of the given frames (the counting check's truth).

    Args:
        truth: frame -> (object ids, boxes), as :func:`dronevision.track.mot.load_truth` gives, limited to the
            processed frames.

    Examples:
        >>> truth_sightings({0: (np.array([1, 2]), None), 1: (np.array([1]), None)}, min_frames=2)
        1
    """
    seen: Counter[int] = Counter(int(i) for ids, _ in truth.values() for i in ids)
    return sum(1 for n in seen.values() if n >= min_frames)
