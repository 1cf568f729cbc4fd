"""The coco and visdrone scoring protocols on cases with known answers, against a port of the official VisDrone
toolkit (tests/visdrone_toolkit_port.py) and against a second COCO implementation (faster-coco-eval)."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import numpy as np
import pytest

from dronevision.dataset.visdrone import CATEGORIES
from dronevision.errors import DroneVisionError
from dronevision.evaluate import coco_detections, coco_ground_truth
from dronevision.evaluate.ground_truth import load_dataset_ground_truth, load_visdrone_det_ground_truth
from dronevision.evaluate.protocols import (
    IOU_THRESHOLDS,
    GroundTruthImage,
    VisDroneImage,
    coco_protocol,
    greedy_match,
    ignored_fraction,
    visdrone_protocol,
    voc_ap,
)
from dronevision.evaluate.results_io import (
    PLACEHOLDER_LINE,
    coco_records,
    coco_results_to_detections,
    map_coco_results,
    match_detections,
    parse_visdrone_result_lines,
    read_coco_results,
    read_predictions,
    read_visdrone_results,
    visdrone_category_ids,
    write_coco_results,
    write_visdrone_results,
)
from dronevision.schema import Detections

from . import visdrone_toolkit_port as port
from .conftest import VISDRONE_MINI, make_yolo_dataset

NAMES = {0: "car", 1: "truck"}
VISDRONE_NAMES = {i - 1: CATEGORIES[i] for i in range(1, 12)}  # 0 pedestrian ... 9 motor, 10 others
TOOLKIT_KEYS = {"AP": "AP_all", "AP50": "AP_50", "AP75": "AP_75", **{f"AR_{k}": f"AR_{k}" for k in (1, 10, 100, 500)}}
WH = (200, 200)
GT = [
    Detections(xyxy=[[10, 10, 110, 60], [120, 120, 170, 190]], class_id=[0, 1]),
    Detections(xyxy=[[5, 5, 105, 55]], class_id=[0]),
]


def scored(d: Detections, score: float = 0.9) -> Detections:
    return Detections(xyxy=d.xyxy, class_id=d.class_id, confidence=np.full(len(d), score))


def both_protocols(
    gts: list[Detections],
    dets: list[Detections],
    *,
    names: dict[int, str] = NAMES,
    ignore: list[np.ndarray] | None = None,
    wh: tuple[int, int] = WH,
) -> dict[str, dict]:
    """Score the same boxes with both protocols (``coco`` knows no ignored regions)."""
    ignore = ignore or [np.zeros((0, 4))] * len(gts)
    coco_gt = coco_ground_truth([(f"{i}.jpg", wh, g) for i, g in enumerate(gts)], names)
    return {
        "coco": coco_protocol(coco_gt, coco_detections(dets)),
        "visdrone": visdrone_protocol(
            [VisDroneImage(wh=wh, gt=g, det=d, ignore_regions=r) for g, d, r in zip(gts, dets, ignore)], names
        ),
    }


# --- known answers -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["coco", "visdrone"])
def test_perfect_predictions_score_one(protocol: str) -> None:
    m = both_protocols(GT, [scored(g) for g in GT])[protocol]
    for key in ("AP", "AP50", "AP75", "AR_10", "AR_100", "AR_500"):
        assert m["overall"][key] == pytest.approx(1.0), key
    # one detection per image: per class under coco; all classes together under visdrone, where image 0's truck
    # comes second (truck AR_1 = 0, counted once; car AR_1 = 1, counted twice)
    assert m["overall"]["AR_1"] == pytest.approx(1.0 if protocol == "coco" else 2 / 3)
    assert m["per_class"]["car"]["n_gt"] == 2 and m["per_class"]["truck"]["AP"] == pytest.approx(1.0)
    assert m["pr"]["car"]["precision"][:101] == pytest.approx([1.0] * 101)


@pytest.mark.parametrize("protocol", ["coco", "visdrone"])
def test_boxes_shifted_to_a_known_iou_pass_and_fail_the_right_thresholds(protocol: str) -> None:
    # 100-wide boxes shifted 26 px: IoU = 74 / 126 = 0.587, a match at 0.50 and 0.55 only -> AP = 2/10
    gt = [Detections(xyxy=[[20, 20, 120, 70]], class_id=[0])]
    det = [Detections(xyxy=[[46, 20, 146, 70]], class_id=[0], confidence=[0.9])]
    m = both_protocols(gt, det)[protocol]["overall"]
    assert m["AP50"] == pytest.approx(1.0)
    assert m["AP75"] == pytest.approx(0.0)
    assert m["AP"] == pytest.approx(0.2)
    assert m["AR_100"] == pytest.approx(0.2)
    assert greedy_match(np.array([[74 / 126]]), IOU_THRESHOLDS).ravel().tolist() == [True, True] + [False] * 8


def test_hand_computed_precision_recall_curve() -> None:
    # ranked TP, FP, TP against 2 ground-truth cars: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    gt = [Detections(xyxy=[[0, 0, 20, 20], [50, 50, 70, 70]], class_id=[0, 0])]
    det = [
        Detections(
            xyxy=[[0, 0, 20, 20], [100, 100, 120, 120], [50, 50, 70, 70]],
            class_id=[0, 0, 0],
            confidence=[0.9, 0.8, 0.7],
        )
    ]
    m = both_protocols(gt, det)
    assert m["visdrone"]["overall"]["AP"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)  # VOC: area under the envelope
    assert m["coco"]["overall"]["AP"] == pytest.approx((51 * 1 + 50 * 2 / 3) / 101)  # COCO: 101 recall points
    assert m["coco"]["overall"]["AR_1"] == pytest.approx(0.5) and m["visdrone"]["overall"]["AR_1"] == pytest.approx(0.5)


def test_detection_inside_an_ignored_region_is_a_false_positive_only_under_coco() -> None:
    gt = [Detections(xyxy=[[10, 10, 50, 50]], class_id=[0])]
    det = [Detections(xyxy=[[100, 100, 140, 140], [10, 10, 50, 50]], class_id=[0, 0], confidence=[0.9, 0.5])]
    m = both_protocols(gt, det, ignore=[np.array([[90.0, 90, 160, 160]])])
    assert m["visdrone"]["overall"]["AP"] == pytest.approx(1.0)
    assert m["coco"]["overall"]["AP"] == pytest.approx(0.5, abs=0.01)  # the true positive ranks second


@pytest.mark.parametrize(
    ("gt_box", "dropped"),
    [
        ([100, 100, 140, 140], True),  # wholly inside
        ([60, 100, 100, 140], True),  # 31 of 40 pixel columns inside
        ([40, 100, 80, 140], False),  # 11 of 40 columns inside
    ],
)
def test_ground_truth_mostly_inside_an_ignored_region_is_not_scored(gt_box: list[int], dropped: bool) -> None:
    gt = [Detections(xyxy=[[10, 10, 50, 50], gt_box], class_id=[0, 0])]
    det = [Detections(xyxy=[[10, 10, 50, 50]], class_id=[0], confidence=[0.9])]  # the second box is missed
    m = visdrone_protocol([VisDroneImage(wh=WH, gt=gt[0], det=det[0], ignore_regions=[[70, 90, 160, 160]])], NAMES)
    assert m["overall"]["AR_500"] == pytest.approx(1.0 if dropped else 0.5)
    assert m["per_class"]["car"]["n_gt"] == (1 if dropped else 2)


@pytest.mark.parametrize(
    ("box", "regions", "expected"),
    [
        ([0, 0, 10, 10], [[0, 0, 10, 10]], 1.0),
        ([5, 0, 15, 10], [[0, 0, 10, 10]], 0.6),  # a region w wide covers w + 1 pixel columns
        ([10, 0, 20, 10], [[0, 0, 10, 10]], 0.1),
        ([11, 0, 21, 10], [[0, 0, 10, 10]], 0.0),
        ([0, 0, 10, 10], [[0, 0, 10, 10], [0, 0, 10, 10]], 1.0),  # overlapping regions count once
        ([95, 95, 105, 105], [[90, 90, 100, 100]], 0.25),  # outside the image: divided by the whole box
        ([2.4, 2.6, 12.4, 12.6], [[0, 0, 10, 10]], 0.72),  # rounded to (2, 3) 10 x 10
        ([0, 0, 10, 10], [], 0.0),
    ],
)
def test_ignored_fraction_follows_the_toolkits_pixel_grid(box: list, regions: list, expected: float) -> None:
    assert ignored_fraction(np.array([box]), np.array(regions), (100, 100))[0] == pytest.approx(expected)


def test_ignored_fraction_equals_the_toolkit_integral_image() -> None:
    rng = np.random.default_rng(3)
    width, height = 60, 40
    regions = np.c_[rng.integers(0, 50, (4, 2)), rng.integers(0, 50, (4, 2))].astype(float)
    regions[:, 2:] = regions[:, :2] + np.abs(regions[:, 2:] - regions[:, :2]) + 1
    boxes = np.c_[rng.uniform(-5, 60, (300, 2)), rng.uniform(0.2, 25, (300, 2))]
    boxes[:, 2:] += boxes[:, :2]
    gt = np.c_[np.c_[regions[:, :2], regions[:, 2:] - regions[:, :2]], np.zeros((4, 2)), np.zeros((4, 2))]
    ours = ignored_fraction(boxes, regions, (width, height)) < 0.5
    det = np.c_[boxes[:, :2], boxes[:, 2:] - boxes[:, :2], np.ones((300, 4))]
    _, kept = port.drop_objects_in_igr(gt, det, height, width)
    assert ours.sum() == len(kept) and np.allclose(det[ours], kept)


def test_only_the_first_500_detections_of_an_image_count() -> None:
    gt = Detections(xyxy=[[0, 0, 10, 10]], class_id=[0])
    far = np.c_[np.arange(500) % 20 * 10 + 20.0, np.arange(500) // 20 * 7.0][:, [0, 1, 0, 1]] + [0, 0, 5, 5]
    det = Detections(
        xyxy=np.r_[far, [[0, 0, 10, 10]]], class_id=np.r_[np.ones(500), 0], confidence=np.r_[np.full(500, 0.9), 0.1]
    )  # 500 truck false positives outrank the one car
    m = visdrone_protocol([VisDroneImage(wh=(300, 300), gt=gt, det=det)], NAMES)
    assert m["overall"]["AR_500"] == 0.0 and m["overall"]["AP"] == 0.0
    inside = visdrone_protocol(
        [VisDroneImage(wh=(300, 300), gt=gt, det=det, ignore_regions=[[20, 0, 300, 300]])], NAMES
    )
    assert inside["overall"]["AR_500"] == 1.0  # detections dropped in ignored regions take no place among the 500


def test_others_is_not_scored_but_its_detections_take_places() -> None:
    names = {0: "car", 1: "others"}
    gt = Detections(xyxy=[[0, 0, 10, 10], [50, 50, 60, 60]], class_id=[0, 1])  # others: missed, no matter
    det = Detections(xyxy=[[80, 80, 90, 90], [0, 0, 10, 10]], class_id=[1, 0], confidence=[0.9, 0.8])
    m = visdrone_protocol([VisDroneImage(wh=WH, gt=gt, det=det)], names)
    assert set(m["per_class"]) == {"car"}
    assert m["overall"]["AP"] == 1.0 and m["overall"]["AR_10"] == 1.0
    assert m["overall"]["AR_1"] == 0.0  # the first detection by score is an `others` one


def test_classes_are_weighted_by_their_number_of_images_as_the_toolkit() -> None:
    gts = [
        Detections(xyxy=[[0, 0, 10, 10]], class_id=[0]),
        Detections(xyxy=[[0, 0, 10, 10], [50, 50, 60, 60]], class_id=[0, 1]),
    ]
    dets = [scored(gts[0]), scored(Detections(xyxy=[[0, 0, 10, 10]], class_id=[0]))]  # the truck is missed
    m = visdrone_protocol([VisDroneImage(wh=WH, gt=g, det=d) for g, d in zip(gts, dets)], NAMES)
    assert m["overall"]["AP"] == pytest.approx(2 / 3)  # car counted twice (2 images), truck once
    assert m["class_mean"]["AP"] == pytest.approx(1 / 2)
    assert m["params"]["class_weights"] == {"car": 2, "truck": 1}


def test_class_without_ground_truth_is_undefined_not_zero() -> None:
    gt = Detections(xyxy=[[0, 0, 10, 10]], class_id=[0])
    det = Detections(xyxy=[[0, 0, 10, 10], [50, 50, 60, 60]], class_id=[0, 1], confidence=[0.9, 0.8])
    m = both_protocols([gt], [det])
    for protocol in ("coco", "visdrone"):
        assert m[protocol]["per_class"]["truck"]["AP"] is None and m[protocol]["pr"]["truck"] is None
        assert m[protocol]["overall"]["AP"] == pytest.approx(1.0)


def test_no_detections_and_no_ground_truth() -> None:
    m = both_protocols(GT, [Detections.empty(with_confidence=True) for _ in GT])
    assert m["coco"]["overall"]["AP"] == 0.0 and m["visdrone"]["overall"]["AP"] == 0.0
    none = both_protocols([Detections.empty()], [Detections.empty(with_confidence=True)])
    assert none["coco"]["overall"]["AP"] is None and none["visdrone"]["overall"]["AP"] is None


@pytest.mark.parametrize(
    ("iou", "expected"),
    [
        ([[0.9, 0.6], [0.7, 0.55]], [[True, True]]),  # the second detection takes the left-over box
        ([[0.9, 0.6], [0.7, 0.0]], [[True, False]]),
        ([[0.6, 0.6]], [[True]]),
        ([[0.4]], [[False]]),
        (np.zeros((0, 3)), np.zeros((1, 0), bool)),
        (np.zeros((2, 0)), [[False, False]]),
    ],
)
def test_greedy_match(iou: list, expected: list) -> None:
    assert greedy_match(np.array(iou, dtype=float), np.array([0.5])).tolist() == np.asarray(expected).tolist()


def test_greedy_match_ties_go_to_the_last_box_as_evalres() -> None:
    iou = np.array([[0.6, 0.6], [0.6, 0.0]])
    assert greedy_match(iou, np.array([0.5])).tolist() == [[True, True]]  # first takes box 2, second box 1
    gt = np.c_[[[0, 0, 10, 10], [0, 0, 10, 10]], [0, 0]]
    _, dt = port.eval_res(gt.astype(float), np.array([[0.0, 0, 10, 10, 0.9], [0, 0, 10, 10, 0.8]]), 0.5)
    assert dt[:, 5].tolist() == [1, 1]


def test_voc_ap_matches_the_port() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        rec = np.sort(rng.random(15))
        prec = rng.random(15)
        assert voc_ap(rec, prec)[0] == pytest.approx(port.voc_ap(rec, prec))
    assert voc_ap(np.zeros(0), np.zeros(0))[0] == 0.0


def test_protocols_leave_their_inputs_alone() -> None:
    coco_gt = coco_ground_truth([("0.jpg", WH, GT[0])], NAMES)
    dets = coco_detections([scored(GT[0])])
    before = json.dumps([coco_gt, dets])
    coco_protocol(coco_gt, dets)
    assert json.dumps([coco_gt, dets]) == before


def test_coco_protocol_skips_unknown_categories_and_rejects_unknown_images() -> None:
    coco_gt = coco_ground_truth([("0.jpg", WH, GT[0])], NAMES)
    dets = coco_detections([scored(GT[0])])
    other = {"image_id": 0, "category_id": 7, "bbox": [0, 0, 1, 1], "score": 1.0}  # e.g. `others`, not in the gt
    assert coco_protocol(coco_gt, [other, *dets])["overall"] == coco_protocol(coco_gt, dets)["overall"]
    with pytest.raises(DroneVisionError, match="image ids \\[3\\]"):
        coco_protocol(coco_gt, [{"image_id": 3, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0}])
    with pytest.raises(DroneVisionError, match="ap_max_dets"):
        coco_protocol(coco_gt, [], ap_max_dets=300)


# --- agreement with the toolkit port -------------------------------------------------------------------------------


def synthetic_detections(gt: Detections, wh: tuple[int, int], rng: np.random.Generator, *, n_false: int) -> Detections:
    """Ground truth jittered (some boxes dropped, some relabelled) plus false positives, with random scores."""
    keep = rng.random(len(gt)) < 0.8
    boxes = gt.xyxy[keep]
    size = np.maximum(boxes[:, 2:] - boxes[:, :2], 1.0)
    boxes = boxes + rng.normal(0, 0.08, boxes.shape) * np.c_[size, size]
    cls = np.where(rng.random(len(boxes)) < 0.9, gt.class_id[keep], rng.integers(0, 11, len(boxes)))
    xy = rng.uniform(0, 1, (n_false, 2)) * wh
    false = np.c_[xy, xy + rng.uniform(2, 40, (n_false, 2))]
    xyxy = np.r_[boxes, false]
    xyxy[:, 2:] = np.maximum(xyxy[:, 2:], xyxy[:, :2] + 1)
    return Detections(xyxy=xyxy, class_id=np.r_[cls, rng.integers(0, 11, n_false)], confidence=rng.random(len(xyxy)))


def annotation_lines(gt: Detections, regions: np.ndarray) -> list[str]:
    lines = [
        f"{x1:g},{y1:g},{x2 - x1:g},{y2 - y1:g},1,{c + 1},0,0"
        for (x1, y1, x2, y2), c in zip(gt.xyxy.tolist(), gt.class_id.tolist())
    ]
    return lines + [f"{x1:g},{y1:g},{x2 - x1:g},{y2 - y1:g},0,0,0,0" for x1, y1, x2, y2 in regions.tolist()]


def random_images(rng: np.random.Generator, n: int) -> list[GroundTruthImage]:
    """Small images with integer ground truth in VisDrone's 11 classes and, in half of them, ignored regions."""
    items = []
    for i in range(n):
        wh = (int(rng.integers(40, 160)), int(rng.integers(40, 120)))
        n_gt = int(rng.integers(1, 16))
        xy = rng.integers(0, np.array(wh) - 4, (n_gt, 2))
        gt = Detections(xyxy=np.c_[xy, xy + rng.integers(2, 40, (n_gt, 2))], class_id=rng.integers(0, 11, n_gt))
        n_reg = int(rng.integers(1, 4)) if rng.random() < 0.5 else 0
        rxy = rng.integers(0, np.array(wh) - 4, (n_reg, 2))
        regions = np.c_[rxy, rxy + rng.integers(3, 50, (n_reg, 2))].astype(float)
        items.append(GroundTruthImage(file=f"images/r{i:04d}.jpg", wh=wh, gt=gt, ignore_regions=regions))
    return items


