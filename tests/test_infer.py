"""Sliced inference: merge rules on constructed boxes, tiles and batches with a fake detector, real backends."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dronevision.errors import DroneVisionError
from dronevision.infer import (
    Detector,
    SliceSettings,
    greedy_nmm,
    load_detector,
    merge_detections,
    nms,
    pairwise_overlap,
    predict_images,
    slice_bboxes,
    sliced_predict,
)
from dronevision.infer.detector import balanced_chunks
from dronevision.infer.sliced import tile_crops
from dronevision.infer.yolo import letterbox_batch, letterbox_plan
from dronevision.schema import Detections


def sliced(detector: Detector, image: np.ndarray, **settings: object) -> Detections:
    """``sliced_predict`` with SAHI's settings but no full-frame pass unless asked for."""
    return sliced_predict(detector, image, SliceSettings(**{"enabled": True, "full_frame": False, **settings}))


# --- merge rules on constructed boxes --------------------------------------------------------------------------

BIG, INSIDE, SHIFTED, FAR = [0, 0, 10, 10], [0, 0, 4, 4], [5, 0, 15, 10], [50, 50, 60, 60]


def case(boxes: list, scores: list, classes: list, how: str, want: tuple, note: str) -> object:
    """A merge case; ``how`` is ``merge-match`` with ``-any`` for class-agnostic."""
    return pytest.param(boxes, scores, classes, how, want, id=f"{how}-{note}")


U = [0, 0, 15, 10]  # BIG and SHIFTED merged
MERGE_CASES = [  # boxes, scores, classes, how, (boxes, scores, classes) expected
    case([BIG, INSIDE], [0.9, 0.8], [0, 0], "nms-iou", ([BIG, INSIDE], [0.9, 0.8], [0, 0]), "small-iou"),
    case([BIG, INSIDE], [0.9, 0.8], [0, 0], "nms-ios", ([BIG], [0.9], [0]), "inside"),
    case([BIG, INSIDE], [0.9, 0.8], [0, 1], "nms-ios", ([BIG, INSIDE], [0.9, 0.8], [0, 1]), "other-class"),
    case([BIG, INSIDE], [0.9, 0.8], [0, 1], "nms-ios-any", ([BIG], [0.9], [0]), "other-class"),
    case([BIG, SHIFTED], [0.7, 0.9], [0, 0], "nms-iou", ([SHIFTED, BIG], [0.9, 0.7], [0, 0]), "iou-third"),
    case([BIG, SHIFTED], [0.7, 0.9], [0, 0], "nms-ios", ([SHIFTED], [0.9], [0]), "ios-half"),
    case([BIG, SHIFTED], [0.7, 0.9], [0, 0], "nmm-ios", ([U], [0.9], [0]), "union"),
    case([BIG, SHIFTED], [0.7, 0.9], [0, 0], "nmm-iou", ([SHIFTED, BIG], [0.9, 0.7], [0, 0]), "iou-third"),
    case([BIG, SHIFTED], [0.7, 0.9], [3, 1], "nmm-ios", ([SHIFTED, BIG], [0.9, 0.7], [1, 3]), "other-class"),
    case([BIG, SHIFTED], [0.7, 0.9], [3, 1], "nmm-ios-any", ([U], [0.9], [1]), "higher-scored-class"),
    case([BIG, INSIDE, FAR], [0.5, 0.95, 0.6], [0, 0, 0], "nmm-ios", ([BIG, FAR], [0.95, 0.6], [0, 0]), "max-score"),
    case([], [], [], "nmm-ios", ([], [], []), "empty"),
]


@pytest.mark.parametrize(("boxes", "scores", "classes", "how", "want"), MERGE_CASES)
def test_merge_rules(boxes: list, scores: list, classes: list, how: str, want: tuple) -> None:
    merge, match, *agnostic = how.split("-")
    det = Detections(xyxy=np.array(boxes, float).reshape(-1, 4), class_id=classes, confidence=scores)
    out = merge_detections(det, merge=merge, match=match, threshold=0.5, class_agnostic=bool(agnostic))
    assert out.xyxy.tolist() == np.array(want[0], float).reshape(-1, 4).tolist()
    assert out.confidence.tolist() == want[1] and out.class_id.tolist() == want[2]


