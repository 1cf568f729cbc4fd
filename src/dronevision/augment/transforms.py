"""Pixel transforms albumentations lacks in a form cheap enough for online training.

``A.RandomFog`` draws hundreds of blurred circles: about 340 ms per 640x640 image on one core, which alone would
cap training at 3 images/s. :class:`Haze` uses the atmospheric scattering model instead, ``I = J * t + A * (1 - t)``
(scene ``J``, airlight ``A``, transmission ``t``), with ``t`` varying smoothly over the frame: about 1.5 ms.

The class is an albumentations ``ImageOnlyTransform``: it composes, serialises (``A.to_dict`` / ``A.from_dict``,
which ultralytics uses to store ``augmentations`` in checkpoints) and is instantiated from a policy's YAML as
``{_target_: dronevision.augment.transforms.Haze, p: 0.2}``.
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import cv2
import numpy as np


class Haze(A.ImageOnlyTransform):
    """Atmospheric haze: blend towards a bright airlight by an amount that varies smoothly across the frame.

    Args:
        intensity_range: the largest haze fraction ``1 - t`` in the frame, drawn from this range.
        airlight_range: grey level of the airlight (the haze's colour), drawn from this range.
        grid: size of the random field that the transmission map is interpolated from (larger: patchier haze).
        p: probability of applying the transform.

    Examples:
        >>> image = np.zeros((8, 8, 3), np.uint8)
        >>> out = Haze(intensity_range=(0.5, 0.5), airlight_range=(200, 200), grid=1, p=1.0)(image=image)["image"]
        >>> int(out.min()), int(out.max())
        (100, 100)
    """

    def __init__(
        self,
        intensity_range: tuple[float, float] = (0.1, 0.4),
        airlight_range: tuple[int, int] = (180, 240),
        grid: int = 3,
        p: float = 0.5,
    ) -> None:
        super().__init__(p=p)
        lo, hi = intensity_range
        if not 0 <= lo <= hi <= 1:
            raise ValueError(f"intensity_range must satisfy 0 <= low <= high <= 1, got {intensity_range}")
        a_lo, a_hi = airlight_range
        if not 0 <= a_lo <= a_hi <= 255:
            raise ValueError(f"airlight_range must satisfy 0 <= low <= high <= 255, got {airlight_range}")
        if int(grid) < 1:
            raise ValueError(f"grid must be at least 1, got {grid}")
        self.intensity_range = (float(lo), float(hi))
        self.airlight_range = (int(a_lo), int(a_hi))
        self.grid = int(grid)

    def get_params(self) -> dict[str, Any]:
        """The haze amount, airlight and the coarse transmission field (values in 0.5..1 of the amount)."""
        intensity = self.py_random.uniform(*self.intensity_range)
        field = self.random_generator.uniform(0.5, 1.0, (self.grid, self.grid)).astype(np.float32)
        field /= field.max()  # the densest cell gets the drawn intensity
        return {
            "intensity": intensity,
            "airlight": self.py_random.randint(*self.airlight_range),
            "field": field,
        }

    def apply(self, img: np.ndarray, intensity: float, airlight: int, field: np.ndarray, **params: Any) -> np.ndarray:
        """``img * (1 - a) + airlight * a`` with ``a`` the field, scaled to ``intensity``, interpolated to the image."""
        h, w = img.shape[:2]
        haze = cv2.resize(field * np.float32(intensity), (w, h), interpolation=cv2.INTER_LINEAR)
        if img.dtype != np.uint8:
            a = haze[..., None] if img.ndim == 3 else haze
            return (img * (1 - a) + a * (airlight / 255.0)).astype(img.dtype)
        light = np.full_like(img, airlight)
        return cv2.blendLinear(img, light, 1.0 - haze, haze)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("intensity_range", "airlight_range", "grid")
