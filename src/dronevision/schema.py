"""Typed data passed between stages. Boxes are ``(N, 4)`` ``xyxy`` pixel arrays."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Detections:
    """Boxes of one image, with class ids and (for predictions) confidences.

    Examples:
        >>> d = Detections(xyxy=np.array([[0, 0, 10, 20]]), class_id=np.array([1]))
        >>> len(d), d.confidence is None
        (1, True)
    """

    xyxy: np.ndarray
    class_id: np.ndarray
    confidence: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        xyxy = np.asarray(self.xyxy, dtype=np.float64).reshape(-1, 4)
        class_id = np.asarray(self.class_id, dtype=np.int64).reshape(-1)
        if len(class_id) != len(xyxy):
            raise ValueError(f"{len(xyxy)} boxes but {len(class_id)} class ids")
        object.__setattr__(self, "xyxy", xyxy)
        object.__setattr__(self, "class_id", class_id)
        if self.confidence is not None:
            confidence = np.asarray(self.confidence, dtype=np.float64).reshape(-1)
            if len(confidence) != len(xyxy):
                raise ValueError(f"{len(xyxy)} boxes but {len(confidence)} confidences")
            object.__setattr__(self, "confidence", confidence)

    def __len__(self) -> int:
        return len(self.xyxy)

    @classmethod
    def empty(cls, *, with_confidence: bool = False) -> Detections:
        """No boxes."""
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0) if with_confidence else None)