def test_greedy_nmm_checks_each_merge_against_the_merged_box() -> None:
    # B and C both match A (IoU 0.5); A absorbs B, and A+B overlaps C by IoU 1/3 only: C is dropped, as in SAHI
    a, b, c = [0, 10, 10, 20], [0, 10, 10, 30], [0, 0, 10, 20]
    xyxy, score, _ = greedy_nmm(np.array([a, b, c], float), np.array([0.9, 0.8, 0.7]), match="iou", threshold=0.5)
    assert xyxy.tolist() == [[0, 10, 10, 30]] and score.tolist() == [0.9]
    assert pairwise_overlap(np.array([a]), np.array([b, c]), match="iou").tolist() == [[0.5, 0.5]]


def test_nms_threshold_is_inclusive_and_zero_matches_everything() -> None:
    boxes = np.array([BIG, SHIFTED, FAR], float)
    assert nms(boxes, np.array([0.9, 0.8, 0.7]), threshold=1 / 3).tolist() == [0, 2]  # IoU exactly 1/3
    assert nms(boxes, np.array([0.9, 0.8, 0.7]), threshold=0.0).tolist() == [0]


def random_boxes(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xy = rng.uniform(0, 200, (n, 2))
    wh = rng.uniform(4, 60, (n, 2))
    scores = rng.choice([0.3, 0.5, 0.7, 0.9], n) + rng.uniform(0, 0.05, n) * (rng.random(n) < 0.8)  # some ties
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32).astype(float), scores, rng.integers(0, 3, n)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(
    ("merge", "match", "agnostic"),
    [("nmm", "ios", False), ("nmm", "iou", True), ("nms", "ios", False), ("nms", "iou", True)],
)
def test_merge_equals_sahi_postprocess(seed: int, merge: str, match: str, agnostic: bool) -> None:
    """The same boxes out of SAHI's GreedyNMMPostprocess / NMSPostprocess (SAHI is a dev-only dependency)."""
    pytest.importorskip("sahi")
    from sahi.postprocess.combine import GreedyNMMPostprocess, NMSPostprocess
    from sahi.prediction import ObjectPrediction

    xyxy, scores, classes = random_boxes(np.random.default_rng(seed), 80)
    preds = [
        ObjectPrediction(bbox=b.tolist(), category_id=int(c), category_name=str(c), score=float(s))
        for b, s, c in zip(xyxy, scores, classes)
    ]
    post = (GreedyNMMPostprocess if merge == "nmm" else NMSPostprocess)(
        match_threshold=0.5, match_metric=match.upper(), class_agnostic=agnostic
    )
    theirs = sorted((*p.bbox.to_xyxy(), p.score.value, p.category.id) for p in post(preds))
    ours = merge_detections(
        Detections(xyxy=xyxy, class_id=classes, confidence=scores), merge=merge, match=match, class_agnostic=agnostic
    )
    mine = sorted((*b, s, c) for b, s, c in zip(ours.xyxy.tolist(), ours.confidence.tolist(), ours.class_id.tolist()))
    np.testing.assert_allclose(np.array(mine), np.array(theirs), rtol=0, atol=1e-4)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(
    ("match", "threshold", "strict", "limit"),
    [("ios", 0.5, False, None), ("iou", 0.7, True, 5), ("iou", 1.0, False, None), ("ios", 0.0, True, 300)],
)
def test_sweep_finds_the_groups_the_scan_finds(
    seed: int, match: str, threshold: float, strict: bool, limit: int | None
) -> None:
    """The pair sweep behind NMS and NMM (the hot path) groups boxes exactly as one scan per kept box does: with
    duplicates, degenerate boxes, several classes, an order that leaves boxes out, and a limit."""
    from dronevision.infer.merge import _greedy_groups, _greedy_scan, score_order

    rng = np.random.default_rng(seed)
    xyxy, scores, classes = random_boxes(rng, 150)
    xyxy[rng.integers(0, 150, 30)] = xyxy[0]  # exact duplicates: ties broken by the order alone
    xyxy[rng.integers(0, 150, 10), 2] = xyxy[rng.integers(0, 150, 10), 0]  # zero or negative widths
    order = score_order(xyxy, scores)[: 150 - seed * 10]
    for class_id in (classes, None):
        kwargs = {"threshold": threshold, "strict": strict, "limit": limit}
        swept = _greedy_groups(xyxy, order, class_id, match=match, **kwargs)
        assert swept == _greedy_scan(xyxy, order, class_id, iou=match == "iou", **kwargs)
        assert len(swept) > 1


