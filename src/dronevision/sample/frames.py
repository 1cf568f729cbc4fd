"""Pure frame logic: which frames to sample, and whether a frame is sharp, well exposed and new (in any region)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

SAMPLERS = ("uniform", "keyframes", "scene")


@dataclass
class Sampler:
    """Decides, frame by frame in presentation order, which decoded frames are candidates.

    ``uniform`` takes the first frame at or after each multiple of ``every_s`` (by timestamp, so variable frame
    rate video is sampled by time); ``keyframes`` takes key frames (optionally at most one per ``every_s``);
    ``scene`` takes a frame when its thumbnail differs from the last candidate's by more than ``threshold``
    (mean absolute difference, 0..255).

    Examples:
        >>> s = Sampler("uniform", every_s=1.0)
        >>> [t for t in (0.0, 0.4, 0.99, 1.0, 1.5, 2.7, 2.9, 3.1) if s.wants(t)]
        [0.0, 1.0, 2.7, 3.1]
    """

    method: str
    every_s: float = 1.0
    threshold: float = 20.0
    start_s: float = 0.0
    _next_t: float | None = None
    _last_thumb: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.method not in SAMPLERS:
            raise ValueError(f"sampling.method must be one of {', '.join(SAMPLERS)}, got '{self.method}'")

    def wants(self, t: float, thumb: np.ndarray | None = None) -> bool:
        """Whether the frame at time ``t`` (seconds) is a candidate; ``scene`` needs its grey ``thumb``."""
        if self.method == "scene":
            if thumb is None:
                raise ValueError("the scene sampler needs a thumbnail of every frame")
            if self._last_thumb is not None and scene_change(self._last_thumb, thumb) <= self.threshold:
                return False
            self._last_thumb = thumb
            return True
        if self.every_s <= 0:
            return True
        if self._next_t is None:
            self._next_t = self.start_s
        if t + 1e-6 < self._next_t:
            return False
        steps = np.floor((t + 1e-6 - self._next_t) / self.every_s) + 1
        self._next_t += steps * self.every_s
        return True


def scene_change(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two grey thumbnails (0..255).

    Examples:
        >>> scene_change(np.zeros((4, 4), np.uint8), np.full((4, 4), 10, np.uint8))
        10.0
    """
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def sharpness(gray: np.ndarray) -> float:
    """Variance of the Laplacian: low for blurred frames."""
    import cv2

    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def phash(gray: np.ndarray) -> int:
    """64-bit perceptual hash: signs of the 8x8 lowest DCT frequencies (without DC) against their median.

    Examples:
        >>> noise = np.random.default_rng(0).integers(0, 200, (64, 64), dtype=np.uint8)
        >>> gradient = np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))
        >>> hamming(phash(noise), phash(noise + 10)), hamming(phash(noise), phash(gradient)) > 20
        (0, True)
    """
    import cv2

    small = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8].flatten()[1:]
    bits = low > np.median(low)
    return int(sum(1 << i for i, bit in enumerate(bits) if bit))


def hamming(a: int, b: int) -> int:
    """Number of differing bits.

    Examples:
        >>> hamming(0b1011, 0b0001)
        2
    """
    return (a ^ b).bit_count()


def hash_matches(h: int, previous: Sequence[int], max_distance: int) -> np.ndarray:
    """Indices of the earlier hashes within ``max_distance`` bits of ``h``, in order.

    Examples:
        >>> hash_matches(0b1011, [0b0000, 0b1010, 0b1011], max_distance=1).tolist()
        [1, 2]
    """
    if not previous:
        return np.zeros(0, dtype=np.int64)
    arr = np.fromiter(previous, dtype=np.uint64, count=len(previous)) ^ np.uint64(h)
    distances = np.unpackbits(arr.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)
    return np.flatnonzero(distances <= max_distance)


