"""Typed data passed between stages. Boxes are ``(N, 4)`` ``xyxy`` pixel arrays."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Detections:
    """Boxes of one image, with class ids and (for predictions) confidences: the currency of every stage.

    Select with a boolean mask or indices as supervision does (``det[det.confidence > 0.5]``), join with
    :meth:`merge`, filter with :meth:`filter`.

    Examples:
        >>> d = Detections(xyxy=np.array([[0, 0, 10, 20], [5, 5, 6, 6]]), class_id=np.array([1, 2]))
        >>> len(d), d.confidence is None, d.area.tolist()
        (2, True, [200.0, 1.0])
        >>> d[d.class_id == 2].xyxy.tolist(), len(d[[0, 0]]), len(d[1:])
        ([[5.0, 5.0, 6.0, 6.0]], 2, 1)
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

    def __getitem__(self, index: int | slice | Sequence[int] | np.ndarray) -> Detections:
        """The boxes picked by a boolean mask, indices or a slice (an int keeps one box, as a set of one)."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        index = np.asarray(index) if isinstance(index, (list, tuple)) else index
        confidence = None if self.confidence is None else self.confidence[index]
        return Detections(xyxy=self.xyxy[index], class_id=self.class_id[index], confidence=confidence)

    @property
    def area(self) -> np.ndarray:
        """Box areas in square pixels (0 for degenerate boxes)."""
        wh = np.clip(self.xyxy[:, 2:] - self.xyxy[:, :2], 0, None)
        return wh[:, 0] * wh[:, 1]

    @classmethod
    def empty(cls, *, with_confidence: bool = False) -> Detections:
        """No boxes."""
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0) if with_confidence else None)

    @classmethod
    def merge(cls, parts: Iterable[Detections]) -> Detections:
        """One set from several, in order; confidences are kept when every part has them.

        Examples:
            >>> a = Detections(xyxy=[[0, 0, 1, 1]], class_id=[2], confidence=[0.5])
            >>> Detections.merge([a, Detections.empty(with_confidence=True), a]).class_id.tolist()
            [2, 2]
            >>> Detections.merge([]).confidence is None, Detections.merge([a, Detections.empty()]).confidence
            (True, None)
        """
        parts = list(parts)
        if not parts:
            return cls.empty()
        scored = all(p.confidence is not None for p in parts)
        return cls(
            xyxy=np.concatenate([p.xyxy for p in parts]),
            class_id=np.concatenate([p.class_id for p in parts]),
            confidence=np.concatenate([p.confidence for p in parts]) if scored else None,  # type: ignore[misc]
        )

    @classmethod
    def from_ultralytics(cls, result: Any) -> Detections:
        """The boxes of one ultralytics ``Results`` (``model.predict(...)[i]``), in image pixels."""
        boxes = result.boxes
        return cls(xyxy=boxes.xyxy.cpu().numpy(), class_id=boxes.cls.cpu().numpy(), confidence=boxes.conf.cpu().numpy())

    def filter(
        self,
        *,
        min_confidence: float | None = None,
        classes: Iterable[int] | None = None,
        min_area: float | None = None,
    ) -> Detections:
        """The boxes with confidence ``>= min_confidence``, a class in ``classes`` and area ``>= min_area``.

        Examples:
            >>> d = Detections(xyxy=[[0, 0, 1, 1], [0, 0, 9, 9]], class_id=[0, 5], confidence=[0.9, 0.4])
            >>> d.filter(classes={5}).confidence.tolist(), d.filter(min_confidence=0.5).class_id.tolist()
            ([0.4], [0])
            >>> len(d.filter(min_area=2)), len(d.filter(classes=[]))
            (1, 0)
        """
        keep = np.ones(len(self), dtype=bool)
        if min_confidence is not None:
            if self.confidence is None:
                raise ValueError("min_confidence needs confidences")
            keep &= self.confidence >= min_confidence
        if classes is not None:
            keep &= np.isin(self.class_id, np.fromiter(classes, dtype=np.int64))
        if min_area is not None:
            keep &= self.area >= min_area
        return self[keep]