# --- tiles and batches with a fake detector --------------------------------------------------------------------


class BlobDetector(Detector):
    """Finds white rectangles; like a real model it misses those cut by its input's border. Records its batches."""

    def __init__(self) -> None:
        self.names, self.runtime, self.threads = {0: "blob"}, "fake", 1
        self.batches: list[int] = []

    @property
    def input_hw(self) -> tuple[int, int]:
        return 640, 640

    def _predict_batch(self, images_bgr: list[np.ndarray]) -> list[Detections]:
        import cv2

        self.batches.append(len(images_bgr))
        out = []
        for image in images_bgr:
            h, w = image.shape[:2]
            n, _, stats, _ = cv2.connectedComponentsWithStats((image[..., 0] > 200).astype(np.uint8))
            boxes = [
                [x, y, x + bw, y + bh]
                for x, y, bw, bh, _ in stats[1:n].tolist()
                if x > 0 and y > 0 and x + bw < w and y + bh < h
            ]
            xyxy = np.array(boxes, float).reshape(-1, 4)
            score = 0.5 + (xyxy[:, 2] - xyxy[:, 0]) / 1000  # bigger blobs score higher: deterministic order
            out.append(Detections(xyxy=xyxy, class_id=np.zeros(len(xyxy)), confidence=score))
        return out


def blob_image(boxes: list[list[int]], wh: tuple[int, int] = (300, 200)) -> np.ndarray:
    image = np.zeros((wh[1], wh[0], 3), np.uint8)
    for x1, y1, x2, y2 in boxes:
        image[y1:y2, x1:x2] = 255
    return image


BLOBS = [[10, 10, 30, 25], [120, 40, 140, 60], [200, 150, 230, 170], [275, 5, 290, 20]]


@pytest.mark.parametrize("merge", ["nmm", "nms"])
def test_tile_boxes_are_shifted_to_image_coordinates(merge: str) -> None:
    image = blob_image(BLOBS)
    det = sliced(BlobDetector(), image, tile=96, overlap=0.25, merge=merge)
    assert len(slice_bboxes((300, 200), size=96, overlap=0.25)) > 4  # several tiles see each blob
    assert sorted(det.xyxy.tolist()) == sorted(np.array(BLOBS, float).tolist())


def test_full_frame_pass_adds_what_every_tile_cuts() -> None:
    image = blob_image([*BLOBS, [40, 75, 180, 140]])  # larger than a tile: cut in every tile that sees it
    detector = BlobDetector()
    tiles_only = sliced(detector, image, tile=96, overlap=0.25)
    with_full = sliced(detector, image, tile=96, overlap=0.25, full_frame=True)
    assert [40, 75, 180, 140] not in tiles_only.xyxy.tolist()
    assert [40, 75, 180, 140] in with_full.xyxy.tolist() and len(with_full) == len(tiles_only) + 1


def test_batch_size_does_not_change_the_result_and_batches_are_balanced() -> None:
    image = blob_image(BLOBS)
    results = {}
    for batch in (1, 3, 5, 8, 100):
        detector = BlobDetector()
        det = sliced(detector, image, tile=96, overlap=0.25, batch=batch)
        results[batch] = (det.xyxy.tolist(), det.confidence.tolist())
        assert sum(detector.batches) == 12 and max(detector.batches) <= batch
        assert max(detector.batches) - min(detector.batches) <= 1
    assert all(r == results[1] for r in results.values())