def thumbnail(gray: np.ndarray) -> np.ndarray:
    """The grey frame at half size, which :func:`changed_regions` compares."""
    import cv2

    h, w = gray.shape
    return cv2.resize(gray, (max(1, w // 2), max(1, h // 2)), interpolation=cv2.INTER_AREA)


# A region changed when at least this many of its thumbnail pixels did (one stray pixel is not a vehicle).
MIN_CHANGED_PIXELS = 2
# Thumbnails are smoothed this much (pixels) first, so that a texture's peaks do not drop under a sub-pixel drift.
SMOOTH_SIGMA = 0.7
# A drift up to this many thumbnail pixels (phase correlation, rounded) is taken out before comparing; a larger
# shift is a new view, compared as it is.
MAX_DRIFT = 4


def changed_regions(before: np.ndarray, after: np.ndarray, *, grid: int, min_change: float) -> int:
    """How many cells of a ``grid`` x ``grid`` split changed content between two thumbnails of a scene.

    The thumbnails are smoothed, lined up (the whole-pixel drift between them taken out) and the mean difference
    (exposure) is taken out. A pixel then changed when it lies more than ``min_change`` grey levels outside the
    range of its 3x3 neighbourhood in the other thumbnail, either way. So sensor noise, a hovering drone's drift
    and an exposure change do not count, while a vehicle that drove in or out does. A cell changed when at least
    ``MIN_CHANGED_PIXELS`` of its pixels did.

    Examples:
        >>> import cv2
        >>> rng = np.random.default_rng(0)
        >>> scene = cv2.resize(rng.integers(40, 210, (10, 20), dtype=np.uint8), (80, 40), interpolation=cv2.INTER_CUBIC)
        >>> noisy = np.clip(scene + rng.normal(0, 3, scene.shape) + 15, 0, 255).astype(np.uint8)  # brighter too
        >>> drifted = np.roll(scene, (1, -2), axis=(0, 1))
        >>> moved = scene.copy(); moved[5:8, 10:14] = 0  # a dark car in the top-left cell
        >>> [changed_regions(scene, x, grid=2, min_change=12) for x in (noisy, drifted, moved)]
        [0, 0, 1]
    """
    import cv2

    if before.shape != after.shape:
        return grid * grid
    a = cv2.GaussianBlur(before.astype(np.float32), (0, 0), SMOOTH_SIGMA)
    b = cv2.GaussianBlur(after.astype(np.float32), (0, 0), SMOOTH_SIGMA)
    h, w = a.shape
    sx = sy = 0
    if min(h, w) > 4 * MAX_DRIFT:
        (dx, dy), _ = cv2.phaseCorrelate(a, b)  # after(x + d) = before(x)
        if max(abs(dx), abs(dy)) <= MAX_DRIFT:
            sx, sy = round(dx), round(dy)
    rows, cols = slice(max(0, -sy), h - max(0, sy)), slice(max(0, -sx), w - max(0, sx))
    a, b = a[rows, cols], b[max(0, sy) : h - max(0, -sy), max(0, sx) : w - max(0, -sx)]
    b -= float((b - a).mean())
    kernel = np.ones((3, 3), np.uint8)
    excess = np.maximum.reduce(
        [b - cv2.dilate(a, kernel), cv2.erode(a, kernel) - b, a - cv2.dilate(b, kernel), cv2.erode(b, kernel) - a]
    )
    edge = 2  # the smoothing's reach: along the edges of the overlap it mixes in scene the other frame lacks
    if min(excess.shape) > 4 * edge:
        excess[:edge] = excess[-edge:] = excess[:, :edge] = excess[:, -edge:] = 0
    changed = np.zeros((h, w), np.int32)
    changed[rows, cols] = excess > min_change
    ys = np.unique(np.linspace(0, h, grid + 1).round().astype(int)[:-1])
    xs = np.unique(np.linspace(0, w, grid + 1).round().astype(int)[:-1])
    counts = np.add.reduceat(np.add.reduceat(changed, ys, axis=0), xs, axis=1)
    return int((counts >= MIN_CHANGED_PIXELS).sum())


# The region check looks at this many of the latest kept frames whose hash matches, so its cost stays bounded on a
# long hover where every kept frame matches.
REGION_CANDIDATES = 16


def find_duplicate(
    h: int,
    thumb: np.ndarray | None,
    *,
    seen: Sequence[int],
    thumbs: Sequence[np.ndarray | None] | None,
    max_distance: int,
    grid: int,
    min_change: float,
) -> tuple[bool, int | None]:
    """Whether a frame repeats an earlier one, and the fewest regions changed against an earlier frame whose hash
    matched (None: none matched, or no region check).

    An earlier frame is repeated when its whole-frame hash is within ``max_distance`` bits and, with ``grid`` above
    0 and thumbnails on both sides, none of its regions changed (:func:`changed_regions`) against the latest
    ``REGION_CANDIDATES`` of them.

    Examples:
        >>> flat = np.full((20, 20), 100, np.uint8)
        >>> car = flat.copy(); car[2:5, 2:6] = 20
        >>> find_duplicate(7, car, seen=[7], thumbs=[flat], max_distance=4, grid=2, min_change=12)
        (False, 1)
        >>> find_duplicate(7, car, seen=[7], thumbs=None, max_distance=4, grid=2, min_change=12)
        (True, None)
    """
    matches = hash_matches(h, seen, max_distance)
    if not matches.size:
        return False, None
    if grid <= 0 or thumb is None or thumbs is None:
        return True, None
    fewest: int | None = None
    for i in matches[::-1][:REGION_CANDIDATES]:  # the latest first: the likeliest repeat
        if thumbs[i] is None:
            return True, fewest
        n = changed_regions(thumbs[i], thumb, grid=grid, min_change=min_change)
        fewest = n if fewest is None else min(fewest, n)
        if n == 0:
            return True, 0
    return False, fewest


def judge(
    gray: np.ndarray,
    *,
    filters: Mapping[str, Any],
    seen: Sequence[int],
    thumbs: Sequence[np.ndarray] | None = None,
) -> tuple[dict[str, Any], str | None]:
    """Measure a candidate frame and say why it is dropped (None: kept).

    ``gray`` is the frame in grey at analysis resolution; ``seen`` the hashes kept so far in this video and
    ``thumbs`` their thumbnails (:func:`thumbnail`). With ``filters["region_grid"]`` above 0 and thumbnails, a frame
    whose hash matches is a near-duplicate only when none of its regions changed; the stats then hold
    ``changed_regions`` (:func:`find_duplicate`).

    Examples:
        >>> flat = np.full((90, 160), 128, np.uint8)
        >>> judge(flat, filters={"min_sharpness": 10, "min_brightness": 20, "max_brightness": 235}, seen=[])[1]
        'blurred'
    """
    stats = {"sharpness": round(sharpness(gray), 2), "brightness": round(float(gray.mean()), 2)}
    stats["hash"] = f"{phash(gray):016x}"
    grid = int(filters.get("region_grid") or 0)
    if grid > 0 and thumbs is not None:
        stats["changed_regions"] = None
    if stats["brightness"] < float(filters.get("min_brightness", 0)):
        return stats, "underexposed"
    if stats["brightness"] > float(filters.get("max_brightness", 255)):
        return stats, "overexposed"
    if stats["sharpness"] < float(filters.get("min_sharpness", 0)):
        return stats, "blurred"
    max_distance = filters.get("max_hash_distance")
    if max_distance is None or max_distance < 0:
        return stats, None
    duplicate, fewest = find_duplicate(
        int(stats["hash"], 16),
        thumbnail(gray) if "changed_regions" in stats else None,
        seen=seen,
        thumbs=thumbs,
        max_distance=int(max_distance),
        grid=grid,
        min_change=float(filters.get("region_change") or 0),
    )
    if "changed_regions" in stats:
        stats["changed_regions"] = fewest
    return stats, "duplicate" if duplicate else None
