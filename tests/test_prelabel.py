"""Pre-labelling: lossless round trips through CVAT, Label Studio and YOLO files, a real model, and the Label Studio
reader's bad-task table and fuzzing."""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dronevision.dataset.cvat import cvat_images_xml, parse_cvat_images, read_cvat, write_cvat_images
from dronevision.dataset.labelstudio import label_studio_task, parse_label_studio, read_label_studio, write_label_studio
from dronevision.dataset.records import ImageBoxes as Item
from dronevision.dataset.records import Issues, SourceImage
from dronevision.dataset.yolo import image_size, read_yolo, write_yolo, yolo_label_lines
from dronevision.errors import DroneVisionError
from dronevision.evaluate import yolo_to_xyxy
from dronevision.sample.prelabel import prelabel
from dronevision.schema import Detections

NAMES = {0: "car", 3: "truck", 5: "excavator"}  # sparse ids: YOLO files renumber them 0..2
SIZES = {"a.jpg": (64, 48), "flight 2/b+c.jpg": (97, 61), "flight 2/empty.png": (40, 40), "d.jpeg": (33, 70)}
ROOT = Path("/ls")


def random_detections(rng: np.random.Generator, wh: tuple[int, int], n: int) -> Detections:
    """``n`` boxes with non-round coordinates inside the image (one touching the border), random classes."""
    w, h = wh
    x = np.sort(rng.uniform(0, w, (n, 2)), axis=1)
    y = np.sort(rng.uniform(0, h, (n, 2)), axis=1)
    xyxy = np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], axis=1)
    if n:
        xyxy[0] = (0.0, rng.uniform(0, h / 2), float(w), float(h))
    class_id = rng.choice(sorted(NAMES), n)
    return Detections(xyxy=xyxy, class_id=class_id, confidence=rng.uniform(0.05, 1.0, n))


def make_items(root: Path, *, seed: int) -> list[Item]:
    """Real small images under ``root`` (one in a folder with a space, one without boxes) with random boxes."""
    import cv2

    rng = np.random.default_rng(seed)
    items = []
    for name, (w, h) in SIZES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(path), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        n = 0 if "empty" in name else int(rng.integers(2, 7))
        items.append((path, (w, h), random_detections(rng, (w, h), n)))
    return items


def by_name(records: list[SourceImage]) -> dict[str, SourceImage]:
    names = [r.name for r in records]
    assert len(set(names)) == len(names)
    return dict(zip(names, records))


def assert_same_boxes(record: SourceImage, det: Detections, *, atol: float) -> None:
    assert record.labels == tuple(NAMES[c] for c in det.class_id.tolist())
    if atol == 0:
        assert np.array_equal(record.xyxy, det.xyxy), (record.xyxy, det.xyxy)
    else:
        np.testing.assert_allclose(record.xyxy, det.xyxy, rtol=0, atol=atol)