def test_sliced_predict_records_the_time_per_stage() -> None:
    timings: dict[str, float] = {}
    det = sliced_predict(BlobDetector(), blob_image(BLOBS), SliceSettings(tile=96, overlap=0.25), timings=timings)
    assert len(det) == len(BLOBS)
    assert sorted(timings) == ["inference", "merge"] and all(v >= 0 for v in timings.values())
    again = dict(timings)
    sliced_predict(BlobDetector(), blob_image(BLOBS), SliceSettings(tile=96, overlap=0.25), timings=timings)
    assert all(timings[k] >= again[k] for k in again)  # added up, not replaced


def test_one_tile_returns_the_model_output_unmerged() -> None:
    image = blob_image([[10, 10, 60, 60]])
    image[15:55, 15:55] = 0
    image[20:40, 20:40] = 255  # a square inside a frame: two boxes that NMM would merge (IoS 1)
    detector = BlobDetector()
    plain = detector.predict([image])[0]
    assert len(plain) == 2 and len(merge_detections(plain)) == 1
    one_tile = sliced(detector, image, tile=1000)
    assert one_tile.xyxy.tolist() == plain.xyxy.tolist() and one_tile.confidence.tolist() == plain.confidence.tolist()


def test_predict_images_reads_files_and_refuses_bad_ones(tmp_path: Path) -> None:
    import cv2

    cv2.imwrite(str(tmp_path / "a.png"), blob_image(BLOBS))
    (tmp_path / "bad.png").write_bytes(b"not an image")
    settings = SliceSettings(enabled=True, tile=96, overlap=0.25, full_frame=False)
    [det] = list(predict_images(BlobDetector(), [tmp_path / "a.png"], settings=settings))
    assert len(det) == len(BLOBS)
    with pytest.raises(DroneVisionError, match="cannot be read as an image"):
        list(predict_images(BlobDetector(), [tmp_path / "bad.png"], settings=settings))


@pytest.mark.parametrize(("n", "batch", "sizes"), [(12, 8, [6, 6]), (12, 12, [12]), (13, 4, [4, 3, 3, 3]), (1, 8, [1])])
def test_balanced_chunks(n: int, batch: int, sizes: list[int]) -> None:
    chunks = balanced_chunks(n, batch)
    assert [len(c) for c in chunks] == sizes and [i for c in chunks for i in c] == list(range(n))


@pytest.mark.parametrize(
    ("n", "batch", "streams", "sizes"),
    [(8, 8, 1, [8]), (8, 8, 2, [4, 4]), (12, 8, 2, [6, 6]), (12, 4, 2, [4, 4, 4]), (13, 8, 2, [7, 6]), (1, 8, 2, [1])],
)
def test_chunks_give_every_stream_work(n: int, batch: int, streams: int, sizes: list[int]) -> None:
    images = [blob_image([])] * n + [blob_image([], wh=(64, 64))]  # the last one: a shape group of its own
    tiles, whole = BlobDetector()._chunks(images, batch, streams=streams)
    assert [len(c) for c in tiles] == sizes and [i for c in tiles for i in c] == list(range(n))
    assert whole == [[n]]


def test_letterbox_batch_matches_ultralytics() -> None:
    from ultralytics.data.augment import LetterBox

    rng = np.random.default_rng(0)
    for hw, auto in [((150, 200), True), ((150, 200), False), ((64, 64), True), ((37, 90), True)]:
        image = rng.integers(0, 255, (*hw, 3), dtype=np.uint8)
        plan = letterbox_plan(hw, (64, 64), stride=32, auto=auto)
        theirs = LetterBox((64, 64), auto=auto, stride=32)(image=image)[..., ::-1].transpose(2, 0, 1)
        ours = letterbox_batch([image], plan)[0]
        assert ours.shape == theirs.shape == (3, *plan.input_hw)
        np.testing.assert_array_equal(ours, theirs.astype(np.float32) / np.float32(255))


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(DroneVisionError, match="slicing.merge must be one of"):
        sliced(BlobDetector(), blob_image([]), merge="wbf")
    with pytest.raises(DroneVisionError, match="slicing.tile must be"):
        SliceSettings(tile=0)
    with pytest.raises(DroneVisionError, match="unknown slicing keys"):
        SliceSettings.from_config({"enabled": True, "size": 32})
    with pytest.raises(DroneVisionError, match="does not exist"):
        load_detector(Path("/nope/model.pt"))


