"""VisDrone-DET-style sets of generated images with exact boxes, for tests and benchmarks."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def write_visdrone_det_set(
    root: Path,
    *,
    n_images: int,
    boxes_per_image: int,
    resolution_wh: tuple[int, int] = (640, 360),
    n_videos: int = 10,
    ignored_every: int = 3,
    seed: int = 0,
) -> Path:
    """Write a VisDrone-DET-style folder (``images/`` + ``annotations/``) of noise images with bright boxes.

    Names follow VisDrone's ``<video>_<frame>_d_<index>``, spread over ``n_videos`` videos; every
    ``ignored_every``-th image also gets one ignored region (category 0). Returns ``root``.
    """
    import cv2

    rng = np.random.default_rng(seed)
    w, h = resolution_wh
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    base = rng.integers(0, 80, (h, w, 3), dtype=np.uint8)
    for i in range(n_images):
        name = f"{i % n_videos + 1:07d}_{i:05d}_d_{i:07d}"
        image = np.roll(base, i * 7, axis=1)
        bw = rng.integers(4, 40, boxes_per_image)
        bh = rng.integers(4, 40, boxes_per_image)
        x = rng.integers(0, w - 40, boxes_per_image)
        y = rng.integers(0, h - 40, boxes_per_image)
        cat = rng.integers(1, 11, boxes_per_image)
        lines = [f"{a},{b},{c},{d},1,{e},0,{int(e) % 3}" for a, b, c, d, e in zip(x, y, bw, bh, cat)]
        for a, b, c, d in zip(x[:50], y[:50], bw[:50], bh[:50]):
            image[b : b + d, a : a + c] = 220
        if ignored_every and i % ignored_every == 0:
            lines.append(f"{w - 60},{h - 40},50,30,0,0,0,0")
        cv2.imwrite(str(root / "images" / f"{name}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 80])
        (root / "annotations" / f"{name}.txt").write_text("\n".join(lines) + "\n")
    return root
