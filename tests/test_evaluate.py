"""COCO metrics (the project's one COCOeval wrapper, ``coco_protocol``) on known boxes."""

from __future__ import annotations

import numpy as np
import pytest

from dronevision.evaluate import coco_detections, coco_ground_truth, yolo_to_xyxy
from dronevision.evaluate.protocols import coco_protocol
from dronevision.schema import Detections

NAMES = {0: "car", 1: "truck"}
GT = [
    Detections(xyxy=[[10, 10, 50, 40], [60, 60, 90, 95]], class_id=[0, 1]),
    Detections(xyxy=[[5, 5, 25, 25]], class_id=[0]),
]


def coco_metrics(gt: dict, detections: list) -> dict:
    return coco_protocol(gt, detections)["overall"]


def _gt() -> dict:
    return coco_ground_truth([(f"{i}.jpg", (100, 100), d) for i, d in enumerate(GT)], NAMES)


def _pred(d: Detections, score: float = 0.9) -> Detections:
    return Detections(xyxy=d.xyxy, class_id=d.class_id, confidence=np.full(len(d), score))


def test_perfect_predictions_score_one() -> None:
    m = coco_metrics(_gt(), coco_detections([_pred(d) for d in GT]))
    assert m["AP"] == pytest.approx(1.0)
    assert m["AP50"] == pytest.approx(1.0)
    assert m["AR_100"] == pytest.approx(1.0)


def test_no_predictions_score_zero() -> None:
    m = coco_metrics(_gt(), coco_detections([Detections.empty(with_confidence=True) for _ in GT]))
    assert m["AP"] == m["AP50"] == m["AR_100"] == 0.0
    assert {v for v in m.values() if v is not None} == {0.0}


def test_missing_half_the_cars_halves_car_recall() -> None:
    preds = [_pred(GT[0]), Detections.empty(with_confidence=True)]  # image 1's car is missed
    m = coco_metrics(_gt(), coco_detections(preds))
    # car: 1 of 2 found (AR 0.5), truck: 1 of 1 (AR 1.0); COCO averages over classes
    assert m["AR_100"] == pytest.approx(0.75)


def test_wrong_class_is_not_a_match() -> None:
    swapped = [Detections(xyxy=d.xyxy, class_id=1 - d.class_id, confidence=np.ones(len(d))) for d in GT]
    assert coco_metrics(_gt(), coco_detections(swapped))["AP50"] == 0.0


def test_shifted_boxes_pass_at_iou_50_fail_at_75() -> None:
    # shift each box by 20% of its width: IoU = 0.8/1.2 = 0.667
    shifted = [
        _pred(
            Detections(
                xyxy=d.xyxy
                + np.c_[
                    (d.xyxy[:, 2] - d.xyxy[:, 0]) * 0.2,
                    np.zeros(len(d)),
                    (d.xyxy[:, 2] - d.xyxy[:, 0]) * 0.2,
                    np.zeros(len(d)),
                ],
                class_id=d.class_id,
            )
        )
        for d in GT
    ]
    m = coco_metrics(_gt(), coco_detections(shifted))
    assert m["AP50"] == pytest.approx(1.0)
    assert m["AP75"] == 0.0


@pytest.mark.parametrize(
    ("rows", "wh", "expected"),
    [
        ([], (10, 10), np.zeros((0, 4))),
        ([(0, 0.5, 0.5, 1.0, 1.0)], (640, 480), [[0, 0, 640, 480]]),
        ([(1, 0.05, 0.95, 0.1, 0.1)], (100, 200), [[0, 180, 10, 200]]),  # on the border
    ],
)
def test_yolo_to_xyxy(rows: list, wh: tuple[int, int], expected: list) -> None:
    assert np.allclose(yolo_to_xyxy(rows, wh).xyxy, np.asarray(expected).reshape(-1, 4))


def test_detections_reject_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="2 boxes but 1 class ids"):
        Detections(xyxy=np.zeros((2, 4)), class_id=[0])