# --- lossless round trips, on disk -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cvat_round_trip_is_exact(tmp_path: Path, seed: int) -> None:
    images = tmp_path / "images"
    items = make_items(images, seed=seed)
    xml = write_cvat_images(tmp_path / "out" / "annotations.xml", items, NAMES, image_root=images)
    records = by_name(read_cvat(xml, issues=Issues(), images_dir=images))
    assert len(records) == len(items)
    for path, wh, det in items:
        record = records[path.stem]
        assert record.image == images / path.relative_to(images)
        assert record.resolution_wh == wh
        assert_same_boxes(record, det, atol=0)
    assert records["empty"].xyxy.shape == (0, 4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_label_studio_round_trip(tmp_path: Path, seed: int) -> None:
    images = tmp_path / "images"
    items = make_items(images, seed=seed)
    path = write_label_studio(tmp_path / "tasks.json", items, NAMES, image_root=images)
    tasks = json.loads(path.read_text())
    assert tasks[1]["data"]["image"] == "/data/local-files/?d=flight%202/b%2Bc.jpg"
    assert tasks[2]["predictions"][0]["result"] == [] and tasks[2]["predictions"][0]["score"] == 0.0
    records = by_name(read_label_studio(path, issues=Issues(), images_dir=images))
    assert len(records) == len(items)
    for image, wh, det in items:
        record = records[image.stem]
        assert record.image == image
        assert record.resolution_wh == (wh if len(det) else None)  # only regions state the size
        assert_same_boxes(record, det, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_yolo_round_trip(tmp_path: Path, seed: int) -> None:
    items = make_items(tmp_path / "images-in", seed=seed)
    out = write_yolo(tmp_path / "yolo", items, NAMES)
    assert (out / "classes.txt").read_text() == "car\ntruck\nexcavator\n"
    assert (out / "labels" / "empty.txt").read_text() == ""
    records = by_name(list(read_yolo(out, issues=Issues())))
    assert len(records) == len(items)
    for image, wh, det in items:
        record = records[image.stem]
        assert os.path.samefile(record.image, image)  # hard-linked
        assert record.resolution_wh == wh
        assert_same_boxes(record, det, atol=1e-6)


def test_yolo_merges_classes_that_share_a_name_and_refuses_same_stems(tmp_path: Path) -> None:
    items = make_items(tmp_path / "in", seed=3)
    merged = {0: "vehicle", 3: "vehicle", 5: "excavator"}
    out = write_yolo(tmp_path / "yolo", items, merged)
    assert (out / "classes.txt").read_text() == "vehicle\nexcavator\n"
    records = by_name(list(read_yolo(out, issues=Issues())))
    for image, _, det in items:
        assert records[image.stem].labels == tuple(merged[c] for c in det.class_id.tolist())
    twin = (tmp_path / "in" / "a.png", (8, 8), Detections.empty())
    with pytest.raises(DroneVisionError, match="a second image named 'a'"):
        write_yolo(tmp_path / "yolo2", [*items, twin], NAMES)


@pytest.mark.parametrize(
    ("names", "det", "message"),
    [
        ({0: "car"}, Detections(xyxy=[[1, 1, 2, 2]], class_id=[3]), r"class ids \[3\] are not in names"),
        ({0: "car"}, Detections(xyxy=[[1, 1, np.nan, 2]], class_id=[0]), "not finite"),
        ({0: "car"}, Detections(xyxy=[[3, 1, 2, 2]], class_id=[0]), "x2 < x1"),
        ({0: " car"}, Detections.empty(), "surrounding spaces"),
        ({0: "car\x00"}, Detections.empty(), "control characters"),
    ],
)
def test_writers_refuse_what_cannot_be_read_back(tmp_path: Path, names: dict, det: Detections, message: str) -> None:
    items = [(tmp_path / "a.jpg", (10, 10), det)]
    for write in (
        lambda: write_cvat_images(tmp_path / "a.xml", items, names, image_root=tmp_path),
        lambda: write_label_studio(tmp_path / "a.json", items, names, image_root=tmp_path),
        lambda: write_yolo(tmp_path / "yolo", items, names),
    ):
        with pytest.raises(DroneVisionError, match=message):
            write()


def test_images_outside_image_root_are_refused(tmp_path: Path) -> None:
    items = [(tmp_path / "elsewhere" / "a.jpg", (10, 10), Detections.empty())]
    with pytest.raises(DroneVisionError, match="not inside image_root"):
        write_cvat_images(tmp_path / "a.xml", items, NAMES, image_root=tmp_path / "images")
    with pytest.raises(DroneVisionError, match="not inside image_root"):
        write_label_studio(tmp_path / "a.json", items, NAMES, image_root=tmp_path / "images")


def test_image_size_follows_exif_orientation_like_opencv(tmp_path: Path) -> None:
    import cv2
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    Image.fromarray(np.zeros((20, 40, 3), np.uint8)).save(tmp_path / "r.jpg", exif=exif.tobytes())
    h, w = cv2.imread(str(tmp_path / "r.jpg")).shape[:2]
    assert image_size(tmp_path / "r.jpg") == (w, h) == (20, 40)


# --- lossless round trips of the pure writers, fuzzed ----------------------------------------------------------


@st.composite
def boxes(draw: st.DrawFn) -> tuple[tuple[int, int], Detections]:
    w, h = draw(st.integers(1, 10_000)), draw(st.integers(1, 10_000))
    rows = []
    for _ in range(draw(st.integers(0, 5))):
        x = sorted(draw(st.floats(0, w, allow_subnormal=False)) for _ in range(2))
        y = sorted(draw(st.floats(0, h, allow_subnormal=False)) for _ in range(2))
        rows.append((x[0], y[0], x[1], y[1]))
    class_id = draw(st.lists(st.sampled_from(sorted(NAMES)), min_size=len(rows), max_size=len(rows)))
    return (w, h), Detections(xyxy=np.asarray(rows, dtype=np.float64).reshape(-1, 4), class_id=class_id)


@settings(max_examples=100, deadline=None)
@given(boxes())
def test_pure_writers_round_trip(case: tuple[tuple[int, int], Detections]) -> None:
    wh, det = case
    xml = cvat_images_xml([("a.jpg", wh, det)], NAMES)
    from xml.etree import ElementTree as ET

    [cvat] = parse_cvat_images(ET.tostring(xml, encoding="unicode"), root=ROOT, issues=Issues(), where="x.xml")
    assert_same_boxes(cvat, det, atol=0)
    task = label_studio_task("/data/local-files/?d=a.jpg", wh, det, NAMES, model_version="t")
    [ls] = parse_label_studio([json.loads(json.dumps(task))], root=ROOT, issues=Issues(), where="x.json")
    assert_same_boxes(ls, det, atol=1e-6)
    index = {0: 0, 3: 1, 5: 2}
    rows = [[float(v) for v in line.split()] for line in yolo_label_lines(det, wh, index)]
    back = yolo_to_xyxy(rows, wh)
    np.testing.assert_allclose(back.xyxy, det.xyxy, rtol=0, atol=1e-6)
    assert back.class_id.tolist() == [index[c] for c in det.class_id.tolist()]


# --- a real (untrained) model ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_prelabel_with_a_real_model(tiny_weights: Path, tmp_path: Path) -> None:
    images = make_items(tmp_path / "images", seed=4)[:2]
    paths = [p for p, _, _ in images]
    items, names = prelabel(tiny_weights, paths, conf=0.0, imgsz=32, device="cpu")
    assert names == {0: "vehicle"}
    assert [p for p, _, _ in items] == paths
    assert sum(len(d) for _, _, d in items) > 0  # conf=0: an untrained model still proposes boxes
    for (_, wh, det), (_, true_wh, _) in zip(items, images):
        assert wh == true_wh
        assert det.confidence is not None and len(det.confidence) == len(det)
        assert set(det.class_id.tolist()) <= set(names)
        assert np.isfinite(det.xyxy).all()
        assert (det.xyxy[:, :2] >= 0).all() and (det.xyxy[:, 2:] <= np.asarray(wh) + 1e-3).all()
        assert (det.xyxy[:, 2:] >= det.xyxy[:, :2]).all()
    # the model's output goes through a writer and back
    path = write_label_studio(tmp_path / "tasks.json", items, names, image_root=tmp_path / "images")
    back = read_label_studio(path, issues=Issues(), images_dir=tmp_path / "images")
    assert [len(r.xyxy) for r in back] == [len(d) for _, _, d in items]

    renamed, names = prelabel(tiny_weights, paths, conf=0.0, imgsz=32, device="cpu", class_map={0: "car"})
    assert names == {0: "car"} and [len(d) for _, _, d in renamed] == [len(d) for _, _, d in items]
    with pytest.raises(DroneVisionError, match=r"class_map ids \[4\] are not classes"):
        prelabel(tiny_weights, paths, class_map={4: "truck"})


def test_prelabel_refuses_missing_weights(tmp_path: Path) -> None:
    with pytest.raises(DroneVisionError) as e:
        prelabel(tmp_path / "nope.pt", [tmp_path / "a.jpg"])
    assert str(e.value) == f"{tmp_path / 'nope.pt'}: weights file does not exist"
    assert "\n" not in str(e.value)


# --- the Label Studio reader -----------------------------------------------------------------------------------


def region(x=10.0, y=20.0, width=25.0, height=50.0, label="car", **extra) -> dict:
    value = {"x": x, "y": y, "width": width, "height": height, "rotation": 0, "rectanglelabels": [label]}
    value.update(extra.pop("value", {}))
    result = {
        "id": "r1",
        "type": "rectanglelabels",
        "from_name": "label",
        "to_name": "image",
        "original_width": 200,
        "original_height": 100,
        "image_rotation": 0,
        "value": value,
    }
    result.update(extra)
    return result


def task(*results: dict, image: str = "/data/local-files/?d=f1/a.jpg", **extra) -> dict:
    return {
        "id": 1,
        "data": {"image": image},
        "predictions": [{"model_version": "m", "result": list(results)}],
        **extra,
    }


CAR = [[20.0, 20.0, 70.0, 70.0]]

GOOD = [
    pytest.param(task(region()), "f1/a.jpg", ("car",), CAR, id="prediction"),
    pytest.param(
        task(region(), annotations=[{"result": [region(label="truck", x=0)]}]),
        "f1/a.jpg",
        ("truck",),
        [[0.0, 20.0, 50.0, 70.0]],
        id="annotation-beats-prediction",
    ),
    pytest.param(
        task(region(), annotations=[{"was_cancelled": True, "result": []}, {"result": [region(label="bus")]}]),
        "f1/a.jpg",
        ("bus",),
        CAR,
        id="cancelled-annotation-skipped",
    ),
    pytest.param(
        task(region(), annotations=[{"was_cancelled": True, "result": []}]),
        "f1/a.jpg",
        ("car",),
        CAR,
        id="only-cancelled-falls-back-to-prediction",
    ),
    pytest.param(task(region(), annotations=[{"result": []}]), "f1/a.jpg", (), [], id="reviewed-empty"),
    pytest.param({"data": {"image": "b.jpg"}}, "b.jpg", (), [], id="no-annotations-no-predictions"),
    pytest.param(
        task(region(), {"type": "choices", "value": {"choices": ["day"]}}), "f1/a.jpg", ("car",), CAR, id="choices"
    ),
    pytest.param(task(region(value={"rotation": 360})), "f1/a.jpg", ("car",), CAR, id="rotation-360"),
    pytest.param(task(image="http://ls:8080/data/upload/3/ab-c.jpg"), "3/ab-c.jpg", (), [], id="upload-url"),
    pytest.param(task(image="/data/local-files/?d=a%20b%2Bc.jpg"), "a b+c.jpg", (), [], id="quoted"),
]


@pytest.mark.parametrize(("data", "relative", "labels", "xyxy"), GOOD)
def test_parse_label_studio_good_tasks(data: dict, relative: str, labels: tuple, xyxy: list) -> None:
    [record] = parse_label_studio([data], root=ROOT, issues=Issues(), where="x.json")
    assert record.image == ROOT / relative and record.name == Path(relative).stem and record.group == ""
    assert record.labels == labels and record.xyxy.tolist() == xyxy


BAD = [
    pytest.param(["not a task"], "bad_format", "expected a task object", id="not-an-object"),
    pytest.param({"data": {}}, "bad_format", "'data.image' must be a non-empty string", id="no-image"),
    pytest.param({"data": "a.jpg"}, "bad_format", "'data' must be an object", id="data-not-object"),
    pytest.param(task(image="https://x.org/a.jpg"), "bad_format", "is not a local file", id="remote-url"),
    pytest.param(task(image="/data/local-files/?d=a%0A.jpg"), "bad_format", "is not a file name", id="newline"),
    pytest.param(task(region(value={"rotation": 30})), "bad_format", "'rotation' is 30", id="rotated"),
    pytest.param(task(region(image_rotation=90)), "bad_format", "'image_rotation' is 90", id="image-rotated"),
    pytest.param(task(region(x="10")), "non_numeric", "not a finite number", id="string-x"),
    pytest.param(task(region(y=math.nan)), "non_numeric", "not a finite number", id="nan"),
    pytest.param(task(region(width=True)), "non_numeric", "not a finite number", id="bool"),
    pytest.param(task(region(x=1e308, width=1e308)), "non_numeric", "overflow", id="overflow"),
    pytest.param(task(region(height=-1)), "negative_size", "negative width or height", id="negative-height"),
    pytest.param(task(region(original_width=-200)), "negative_size", "'original_width' is negative", id="neg-w"),
    pytest.param(task(region(original_height=0)), "bad_format", "positive whole number", id="zero-h"),
    pytest.param(task(region(original_width=200.5)), "bad_format", "positive whole number", id="fractional-w"),
    pytest.param(task(region(original_width="200")), "non_numeric", "'original_width' is not a number", id="str-w"),
    pytest.param(
        task({k: v for k, v in region().items() if k != "original_height"}),
        "bad_format",
        "no 'original_height'",
        id="no-size",
    ),
    pytest.param(task(region(value={"rectanglelabels": ["car", "bus"]})), "bad_format", "exactly one", id="2-labels"),
    pytest.param(task(region(value={"rectanglelabels": []})), "bad_format", "exactly one", id="no-label"),
    pytest.param(task(region(value={"x": None})), "non_numeric", "not a finite number", id="null-x"),
    pytest.param(task(region(), region(original_width=100)), "bad_format", "differs from", id="two-sizes"),
    pytest.param(task(annotations={"result": []}), "bad_format", "'annotations' must be a list", id="ann-not-list"),
    pytest.param(task(annotations=[{"result": None}]), "bad_format", "result must be a list", id="result-not-list"),
    pytest.param(task(annotations=[3]), "bad_format", "annotations[0] must be an object", id="ann-not-object"),
    pytest.param({"data": {"image": "a.jpg"}, "predictions": [1]}, "bad_format", "predictions[0]", id="bad-pred"),
    pytest.param(task(image="/data/local-files/?d=../etc/a.jpg"), "path_escape", "escapes", id="dotdot"),
    pytest.param(task(image="/data/local-files/?d=/etc/a.jpg"), "path_escape", "escapes", id="absolute"),
]


@pytest.mark.parametrize(("data", "kind", "message"), BAD)
def test_parse_label_studio_bad_task_raises_one_line(data: dict | list, kind: str, message: str) -> None:
    bad = data[0] if isinstance(data, list) else data
    with pytest.raises(DroneVisionError) as e:
        parse_label_studio([bad], root=ROOT, issues=Issues("raise"), where="x.json")
    text = str(e.value)
    assert "\n" not in text and text.startswith("x.json: task[0]") and message in text


@pytest.mark.parametrize(("data", "kind", "message"), BAD)
def test_parse_label_studio_bad_task_is_skipped_and_counted(data: dict | list, kind: str, message: str) -> None:
    bad = data[0] if isinstance(data, list) else data
    good = task(region(), image="/data/local-files/?d=good.jpg")
    issues = Issues("skip", log_warnings=False)
    records = parse_label_studio([copy.deepcopy(bad), good], root=ROOT, issues=issues, where="x.json")
    assert [r.name for r in records] == ["good"]
    assert dict(issues.counts) == {kind: 1}


def test_parse_label_studio_needs_a_list() -> None:
    with pytest.raises(DroneVisionError, match="expected a JSON list of Label Studio tasks, got dict .a single task"):
        parse_label_studio(task(), root=ROOT, issues=Issues("skip"), where="x.json")  # type: ignore[arg-type]


def test_read_label_studio_reports_bad_json_and_missing_images(tmp_path: Path) -> None:
    path = tmp_path / "export.json"
    path.write_text('[\n  {"data": {"image": "a.jpg"}},\n  oops\n]\n')
    with pytest.raises(DroneVisionError, match=r"export.json:3: not valid JSON"):
        read_label_studio(path, issues=Issues())
    path.write_text(json.dumps([{"data": {"image": "a.jpg"}}, {"data": {"image": "b.jpg"}}]))
    (tmp_path / "b.jpg").write_bytes(b"")
    issues = Issues("skip", log_warnings=False)
    assert [r.name for r in read_label_studio(path, issues=issues)] == ["b"]
    assert dict(issues.counts) == {"missing_image": 1}
    with pytest.raises(DroneVisionError, match="does not exist"):
        read_label_studio(tmp_path / "nope.json", issues=Issues())


def test_label_studio_round_trip_with_another_url_prefix(tmp_path: Path) -> None:
    items = make_items(tmp_path / "images", seed=5)
    prefix = "http://files.local/drone/"
    path = write_label_studio(tmp_path / "t.json", items, NAMES, image_root=tmp_path / "images", url_prefix=prefix)
    assert json.loads(path.read_text())[1]["data"]["image"] == prefix + "flight%202/b%2Bc.jpg"
    records = read_label_studio(path, issues=Issues(), images_dir=tmp_path / "images", url_prefix=prefix)
    assert [r.image for r in records] == [p for p, _, _ in items]
    for record, (_, _, det) in zip(records, items):
        assert_same_boxes(record, det, atol=1e-6)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
NUMBER = st.one_of(st.integers(-(10**20), 10**20), st.floats(), st.sampled_from([0, 1, 100, 640, 1e308, -0.0]), JSON)
URL = st.sampled_from(["/data/local-files/?d=a.jpg", "a/b.png", "../x.jpg", "/abs.jpg", "s3://b/a.jpg", ""]) | JSON
GOOD_REGION = st.fixed_dictionaries(  # valid regions, so that records with boxes come out too
    {
        "type": st.just("rectanglelabels"),
        "value": st.fixed_dictionaries(
            {
                "x": st.floats(-5, 105),
                "y": st.floats(-5, 105),
                "width": st.floats(0, 100),
                "height": st.floats(0, 100),
                "rectanglelabels": st.sampled_from([["car"], ["truck"]]),
            },
            optional={"rotation": st.sampled_from([0, 0.0, 360])},
        ),
        "original_width": st.just(640),
        "original_height": st.sampled_from([480, 480.0]),
    }
)
FUZZED_REGION = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["rectanglelabels", "choices"]) | JSON,
        "value": st.fixed_dictionaries(
            {k: NUMBER for k in ("x", "y", "width", "height")}
            | {"rectanglelabels": st.lists(st.sampled_from(["car", "", " "]) | JSON, max_size=2) | JSON},
            optional={"rotation": NUMBER},
        )
        | JSON,
        "original_width": NUMBER,
        "original_height": NUMBER,
    },
    optional={"image_rotation": NUMBER},
)
RESULT = st.lists(GOOD_REGION | GOOD_REGION | FUZZED_REGION | JSON, max_size=3) | JSON
GOOD_RESULT = st.lists(GOOD_REGION | GOOD_REGION | FUZZED_REGION, max_size=3)
GOOD_TASK = st.fixed_dictionaries(  # the shape of an export, with mostly valid regions
    {
        "id": st.integers(1, 99),
        "data": st.fixed_dictionaries({"image": st.sampled_from(["/data/local-files/?d=a.jpg", "f/b.png"])}),
        "predictions": st.lists(st.fixed_dictionaries({"result": GOOD_RESULT}), min_size=1, max_size=2),
    },
    optional={
        "annotations": st.lists(
            st.fixed_dictionaries({"result": GOOD_RESULT}, optional={"was_cancelled": st.booleans()}), max_size=2
        )
    },
)
FUZZED_TASK = st.fixed_dictionaries(
    {"data": st.fixed_dictionaries({"image": URL}) | JSON},
    optional={
        "id": JSON,
        "annotations": st.lists(
            st.fixed_dictionaries({"result": RESULT}, optional={"was_cancelled": JSON}) | JSON, max_size=2
        )
        | JSON,
        "predictions": st.lists(st.fixed_dictionaries({"result": RESULT}) | JSON, max_size=2) | JSON,
    },
)
TASK = GOOD_TASK | FUZZED_TASK | JSON


def assert_valid(records: list[SourceImage]) -> None:
    for r in records:
        assert isinstance(r, SourceImage) and r.image.is_relative_to(ROOT) and r.name
        assert np.isfinite(r.xyxy).all()
        assert (r.xyxy[:, 2] >= r.xyxy[:, 0]).all() and (r.xyxy[:, 3] >= r.xyxy[:, 1]).all()
        assert all(isinstance(label, str) and label.strip() for label in r.labels)
        assert r.resolution_wh is None or all(isinstance(v, int) and v > 0 for v in r.resolution_wh)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(TASK, max_size=4) | JSON)
def test_parse_label_studio_returns_valid_records_or_raises_one_line(data: object) -> None:
    try:
        records = parse_label_studio(data, root=ROOT, issues=Issues("raise"), where="x.json")  # type: ignore[arg-type]
    except DroneVisionError as e:
        assert "\n" not in str(e)
    else:
        assert_valid(records)
    issues = Issues("skip", log_warnings=False)
    if isinstance(data, list):
        records = parse_label_studio(data, root=ROOT, issues=issues, where="x.json")
        assert_valid(records)
        assert len(records) + sum(issues.counts.values()) == len(data)
