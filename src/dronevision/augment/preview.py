"""A PNG grid of augmented training images with their augmented boxes drawn: how a policy looks before training."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dronevision.augment.io import load_sample
from dronevision.augment.policy import Policy, augment_sample, sample_seed
from dronevision.errors import DroneVisionError

CELL = 256  # pixels per grid cell
PALETTE = ((0, 255, 0), (255, 128, 0), (0, 160, 255), (255, 0, 255), (255, 255, 0), (0, 255, 255))  # RGB


def pick_indices(n_images: int, n: int, *, seed: int) -> list[int]:
    """``n`` image indices out of ``n_images``: distinct while possible, then repeated; fixed per seed.

    Examples:
        >>> picked = pick_indices(3, 5, seed=0)
        >>> sorted(picked[:3]), len(picked), picked == pick_indices(3, 5, seed=0)
        ([0, 1, 2], 5, True)
    """
    if n_images < 1:
        raise ValueError("no images to pick from")
    rng = np.random.default_rng(seed)
    order: list[int] = []
    while len(order) < n:
        order += rng.permutation(n_images).tolist()
    return order[:n]


def grid_shape(n: int) -> tuple[int, int]:
    """``(rows, cols)`` of a near-square grid for ``n`` cells.

    Examples:
        >>> grid_shape(16), grid_shape(5), grid_shape(1)
        ((4, 4), (2, 3), (1, 1))
    """
    cols = math.ceil(math.sqrt(n))
    return math.ceil(n / cols), cols


def draw_cell(
    rgb: np.ndarray, boxes_xyxy: np.ndarray, class_ids: np.ndarray, *, caption: str, cell: int = CELL
) -> np.ndarray:
    """The image fitted into a ``cell`` x ``cell`` square, its boxes drawn in their class colours, a caption below."""
    import cv2

    h, w = rgb.shape[:2]
    scale = cell / max(h, w)
    canvas = np.zeros((cell, cell, 3), np.uint8)
    resized = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    if resized.ndim == 2:
        resized = cv2.cvtColor(resized, cv2.COLOR_GRAY2RGB)
    canvas[: resized.shape[0], : resized.shape[1]] = resized
    for (x1, y1, x2, y2), cls in zip(np.asarray(boxes_xyxy).reshape(-1, 4) * scale, np.asarray(class_ids).tolist()):
        colour = PALETTE[int(cls) % len(PALETTE)]
        cv2.rectangle(canvas, (round(x1), round(y1)), (round(x2), round(y2)), colour, 1)
    cv2.rectangle(canvas, (0, cell - 16), (cell, cell), (0, 0, 0), -1)
    cv2.putText(canvas, caption[:40], (3, cell - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (255, 255, 255), 1, cv2.LINE_AA)
    return canvas


def tile(cells: Sequence[np.ndarray], cols: int) -> np.ndarray:
    """Cells (same shape) laid out row by row, ``cols`` per row, the last row padded with black.

    Examples:
        >>> tile([np.zeros((2, 2, 3), np.uint8)] * 3, cols=2).shape
        (4, 4, 3)
    """
    cells = list(cells) + [np.zeros_like(cells[0])] * (-len(cells) % cols)
    rows = [np.concatenate(cells[i : i + cols], axis=1) for i in range(0, len(cells), cols)]
    return np.concatenate(rows, axis=0)


def preview_samples(
    policy: Policy, dataset: Any, *, n: int = 16, split: str = "train", seed: int = 0
) -> tuple[list[np.ndarray], list[dict[str, Any]]]:
    """Augment ``n`` images of a split: their grid cells and, per sample, the source and box counts."""
    if split not in dataset.splits:
        raise DroneVisionError(f"split '{split}' is not in {dataset.yaml_path} (splits: {', '.join(dataset.splits)})")
    images = sorted(dataset.splits[split])
    if not images:
        raise DroneVisionError(f"the {split} split of {dataset.yaml_path} has no images")
    if n < 1:
        raise DroneVisionError(f"n={n}: the grid needs at least one image")
    compose = policy.compose()
    cells, info = [], []
    for k, index in enumerate(pick_indices(len(images), n, seed=seed)):
        rgb, xyxy, ids = load_sample(images[index], n_classes=len(dataset.names))
        compose.set_random_seed(sample_seed(seed, index, k + 1))
        out, boxes, out_ids = augment_sample(compose, rgb, xyxy, ids)
        cells.append(draw_cell(out, boxes, out_ids, caption=f"{len(xyxy)}->{len(boxes)} boxes  {images[index].stem}"))
        info.append({"image": str(images[index]), "boxes_before": len(xyxy), "boxes_after": len(boxes)})
    return cells, info


def write_preview(
    policy: Policy, dataset: Any, out: Path, *, n: int = 16, split: str = "train", seed: int = 0
) -> list[dict[str, Any]]:
    """Write the grid of :func:`preview_grid`; returns per sample its source image and box counts."""
    import cv2

    cells, info = preview_samples(policy, dataset, n=n, split=split, seed=seed)
    grid = tile(cells, grid_shape(len(cells))[1])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)):
        raise DroneVisionError(f"{out}: could not be written (a .png path?)")
    return info


def preview_grid(policy: Policy, dataset: Any, out: Path, *, n: int = 16, split: str = "train", seed: int = 0) -> Path:
    """Write a PNG grid of ``n`` augmented samples of ``dataset`` (a :class:`~dronevision.dataset.YoloDataset`)
    with their augmented boxes drawn; returns ``out``."""
    write_preview(policy, dataset, out, n=n, split=split, seed=seed)
    return Path(out)