def toolkit_scores(items: list[GroundTruthImage], dets: list[Detections], tmp: Path, gt_dir: Path | None = None):
    """Write our result files, score them with the toolkit port; also return what it read back."""
    if gt_dir is None:
        gt_dir = tmp / "annotations"
        gt_dir.mkdir()
        for item in items:
            (gt_dir / f"{Path(item.file).stem}.txt").write_text(
                "\n".join(annotation_lines(item.gt, item.ignore_regions))
            )
    res = tmp / "results"
    write_visdrone_results(res, [it.file for it in items], dets, VISDRONE_NAMES)
    sizes = {f"{Path(it.file).stem}.txt": (it.wh[1], it.wh[0]) for it in items}
    return port.eval_det(str(gt_dir), str(res), sizes), read_visdrone_results(res, VISDRONE_NAMES)


def assert_agree(ours: dict, toolkit: dict, *, points: float) -> None:
    for key, theirs in TOOLKIT_KEYS.items():
        assert ours["overall"][key] * 100 == pytest.approx(toolkit[theirs], abs=points), key


@pytest.fixture(scope="module")
def visdrone_mini() -> tuple[list[GroundTruthImage], dict[int, str]]:
    return load_visdrone_det_ground_truth(VISDRONE_MINI)


def test_visdrone_mini_agrees_with_the_toolkit(visdrone_mini, tmp_path: Path) -> None:
    items, names = visdrone_mini
    rng = np.random.default_rng(0)
    dets = [synthetic_detections(it.gt, it.wh, rng, n_false=40) for it in items]
    toolkit, back = toolkit_scores(items, dets, tmp_path, gt_dir=VISDRONE_MINI / "annotations")
    ours = visdrone_protocol([it.with_detections(d) for it, d in zip(items, dets)], VISDRONE_NAMES)
    assert_agree(ours, toolkit, points=0.5)  # the files round boxes to 0.001 px
    exact = visdrone_protocol([it.with_detections(back[Path(it.file).stem]) for it in items], VISDRONE_NAMES)
    assert_agree(exact, toolkit, points=1e-9)
    per_class_ap = [exact["per_class"][names[c]]["AP"] for c in range(10)]
    assert [v * 100 for v in per_class_ap if v is not None] == pytest.approx(
        [toolkit["AP"][c].mean() for c in range(10) if per_class_ap[c] is not None], abs=1e-9
    )
    assert 0.1 < ours["overall"]["AP50"] < 0.95  # a non-trivial case


