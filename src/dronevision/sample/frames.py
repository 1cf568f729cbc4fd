"""Pure frame logic: which frames to sample, and whether a frame is sharp, well exposed and new."""

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


def near_duplicate(h: int, previous: Sequence[int], max_distance: int) -> bool:
    """Whether ``h`` is within ``max_distance`` bits of any earlier hash."""
    if not previous:
        return False
    arr = np.fromiter(previous, dtype=np.uint64, count=len(previous)) ^ np.uint64(h)
    distances = np.unpackbits(arr.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)
    return bool((distances <= max_distance).any())


def judge(gray: np.ndarray, *, filters: Mapping[str, Any], seen: Sequence[int]) -> tuple[dict[str, Any], str | None]:
    """Measure a candidate frame and say why it is dropped (None: kept).

    ``gray`` is the frame in grey at analysis resolution; ``seen`` the hashes kept so far in this video.

    Examples:
        >>> flat = np.full((90, 160), 128, np.uint8)
        >>> judge(flat, filters={"min_sharpness": 10, "min_brightness": 20, "max_brightness": 235}, seen=[])[1]
        'blurred'
    """
    stats = {"sharpness": round(sharpness(gray), 2), "brightness": round(float(gray.mean()), 2)}
    stats["hash"] = f"{phash(gray):016x}"
    if stats["brightness"] < float(filters.get("min_brightness", 0)):
        return stats, "underexposed"
    if stats["brightness"] > float(filters.get("max_brightness", 255)):
        return stats, "overexposed"
    if stats["sharpness"] < float(filters.get("min_sharpness", 0)):
        return stats, "blurred"
    max_distance = filters.get("max_hash_distance")
    if max_distance is not None and max_distance >= 0 and near_duplicate(int(stats["hash"], 16), seen, max_distance):
        return stats, "duplicate"
    return stats, None