# --- real backends (a tiny trained yolov8n) --------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_onnx(tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny model exported to ONNX with a dynamic batch and with a static batch of 1, at imgsz 32."""
    from dronevision.export.convert import export_onnx

    root = tmp_path_factory.mktemp("slicing-onnx")
    return {
        dynamic: export_onnx(
            tiny_weights, imgsz=32, opset=17, dynamic=dynamic, simplify=False, out=root / f"{dynamic}.onnx"
        )
        for dynamic in (True, False)
    }


def frame(seed: int = 0, wh: tuple[int, int] = (80, 56)) -> np.ndarray:
    """Dark noise with white rectangles, like the tiny model's training images."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, (wh[1], wh[0], 3), dtype=np.uint8)
    for _ in range(5):
        x, y = (int(v) for v in rng.integers(0, min(wh) - 16, 2))
        image[y : y + 14, x : x + 10] = 255
    return image


def assert_same(a: Detections, b: Detections, *, atol: float = 0.0) -> None:
    assert len(a) == len(b)
    np.testing.assert_allclose(a.xyxy, b.xyxy, atol=atol, rtol=0)
    np.testing.assert_allclose(a.confidence, b.confidence, atol=atol, rtol=0)
    assert a.class_id.tolist() == b.class_id.tolist()


@pytest.mark.slow
def test_torch_one_tile_is_plain_ultralytics_inference(tiny_weights: Path) -> None:
    from ultralytics import YOLO

    image = frame()
    detector = load_detector(tiny_weights, imgsz=32, conf=0.001, device="cpu")
    assert detector.runtime == "torch"
    [result] = YOLO(str(tiny_weights)).predict(image, imgsz=32, conf=0.001, device="cpu", verbose=False)
    plain = Detections(
        xyxy=result.boxes.xyxy.numpy(), class_id=result.boxes.cls.numpy(), confidence=result.boxes.conf.numpy()
    )
    assert len(plain) > 0  # conf 0.001: an undertrained model still proposes boxes
    assert_same(sliced(detector, image, tile=max(image.shape)), plain)
    # the tiles' boxes do not depend on the batch they ran in (the merge after them is exact; with an undertrained
    # model's many equal scores, float noise in the coordinates can reorder ties and so change what it merges)
    crops = tile_crops(image, slice_bboxes(image.shape[1::-1], size=32, overlap=0.2))
    per_batch = [detector.predict(crops, batch=b) for b in (1, 4, 16)]
    for other in per_batch[1:]:
        for a, b in zip(per_batch[0], other):
            assert_same(a, b, atol=1e-4)
    for b in (1, 4, 16):
        det = sliced(detector, image, tile=32, overlap=0.2, batch=b, full_frame=True)
        assert len(det) > 0 and (det.xyxy >= 0).all() and (det.xyxy[:, 2] <= image.shape[1]).all()


# OpenVINO with a dynamic-shape model, loaded into the pytest process beside the augmentation tests' worker
# processes, made a later subprocess-starting test die with SIGSEGV (no Python traceback). Its case runs in a
# pytest process of its own (test_openvino_case_in_its_own_process), which this variable marks.
ISOLATED = "DRONEVISION_TEST_OPENVINO_ISOLATED"
ONNX_RUNTIMES = ["openvino"] if os.environ.get(ISOLATED) else ["ort-cpu"]


@pytest.mark.slow
def test_openvino_case_in_its_own_process() -> None:
    test = f"{Path(__file__).resolve()}::test_onnx_one_tile_is_plain_inference_and_matches_torch"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
        capture_output=True,
        text=True,
        env={**os.environ, ISOLATED: "1"},
    )
    assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout[-3000:] + result.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ONNX_RUNTIMES)
def test_onnx_one_tile_is_plain_inference_and_matches_torch(tiny_weights: Path, tiny_onnx: dict, runtime: str) -> None:
    image = frame(1)
    onnx = load_detector(tiny_onnx[True], runtime=runtime, conf=0.001, precision="f32")
    assert onnx.runtime == runtime and onnx.max_batch is None
    plain = onnx.predict([image])[0]
    assert len(plain) > 0
    assert_same(sliced(onnx, image, tile=max(image.shape)), plain)
    # our letterbox + NMS against ultralytics' on the same model: the same boxes up to float noise
    torch_plain = load_detector(tiny_weights, imgsz=32, conf=0.001, device="cpu").predict([image])[0]
    iou = pairwise_overlap(torch_plain.xyxy, plain.xyxy)
    same_class = torch_plain.class_id[:, None] == plain.class_id[None, :]
    assert ((iou > 0.99) & same_class).any(axis=1).mean() >= 0.95
    # batched tiles give what tiles one by one give, and so do batches run two at a time (OpenVINO's streams)
    tiled = [sliced(onnx, image, tile=32, overlap=0.2, batch=b, full_frame=True) for b in (1, 6)]
    assert_same(tiled[0], tiled[1], atol=1e-3)
    streams = load_detector(tiny_onnx[True], runtime=runtime, conf=0.001, precision="f32", streams=2, threads=2)
    assert streams.describe()["streams"] == (2 if runtime == "openvino" else 1)
    timings: dict[str, float] = {}
    crops = tile_crops(image, slice_bboxes(image.shape[1::-1], size=32, overlap=0.2))
    settings = SliceSettings(enabled=True, tile=32, overlap=0.2, batch=2, full_frame=True)
    assert len(crops) == 6  # three chunks of two: a wave of two in parallel, then one alone
    assert_same(sliced_predict(streams, image, settings, timings=timings), tiled[0], atol=1e-3)
    assert sorted(timings) == ["decode", "inference", "merge", "tiles"]


@pytest.mark.slow
def test_static_batch_onnx_runs_tiles_one_at_a_time(tiny_onnx: dict) -> None:
    image = frame(2, wh=(64, 64))  # square tiles: the static (square) and dynamic (rect) letterboxes agree
    static = load_detector(tiny_onnx[False], runtime="ort-cpu", conf=0.001)
    dynamic = load_detector(tiny_onnx[True], runtime="ort-cpu", conf=0.001)
    assert static.max_batch == 1
    a = sliced(static, image, tile=32, overlap=0.25, batch=8)
    b = sliced(dynamic, image, tile=32, overlap=0.25, batch=8)
    assert len(a) > 0
    assert_same(a, b, atol=1e-3)


@pytest.mark.slow
def test_prelabel_sliced_mode(tiny_weights: Path, tmp_path: Path) -> None:
    import cv2

    from dronevision.sample.prelabel import prelabel

    paths = []
    for i in range(2):
        paths.append(tmp_path / f"f{i}.png")
        cv2.imwrite(str(paths[-1]), frame(i, wh=(96, 64)))
    plain, names = prelabel(tiny_weights, paths, conf=0.001, imgsz=32, device="cpu")
    one_tile, _ = prelabel(
        tiny_weights, paths, conf=0.001, imgsz=32, device="cpu", slicing=SliceSettings(enabled=True, tile=4096)
    )
    for (_, wh, a), (_, wh_b, b) in zip(plain, one_tile):
        assert wh == wh_b
        assert_same(a, b, atol=1e-6)  # plain inference runs both frames as one batch, each tile alone
    sliced, names_b = prelabel(
        tiny_weights, paths, conf=0.001, imgsz=32, device="cpu", slicing=SliceSettings(enabled=True, tile=32, batch=4)
    )
    assert names_b == names and all(len(d) > 0 for _, _, d in sliced)
    for _, (w, h), det in sliced:
        assert (det.xyxy >= 0).all() and (det.xyxy[:, [2]] <= w).all() and (det.xyxy[:, [3]] <= h).all()
    disabled, _ = prelabel(
        tiny_weights, paths, conf=0.001, imgsz=32, device="cpu", slicing=SliceSettings(enabled=False)
    )
    assert [len(d) for _, _, d in disabled] == [len(d) for _, _, d in plain]