def test_random_images_agree_with_the_toolkit(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    items = random_images(rng, 200)
    dets = [synthetic_detections(it.gt, it.wh, rng, n_false=int(rng.integers(0, 10))) for it in items]
    dets[0] = Detections.empty(with_confidence=True)  # written as the placeholder line
    toolkit, back = toolkit_scores(items, dets, tmp_path)
    ours = visdrone_protocol([it.with_detections(d) for it, d in zip(items, dets)], VISDRONE_NAMES)
    assert_agree(ours, toolkit, points=0.5)
    exact = visdrone_protocol([it.with_detections(back[Path(it.file).stem]) for it in items], VISDRONE_NAMES)
    assert_agree(exact, toolkit, points=1e-9)


def test_the_500_limit_agrees_with_the_toolkit(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    xy = np.c_[np.arange(20) % 5 * 20, np.arange(20) // 5 * 20].astype(float)
    gt = Detections(xyxy=np.c_[xy, xy + 15], class_id=np.full(20, 3))
    item = GroundTruthImage(file="a.jpg", wh=(300, 200), gt=gt, ignore_regions=np.zeros((0, 4)))
    fxy = rng.uniform(110, 280, (540, 2))
    det = Detections(
        xyxy=np.r_[item.gt.xyxy + rng.normal(0, 1, (20, 4)), np.c_[fxy, fxy + rng.uniform(2, 20, (540, 2))]],
        class_id=np.r_[np.full(20, 3), rng.integers(0, 11, 540)],
        confidence=np.r_[np.linspace(0.01, 0.3, 20), rng.uniform(0, 1, 540)],  # some cars fall past the 500th place
    )
    toolkit, _ = toolkit_scores([item], [det], tmp_path)
    ours = visdrone_protocol([item.with_detections(det)], VISDRONE_NAMES)
    assert_agree(ours, toolkit, points=0.5)
    unlimited = visdrone_protocol([item.with_detections(det)], VISDRONE_NAMES, max_dets=(1, 10, 100, 1000))
    assert 0 < ours["overall"]["AR_500"] < unlimited["overall"]["AR_1000"]


def test_the_toolkit_cannot_read_an_empty_result_file(tmp_path: Path) -> None:
    item = random_images(np.random.default_rng(0), 1)[0]
    toolkit_scores([item], [Detections.empty(with_confidence=True)], tmp_path)
    (tmp_path / "results" / "r0000.txt").write_text("")
    with pytest.raises(port.ToolkitError):
        port.eval_det(str(tmp_path / "annotations"), str(tmp_path / "results"), {"r0000.txt": item.wh[::-1]})


def test_visdrone_protocol_is_fast_on_a_large_split() -> None:
    rng = np.random.default_rng(0)
    images = []
    for _ in range(100):
        xy = rng.uniform(0, 1900, (300, 2))
        gt = Detections(xyxy=np.c_[xy, xy + rng.uniform(5, 60, (300, 2))], class_id=rng.integers(0, 10, 300))
        det = synthetic_detections(gt, (2000, 1500), rng, n_false=260)
        images.append(VisDroneImage(wh=(2000, 1500), gt=gt, det=det, ignore_regions=[[0, 0, 300, 300]]))
    start = time.perf_counter()
    visdrone_protocol(images, VISDRONE_NAMES)
    assert time.perf_counter() - start < 5.0  # about 0.3 s; 500 such images take about 1.5 s


# --- coco cross-check ----------------------------------------------------------------------------------------------


def random_coco(rng: np.random.Generator, n_images: int = 40) -> tuple[dict, list[dict]]:
    images, dets = [], []
    for _ in range(n_images):
        n = int(rng.integers(0, 30))
        xy = rng.uniform(0, 500, (n, 2))
        gt = Detections(xyxy=np.c_[xy, xy + rng.uniform(4, 150, (n, 2))], class_id=rng.integers(0, 3, n))
        images.append(gt)
        dets.append(synthetic_detections(gt, (640, 640), rng, n_false=int(rng.integers(0, 150))))
    dets = [Detections(xyxy=d.xyxy, class_id=np.minimum(d.class_id, 2), confidence=d.confidence) for d in dets]
    names = {0: "car", 1: "truck", 2: "bus"}
    return coco_ground_truth([(f"{i}.jpg", (640, 640), g) for i, g in enumerate(images)], names), coco_detections(dets)


@pytest.mark.parametrize("ap_max_dets", [100, 500])
def test_coco_protocol_agrees_with_faster_coco_eval(ap_max_dets: int) -> None:
    fce = pytest.importorskip("faster_coco_eval")
    coco_gt, dets = random_coco(np.random.default_rng(0))
    ours = coco_protocol(coco_gt, dets, ap_max_dets=ap_max_dets)
    gt = fce.COCO(copy.deepcopy(coco_gt))
    ev = fce.COCOeval_faster(gt, gt.loadRes(copy.deepcopy(dets)), iouType="bbox")
    ev.params.maxDets = [m for m in (1, 10, 100, 500) if m <= ap_max_dets]  # it scores AP at the last one
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    theirs = ev.stats_as_dict
    keys = {"AP": "AP_all", "AP50": "AP_50", "AP75": "AP_75", **{k: k for k in ("AP_small", "AP_medium", "AP_large")}}
    for ours_key, their_key in keys.items():
        assert ours["overall"][ours_key] == pytest.approx(theirs[their_key], abs=1e-9), ours_key
    for m, max_dets in enumerate(ev.params.maxDets):
        recall = ev.eval["recall"][:, :, 0, m]
        assert ours["overall"][f"AR_{max_dets}"] == pytest.approx(recall[recall > -1].mean(), abs=1e-9)
    precision = ev.eval["precision"][:, :, :, 0, -1]
    for k, name in enumerate(("car", "truck", "bus")):
        assert ours["per_class"][name]["AP"] == pytest.approx(precision[:, :, k].mean(), abs=1e-9)
        assert ours["pr"][name]["precision"] == pytest.approx(precision[0, :, k].tolist(), abs=1e-9)
    assert 0.05 < ours["overall"]["AP"] < 0.9


def test_visdrone_results_round_trip_best_score_first(tmp_path: Path) -> None:
    names = {0: "car", 1: "bus", 2: "others"}
    det = Detections(
        xyxy=[[1.234, 2, 30, 40.5], [5, 6, 7, 8], [0, 0, 3, 3]], class_id=[0, 1, 2], confidence=[0.3, 0.9, 0.5]
    )
    images = ["images/val/a.jpg", "images/val/b.jpg"]
    assert write_visdrone_results(tmp_path, images, [det, Detections.empty(with_confidence=True)], names) == tmp_path
    lines = (tmp_path / "a.txt").read_text().splitlines()
    assert [line.split(",")[4:6] for line in lines] == [["0.9", "9"], ["0.5", "11"], ["0.3", "4"]]
    assert lines[2] == "1.234,2.000,28.766,38.500,0.3,4,-1,-1"
    assert (tmp_path / "b.txt").read_text().splitlines() == [PLACEHOLDER_LINE]
    back = read_visdrone_results(tmp_path, names)
    order = np.argsort(-det.confidence)
    assert back["a"].class_id.tolist() == det.class_id[order].tolist()
    assert np.allclose(back["a"].xyxy, det.xyxy[order], atol=1e-3)
    assert len(back["b"]) == 0  # the placeholder is no detection of ours
    predictions = read_predictions(tmp_path, [*images, "images/val/c.jpg"], names)
    assert [len(p) for p in predictions] == [3, 0, 0]


def test_visdrone_categories_by_name_or_by_id() -> None:
    assert visdrone_category_ids(VISDRONE_NAMES) == {i: i + 1 for i in range(11)}
    assert visdrone_category_ids({0: "truck", 1: "car"}) == {0: 6, 1: 4}
    assert visdrone_category_ids({0: "car", 1: "excavator"}) == {0: 1, 1: 2}


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("1,2,3,4,0.5", "5 comma-separated fields"),
        ("1,2,3,4,0.5,4,-1,-1,7", "9 comma-separated fields"),
        ("1,2,three,4,0.5,4,-1,-1", "not a number: 'three'"),
        ("1,2,3,4,nan,4,-1,-1", "not a finite number"),
        ("1,2,-3,4,0.5,4,-1,-1", "negative width or height"),
        ("1,2,3,4,0.5,4.5,-1,-1", "category 4.5 is not a category id"),
        ("1,2,3,4,0.5,-1,-1,-1", "category -1 is not a category id"),
    ],
)
def test_bad_result_lines_name_file_line_and_problem(line: str, problem: str) -> None:
    with pytest.raises(DroneVisionError, match=f"^r.txt:2: {problem}"):
        parse_visdrone_result_lines(["1,2,3,4,0.9,4,-1,-1", line], source="r.txt", class_of_category={4: 0})


def test_result_lines_tolerate_blank_lines_trailing_commas_and_six_fields() -> None:
    det, n_other = parse_visdrone_result_lines(
        ["", "1,2,3,4,0.9,4,", "1,2,3,4,0.8,12"], source="r", class_of_category={4: 0}
    )
    assert det.class_id.tolist() == [0, -1] and n_other == 1


def test_coco_results_round_trip_by_id_and_by_file_name(tmp_path: Path) -> None:
    images = ["images/val/0007.jpg", "images/val/b.jpg"]
    coco_gt = coco_ground_truth([(Path(p).name, WH, g) for p, g in zip(images, GT)], NAMES)
    predictions = [scored(g) for g in GT]
    path = write_coco_results(tmp_path / "predictions.json", images, predictions, NAMES)
    dets = coco_detections(predictions)
    assert [{k: r[k] for k in dets[0]} for r in json.loads(path.read_text())] == dets
    assert read_coco_results(path, coco_gt) == dets
    back = read_predictions(path, images[::-1], NAMES)  # matched by the records' file_name, not by position
    assert back[1].xyxy.tolist() == GT[0].xyxy.tolist() and back[0].class_id.tolist() == [0]
    assert coco_results_to_detections(dets, coco_gt)[0].xyxy.tolist() == GT[0].xyxy.tolist()
    by_name = [{**d, "image_id": 7 if d["image_id"] == 0 else "b"} for d in dets]  # as ultralytics names images
    assert map_coco_results(by_name, coco_gt) == dets
    assert map_coco_results([{**d, "image_id": "b.jpg"} for d in dets[2:]], coco_gt) == dets[2:]
    assert coco_records([Detections([[0, 0, 1, 1]], [-1], [0.5])], images) == []  # not one of our classes


@pytest.mark.parametrize(
    ("records", "problem"),
    [
        ({"image_id": 0}, "COCO results must be a JSON list"),
        ([{"image_id": 0, "bbox": [0, 0, 1, 1], "score": 1}], "record 0: needs image_id, category_id"),
        ([{"image_id": 0, "category_id": 1, "bbox": [0, 0, 1], "score": 1}], "record 0: bbox must be 4"),
        ([{"image_id": 0, "category_id": 1, "bbox": [0, 0, -1, 1], "score": 1}], "record 0: bbox must be 4"),
        ([{"image_id": 0, "category_id": 9, "bbox": [0, 0, 1, 1], "score": 1}], "record 0: category_id 9 is not"),
        ([{"image_id": "zz", "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}], "record 0: image_id 'zz' matches"),
        ([{"image_id": [1], "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}], "record 0: image_id must be"),
    ],
)
def test_bad_coco_results_are_reported(tmp_path: Path, records: object, problem: str) -> None:
    coco_gt = coco_ground_truth([("a.jpg", WH, GT[0])], NAMES)
    path = tmp_path / "r.json"
    path.write_text(json.dumps(records))
    with pytest.raises(DroneVisionError, match=f"r.json: {problem}"):
        read_coco_results(path, coco_gt)


def test_coco_results_by_id_must_name_ground_truth_ids() -> None:
    coco_gt = {"images": [{"id": 5, "file_name": "a.jpg"}], "categories": [{"id": 1, "name": "car"}]}
    record = {"image_id": 0, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}
    with pytest.raises(DroneVisionError, match="image_id 0 matches no image id"):
        map_coco_results([record], coco_gt, match="id")
    with pytest.raises(DroneVisionError, match="image_id 0 matches no image file name"):
        map_coco_results([record], coco_gt)


def test_visdrone_det_ground_truth(visdrone_mini) -> None:
    items, names = visdrone_mini
    assert names[0] == "pedestrian" and names[9] == "motor" and len(names) == 10
    assert [len(it.gt) for it in items] == [127, 77, 48] and [len(it.ignore_regions) for it in items] == [1, 1, 2]
    file, wh, gt, ignored = items[0]  # a tuple, as the evaluate command reads it
    assert wh == (455, 256) and Path(file).parent.name == "images"


def test_built_split_ground_truth_from_the_manifest(tmp_path: Path) -> None:
    entries = [
        {"file": "images/val/a.jpg", "split": "val", "size": [64, 48], "boxes": [[1, 0, 0, 10, 10]],
         "ignored": [[20, 20, 30, 30]]},
        {"file": "images/train/b.jpg", "split": "train", "size": [64, 48], "boxes": [], "ignored": []},
    ]  # fmt: skip
    manifest = {"classes": ["car", "truck"], "images": {"train": 1, "val": 1}, "entries": entries}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "data.yaml").write_text("names: [car, truck]\n")
    items, names, data_yaml = load_dataset_ground_truth(tmp_path / "data.yaml", "val")
    assert names == {0: "car", 1: "truck"} and len(items) == 1 and data_yaml == tmp_path / "data.yaml"
    assert items[0].gt.class_id.tolist() == [1] and items[0].ignore_regions.tolist() == [[20, 20, 30, 30]]
    assert items[0].file == str(tmp_path / "images/val/a.jpg") and items[0].wh == (64, 48)
    with pytest.raises(DroneVisionError, match="no images in split 'test'"):
        load_dataset_ground_truth(tmp_path, "test")


def test_plain_yolo_dataset_ground_truth_from_its_labels(tmp_path: Path) -> None:
    data_yaml = make_yolo_dataset(tmp_path, n_train=2, n_val=3)
    items, names, found = load_dataset_ground_truth(tmp_path, "val")
    assert names == {0: "vehicle"} and found == data_yaml and len(items) == 3
    assert all(it.wh == (64, 64) and len(it.gt) and not len(it.ignore_regions) for it in items)
    with pytest.raises(DroneVisionError, match="no split 'test'"):
        load_dataset_ground_truth(tmp_path, "test")


def test_match_detections_by_stem() -> None:
    images = ["images/a.jpg", "images/b.jpg"]
    det = scored(GT[0])
    assert [len(d) for d in match_detections(images, {"b": det})] == [0, 2]
    with pytest.raises(DroneVisionError, match="1 images not in the dataset"):
        match_detections(images, {"c": det})
    with pytest.raises(DroneVisionError, match="neither a folder of VisDrone .txt files nor a COCO"):
        read_predictions(Path("missing.json"), images, NAMES)
