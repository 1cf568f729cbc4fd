"""The track stage's pictures: the annotated MP4 (boxes, class, track id, a trail) and the contact sheet."""

from __future__ import annotations

import os
from collections import defaultdict, deque
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

# one colour per track id, cycling: saturated BGR that reads on grey terrain
PALETTE = ((56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72),
           (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0), (168, 153, 44), (255, 194, 0),
           (147, 69, 52), (255, 115, 100), (236, 24, 0), (255, 56, 132), (133, 0, 82), (255, 56, 203))  # fmt: skip


def colour(track_id: int) -> tuple[int, int, int]:
    """The drawing colour of a track id."""
    return PALETTE[track_id % len(PALETTE)]


class Annotator:
    """Draws tracked boxes with ``class #id`` and a trail of each track's last ``trail`` centres, on a copy of the
    frame scaled down so that its longer side is at most ``max_side`` (None: full size)."""

    def __init__(self, names: Mapping[int, str], trail: int = 20, max_side: int | None = None) -> None:
        self.names, self.max_side = names, max_side
        self.trails: dict[int, deque[tuple[int, int]]] = defaultdict(lambda: deque(maxlen=max(1, trail)))

    def draw(self, image: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The (scaled) frame with the tracker's ``x1, y1, x2, y2, id, score, class`` rows drawn on it."""
        import cv2

        h, w = image.shape[:2]
        scale = min(1.0, self.max_side / max(h, w)) if self.max_side else 1.0
        if scale < 1.0:
            out = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_LINEAR)
        else:
            out = image.copy()
        thickness = max(1, round(max(out.shape[:2]) / 800))
        boxes = np.asarray(rows, dtype=np.float64).reshape(-1, rows.shape[-1])[:, :7].copy()
        boxes[:, :4] *= scale
        for x1, y1, x2, y2, tid, _score, cls in boxes:
            track_id, c = int(tid), colour(int(tid))
            p1, p2 = (int(x1), int(y1)), (int(x2), int(y2))
            cv2.rectangle(out, p1, p2, c, thickness, cv2.LINE_AA)
            trail = self.trails[track_id]
            trail.append((int((x1 + x2) / 2), int((y1 + y2) / 2)))
            if len(trail) > 1:
                cv2.polylines(out, [np.asarray(trail, np.int32)], False, c, thickness, cv2.LINE_AA)
            label = f"{self.names.get(int(cls), int(cls))} #{track_id}"
            scale = 0.4 * thickness
            (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
            top = max(0, p1[1] - th - base - 2)
            cv2.rectangle(out, (p1[0], top), (p1[0] + tw + 2, top + th + base + 2), c, -1)
            cv2.putText(out, label, (p1[0] + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                        cv2.LINE_AA)  # fmt: skip
        return out


class Mp4Writer:
    """H.264 (yuv420p, ``+faststart``) MP4 that common players open, written to ``<path>.part`` and renamed on
    :meth:`close`, so a torn file never carries the real name.

    Args:
        path: the ``.mp4`` to write.
        fps: frame rate of the written frames (processed frames per second of footage).
        crf: x264 quality (18 near-lossless, 23 default, 28 small).
        preset: x264 speed preset (``ultrafast`` .. ``veryslow``): faster makes larger files.
    """

    def __init__(self, path: Path, fps: float, *, crf: int = 23, preset: str = "veryfast") -> None:
        import av

        self.path, self.fps, self.crf, self.preset = Path(path), fps, crf, preset
        self.part = self.path.with_name(self.path.name + ".part")
        self.container = av.open(str(self.part), mode="w", format="mp4", options={"movflags": "+faststart"})
        self.stream: Any = None
        self.frames = 0

    def write(self, image_bgr: np.ndarray) -> None:
        """Encode one BGR frame (odd sizes are cropped by a pixel: yuv420p needs even sides)."""
        import av

        h, w = image_bgr.shape[:2]
        if self.stream is None:
            rate = Fraction(self.fps).limit_denominator(1001)
            self.stream = self.container.add_stream("libx264", rate=rate)
            self.stream.width, self.stream.height = w - w % 2, h - h % 2
            self.stream.pix_fmt = "yuv420p"
            self.stream.options = {"crf": str(self.crf), "preset": self.preset}
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image_bgr[: h - h % 2, : w - w % 2]), format="bgr24")
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def close(self) -> Path | None:
        """Flush, close and rename into place; None when no frame was written (no file is left)."""
        if self.stream is not None:
            for packet in self.stream.encode():
                self.container.mux(packet)
        self.container.close()
        if not self.frames:
            self.part.unlink(missing_ok=True)
            return None
        os.replace(self.part, self.path)
        return self.path

    def abort(self) -> None:
        """Close and delete the partial file."""
        try:
            self.container.close()
        finally:
            self.part.unlink(missing_ok=True)


def contact_sheet(
    thumbnails: Sequence[tuple[str, np.ndarray]], path: Path, *, size: int = 96, columns: int = 10
) -> Path | None:
    """A grid of labelled thumbnails (``label``, BGR crop) as one PNG; None when there are none."""
    import cv2

    if not thumbnails:
        return None
    rows = -(-len(thumbnails) // columns)
    cell_h = size + 16
    sheet = np.full((rows * cell_h, min(columns, len(thumbnails)) * size, 3), 32, np.uint8)
    for k, (label, thumb) in enumerate(thumbnails):
        r, c = divmod(k, columns)
        th, tw = thumb.shape[:2]
        y, x = r * cell_h + (size - th) // 2, c * size + (size - tw) // 2
        sheet[y : y + th, x : x + tw] = thumb
        cv2.putText(sheet, label[:16], (c * size + 2, r * cell_h + size + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                    (255, 255, 255), 1, cv2.LINE_AA)  # fmt: skip
    part = path.with_name(path.name + ".part.png")
    if not cv2.imwrite(str(part), sheet):
        raise OSError(f"{path}: the contact sheet could not be written")
    os.replace(part, path)
    return path
