"""COCO JSON and Pascal VOC XML readers: tables of good and bad input, round trips, and fuzzing of the parsers."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dronevision.dataset.coco import parse_coco, read_coco
from dronevision.dataset.records import Issues, SourceImage
from dronevision.dataset.voc import BNDBOX, parse_voc_xml, read_voc
from dronevision.errors import DroneVisionError

ROOT = Path("/data/ds")


def check_records(records: list[SourceImage]) -> None:
    """What every parser promises: finite boxes with x2 >= x1 and y2 >= y1, one label per box."""
    for record in records:
        assert isinstance(record, SourceImage)
        for boxes in (record.xyxy, record.ignore_xyxy):
            assert boxes.ndim == 2 and boxes.shape[1] == 4
            assert np.isfinite(boxes).all()
            assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
        assert len(record.labels) == len(record.xyxy) and all(isinstance(x, str) and x for x in record.labels)
        assert record.image.is_relative_to(ROOT)
        assert record.name and "\n" not in record.where


# ---------------------------------------------------------------------------------------------------------- COCO


def coco_doc() -> dict[str, Any]:
    """Three images (the last without annotations), three boxes, one crowd region, two classes."""
    return {
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
            {"id": 2, "file_name": "sub/b.jpg", "width": 64, "height": 48},
            {"id": 3, "file_name": "c.jpg", "width": 64, "height": 48},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 5], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [20.5, 20, 4, 4]},
            {"id": 3, "image_id": 2, "category_id": 1, "bbox": [0, 0, 64, 48], "iscrowd": 0},
            {"id": 4, "image_id": 2, "category_id": 1, "bbox": [30, 30, 10, 10], "iscrowd": 1},
        ],
        "categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "truck"}],
    }


def parse(doc: Any, policy: str = "raise") -> tuple[list[SourceImage], Issues]:
    issues = Issues(policy)
    return parse_coco(doc, root=ROOT, issues=issues, where="x.json"), issues


def test_coco_good_document() -> None:
    (a, b, c), _ = parse(coco_doc())
    assert a.image == ROOT / "a.jpg" and b.image == ROOT / "sub" / "b.jpg"
    assert (a.name, b.name, c.name) == ("a", "b", "c")
    assert a.xyxy.tolist() == [[1, 2, 11, 7], [20.5, 20, 24.5, 24]] and a.labels == ("car", "truck")
    assert b.xyxy.tolist() == [[0, 0, 64, 48]] and b.ignore_xyxy.tolist() == [[30, 30, 40, 40]]
    assert c.xyxy.shape == (0, 4) and c.labels == () and c.ignore_xyxy.shape == (0, 4)
    assert a.resolution_wh == (64, 48) and a.group == "" and a.split is None
    assert b.where == "x.json: images[1] (id=2)"


def _set(section: str, index: int, **fields: Any) -> Callable[[dict[str, Any]], None]:
    return lambda doc: doc[section][index].update(fields)


def _drop(section: str, index: int, key: str) -> Callable[[dict[str, Any]], None]:
    return lambda doc: doc[section][index].pop(key)


def _append(section: str, item: Any) -> Callable[[dict[str, Any]], None]:
    return lambda doc: doc[section].append(item)


def _string_ids(doc: dict[str, Any]) -> None:
    for image in doc["images"]:
        image["id"] = str(image["id"])
    for annotation in doc["annotations"]:
        annotation["image_id"] = str(annotation["image_id"])


A_XYXY, A_LABELS = [[1, 2, 11, 7], [20.5, 20, 24.5, 24]], ("car", "truck")


@pytest.mark.parametrize(
    ("mutate", "image", "xyxy", "labels", "resolution_wh"),
    [
        (lambda d: d.pop("annotations"), 0, [], (), (64, 48)),
        (_drop("images", 0, "width"), 0, A_XYXY, A_LABELS, None),
        (_set("images", 0, width=0, height=0), 0, A_XYXY, A_LABELS, None),
        (_set("images", 0, width=64.0, height=48.0), 0, A_XYXY, A_LABELS, (64, 48)),
        (_set("annotations", 0, bbox=[5, 5, 0, 0]), 0, [[5, 5, 5, 5], A_XYXY[1]], A_LABELS, (64, 48)),
        (_set("annotations", 2, bbox=[-10, 40, 100, 20]), 1, [[-10, 40, 90, 60]], ("car",), (64, 48)),
        (_string_ids, 1, [[0, 0, 64, 48]], ("car",), (64, 48)),
        (_set("annotations", 2, iscrowd=1), 1, [], (), (64, 48)),
        (_append("images", {"id": 9, "file_name": "./d.png"}), 3, [], (), None),
    ],
    ids=[
        "no-annotations-key",
        "no-resolution",
        "zero-size-means-unknown",
        "whole-float-size",
        "zero-area-box-is-left-to-the-build",
        "box-beyond-image-is-left-to-the-build",
        "string-ids",
        "only-crowd-regions",
        "dot-slash-file-name",
    ],
)
def test_coco_good_inputs(
    mutate: Callable[[dict[str, Any]], Any], image: int, xyxy: list, labels: tuple, resolution_wh: Any
) -> None:
    doc = coco_doc()
    mutate(doc)
    records, issues = parse(doc, "skip")
    assert not issues.counts
    assert records[image].xyxy.reshape(-1).tolist() == np.asarray(xyxy, dtype=float).reshape(-1).tolist()
    assert records[image].labels == labels and records[image].resolution_wh == resolution_wh
    check_records(records)


@pytest.mark.parametrize(
    ("mutate", "kind", "where", "n_images", "n_boxes"),
    [
        (_set("annotations", 0, bbox=[1, 2, 3]), "bad_format", "annotations[0] (id=1)", 3, 2),
        (_set("annotations", 0, bbox="1,2,3,4"), "bad_format", "annotations[0] (id=1)", 3, 2),
        (_drop("annotations", 1, "category_id"), "bad_format", "annotations[1] (id=2)", 3, 2),
        (_set("annotations", 0, image_id=[1]), "bad_format", "annotations[0] (id=1)", 3, 2),
        (_set("annotations", 0, iscrowd=2), "bad_format", "annotations[0] (id=1)", 3, 2),
        (_set("annotations", 0, bbox=[1, "x", 3, 4]), "non_numeric", "annotations[0] (id=1)", 3, 2),
        (_set("annotations", 0, bbox=[1, 2, float("nan"), 4]), "non_numeric", "annotations[0] (id=1)", 3, 2),
        (_set("annotations", 0, bbox=[1, 2, True, 4]), "non_numeric", "annotations[0] (id=1)", 3, 2),
        (_set("annotations", 0, bbox=[1e308, 2, 1e308, 4]), "non_numeric", "annotations[0] (id=1)", 3, 2),
        (_set("annotations", 0, bbox=[1, 2, -3, 4]), "negative_size", "annotations[0] (id=1)", 3, 2),
        (_set("annotations", 1, category_id=7), "unknown_class", "annotations[1] (id=2)", 3, 2),
        (_set("annotations", 2, image_id=99), "label_without_image", "annotations[2] (id=3)", 3, 2),
        (lambda d: d["annotations"].append("oops"), "bad_format", "annotations[4]", 3, 3),
        (_drop("images", 0, "file_name"), "bad_format", "images[0] (id=1)", 2, 1),
        (_set("images", 0, file_name="a\nb.jpg"), "bad_format", "images[0] (id=1)", 2, 1),
        (_set("images", 2, id=None), "bad_format", "images[2]", 2, 3),
        (_set("images", 1, width="64"), "non_numeric", "images[1] (id=2)", 2, 2),
        (_set("images", 1, height=-48), "negative_size", "images[1] (id=2)", 2, 2),
        (_set("images", 1, width=63.5), "bad_format", "images[1] (id=2)", 2, 2),
        (_set("images", 0, file_name="../a.jpg"), "path_escape", "images[0] (id=1)", 2, 1),
        (_set("images", 0, file_name="/etc/a.jpg"), "path_escape", "images[0] (id=1)", 2, 1),
        (_set("images", 0, file_name="C:\\data\\a.jpg"), "path_escape", "images[0] (id=1)", 2, 1),
        (_append("images", {"id": 2, "file_name": "dup.jpg"}), "duplicate_image_id", "images[3] (id=2)", 3, 3),
        (_append("categories", {"id": 5}), "bad_format", "categories[2] (id=5)", 3, 3),
        (_append("categories", {"id": 1, "name": "again"}), "bad_format", "categories[2] (id=1)", 3, 3),
    ],
)
def test_coco_bad_record_raises_or_is_skipped(
    mutate: Callable[[dict[str, Any]], Any], kind: str, where: str, n_images: int, n_boxes: int
) -> None:
    doc = coco_doc()
    mutate(doc)
    with pytest.raises(DroneVisionError) as err:
        parse(copy.deepcopy(doc), "raise")
    message = str(err.value)
    assert message.startswith(f"x.json: {where}: ") and "\n" not in message
    records, issues = parse(doc, "skip")
    assert issues.counts == {kind: 1}
    assert len(records) == n_images and sum(len(r.xyxy) for r in records) == n_boxes
    check_records(records)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([1, 2], "expected a JSON object with 'images', got list"),
        ({"annotations": []}, "'images' must be a list, got nothing"),
        ({"images": {}}, "'images' must be a list, got dict"),
        ({"images": [], "annotations": None}, "'annotations' must be a list, got NoneType"),
        ({"images": [], "categories": "car"}, "'categories' must be a list, got str"),
    ],
)
def test_coco_unreadable_document_raises_whatever_the_policy(doc: Any, message: str) -> None:
    for policy in ("raise", "skip"):
        with pytest.raises(DroneVisionError, match=f"^x.json: {message}"):
            parse(doc, policy)


def write_jpeg(path: Path, width: int, height: int) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((height, width, 3), 90, dtype=np.uint8))


def test_coco_round_trip_with_real_images(tmp_path: Path) -> None:
    import cv2

    root = tmp_path / "coco"
    rng = np.random.default_rng(0)
    doc: dict[str, Any] = {"images": [], "annotations": [], "categories": [{"id": 3, "name": "car"}]}
    expected = {}
    for i in range(4):
        w, h = 40 + 8 * i, 32 + 4 * i
        name = f"img_{i}.jpg"
        write_jpeg(root / "images" / name, w, h)
        doc["images"].append({"id": 100 + i, "file_name": name, "width": w, "height": h})
        boxes = []
        for _ in range(i):  # img_0 has no boxes
            x, y = (float(v) for v in rng.integers(0, 20, 2))
            bw, bh = (float(v) for v in rng.integers(1, 12, 2))
            doc["annotations"].append(
                {"id": len(doc["annotations"]), "image_id": 100 + i, "category_id": 3, "bbox": [x, y, bw, bh]}
            )
            boxes.append([x, y, x + bw, y + bh])
        expected[f"img_{i}"] = boxes
    (root / "annotations").mkdir()
    json_path = root / "annotations" / "instances.json"
    json_path.write_text(json.dumps(doc, indent=2))

    records = read_coco(json_path, issues=Issues("raise"))  # images/ beside annotations/ is found
    assert [r.name for r in records] == ["img_0", "img_1", "img_2", "img_3"]
    for record in records:
        assert record.image.is_file() and record.image.parent == root / "images"
        height, width = cv2.imread(str(record.image)).shape[:2]
        assert record.resolution_wh == (width, height)
        assert record.xyxy.tolist() == expected[record.name] and set(record.labels) <= {"car"}
    same = read_coco(json_path, issues=Issues(), images_dir=root / "images")
    assert [r.image for r in same] == [r.image for r in records]

    (root / "images" / "img_2.jpg").unlink()
    with pytest.raises(DroneVisionError, match=r"images\[2\] \(id=102\): image file .*img_2.jpg does not exist"):
        read_coco(json_path, issues=Issues("raise"))
    issues = Issues("skip")
    assert [r.name for r in read_coco(json_path, issues=issues)] == ["img_0", "img_1", "img_3"]
    assert issues.counts == {"missing_image": 1}


def test_coco_image_root_defaults_to_the_json_folder(tmp_path: Path) -> None:
    write_jpeg(tmp_path / "annotations" / "a.jpg", 8, 8)  # no images/ sibling: names are relative to the JSON
    doc = {"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [], "categories": []}
    (tmp_path / "annotations" / "x.json").write_text(json.dumps(doc))
    [record] = read_coco(tmp_path / "annotations" / "x.json", issues=Issues())
    assert record.image == tmp_path / "annotations" / "a.jpg" and record.resolution_wh is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"images": [\n  {"id": 1,}\n]}', r":2: not valid JSON \(Expecting property name"),
        ("", r":1: not valid JSON \(Expecting value\)"),
        ("[" * 100_000, "not valid JSON"),
    ],
)
def test_coco_json_syntax_error_raises_whatever_the_policy(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    for policy in ("raise", "skip"):
        with pytest.raises(DroneVisionError, match=message) as err:
            read_coco(path, issues=Issues(policy))
        assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)
    with pytest.raises(DroneVisionError, match="does not exist"):
        read_coco(tmp_path / "nope.json", issues=Issues())


# ----------------------------------------------------------------------------------------------------------- VOC


def voc_object(name: str = "car", box: tuple = (11, 6, 30, 15), difficult: str = "0", truncated: str = "0") -> str:
    coords = "".join(f"<{t}>{v}</{t}>" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
    return (
        f"<object><name>{name}</name><pose>Unspecified</pose><truncated>{truncated}</truncated>"
        f"<difficult>{difficult}</difficult><bndbox>{coords}</bndbox></object>"
    )


def voc_xml(filename: str = "a.jpg", size: str = "<width>64</width><height>48</height>", objects: Any = None) -> str:
    objects = [voc_object(), voc_object("truck", (1, 1, 64, 48), truncated="1")] if objects is None else objects
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<annotation>\n  <folder>VOC2007</folder>\n'
        f"  <filename>{filename}</filename>\n  <size>{size}<depth>3</depth></size>\n"
        + "".join(f"  {o}\n" for o in objects)
        + "</annotation>\n"
    )


def parse_voc(text: str | bytes, policy: str = "raise") -> tuple[SourceImage | None, Issues]:
    issues = Issues(policy)
    return parse_voc_xml(text, root=ROOT, issues=issues, where="a.xml"), issues


DEFAULT = ([[10, 5, 30, 15], [0, 0, 64, 48]], ("car", "truck"), [0, 1])  # xyxy, labels, truncation of voc_xml()
ONE_PIXEL = "<object><name> car </name><bndbox>" + "".join(f"<{t}>1</{t}>" for t in BNDBOX) + "</bndbox></object>"


@pytest.mark.parametrize(
    ("text", "xyxy", "labels", "truncation", "ignore", "resolution_wh"),
    [
        (voc_xml(), *DEFAULT, [], (64, 48)),
        (voc_xml(objects=[]), [], (), [], [], (64, 48)),
        (voc_xml(objects=[voc_object(difficult="1")]), [], (), [], [[10, 5, 30, 15]], (64, 48)),
        (voc_xml(objects=[voc_object(box=(" 11.0 ", 6, "30.5", 6))]), [[10, 5, 30.5, 6]], ("car",), [0], [], (64, 48)),
        (voc_xml(objects=[ONE_PIXEL]), [[0, 0, 1, 1]], ("car",), [0], [], (64, 48)),
        (voc_xml(size="<width>0</width><height>0</height>"), *DEFAULT, [], None),
        (voc_xml().replace("<size>", "<sizeless>").replace("</size>", "</sizeless>"), *DEFAULT, [], None),
        (voc_xml().encode("utf-8"), *DEFAULT, [], (64, 48)),
        (voc_xml(filename="ä.jpg").replace("utf-8", "latin-1").encode("latin-1"), *DEFAULT, [], (64, 48)),
    ],
    ids=["two", "none", "difficult", "floats", "one-pixel", "zero-size", "no-size", "bytes", "latin-1"],
)
def test_voc_good_inputs(
    text: str | bytes, xyxy: list, labels: tuple, truncation: list, ignore: list, resolution_wh: Any
) -> None:
    record, issues = parse_voc(text, "skip")
    assert record is not None and not issues.counts
    assert record.xyxy.reshape(-1).tolist() == np.asarray(xyxy, dtype=float).reshape(-1).tolist()
    assert record.ignore_xyxy.reshape(-1).tolist() == np.asarray(ignore, dtype=float).reshape(-1).tolist()
    assert record.labels == labels and record.attrs["truncation"].tolist() == truncation
    assert record.resolution_wh == resolution_wh and record.where == "a.xml" and record.image.parent == ROOT
    check_records([record])


@pytest.mark.parametrize(
    ("text", "kind", "where", "n_boxes"),
    [  # n_boxes: what the skip policy keeps, None when the whole file is skipped
        (voc_xml().replace("<filename>a.jpg</filename>", ""), "bad_format", "a.xml", None),
        (voc_xml(filename="  "), "bad_format", "a.xml", None),
        (voc_xml().replace("annotation>", "annotations>"), "bad_format", "a.xml", None),
        (voc_xml(size="<width>64</width>"), "bad_format", "a.xml", None),
        (voc_xml(size="<width>64.5</width><height>48</height>"), "bad_format", "a.xml", None),
        (voc_xml(size="<width>sixty</width><height>48</height>"), "non_numeric", "a.xml", None),
        (voc_xml(size="<width>64</width><height>-48</height>"), "negative_size", "a.xml", None),
        (voc_xml(filename="../a.jpg"), "path_escape", "a.xml", None),
        (voc_xml(filename="/tmp/a.jpg"), "path_escape", "a.xml", None),
        (voc_xml(objects=[voc_object(), voc_object(name="")]), "bad_format", "a.xml: object[1]", 1),
        (voc_xml(objects=["<object><name>car</name></object>", voc_object()]), "bad_format", "a.xml: object[0]", 1),
        (voc_xml(objects=[voc_object(box=(1, 2, 3))]), "bad_format", "a.xml: object[0]", 0),
        (voc_xml(objects=[voc_object(difficult="2")]), "bad_format", "a.xml: object[0]", 0),
        (voc_xml(objects=[voc_object(box=("abc", 2, 3, 4))]), "non_numeric", "a.xml: object[0]", 0),
        (voc_xml(objects=[voc_object(box=(1, 2, "nan", 4))]), "non_numeric", "a.xml: object[0]", 0),
        (voc_xml(objects=[voc_object(box=(1, 2, 3, "1e999"))]), "non_numeric", "a.xml: object[0]", 0),
        (voc_xml(objects=[voc_object(truncated="yes")]), "non_numeric", "a.xml: object[0]", 0),
        (voc_xml(objects=[voc_object(box=(10, 2, 3, 4)), voc_object()]), "negative_size", "a.xml: object[0]", 1),
        (voc_xml(objects=[voc_object(box=(1, 20, 3, 4))]), "negative_size", "a.xml: object[0]", 0),
    ],
)
def test_voc_bad_record_raises_or_is_skipped(text: str, kind: str, where: str, n_boxes: int | None) -> None:
    with pytest.raises(DroneVisionError) as err:
        parse_voc(text, "raise")
    message = str(err.value)
    assert message.startswith(f"{where}: ") and "\n" not in message
    record, issues = parse_voc(text, "skip")
    assert issues.counts == {kind: 1}
    assert (None if record is None else len(record.xyxy)) == n_boxes
    if record is not None:
        check_records([record])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<annotation><filename>a.jpg</filename>", r"^a.xml:1: not valid XML \(no element found\)$"),
        ("<annotation>\n<filename>a&b.jpg</filename></annotation>", r"^a.xml:2: not valid XML \(not well-formed"),
        ("", r"^a.xml:1: not valid XML"),
        (b'<?xml version="1.0" encoding="no-such"?><annotation/>', r"^a.xml: not valid XML \(unknown encoding"),
    ],
)
def test_voc_bad_xml_raises_whatever_the_policy(text: str | bytes, message: str) -> None:
    for policy in ("raise", "skip"):
        with pytest.raises(DroneVisionError, match=message):
            parse_voc(text, policy)


def make_voc_folder(root: Path) -> None:
    """``b.xml`` and ``a.xml`` with their images, and ``c.jpg`` without an annotation."""
    for stem, w, h in (("b", 40, 30), ("a", 64, 48)):
        write_jpeg(root / "JPEGImages" / f"{stem}.jpg", w, h)
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        size = f"<width>{w}</width><height>{h}</height>"
        (root / "Annotations" / f"{stem}.xml").write_text(voc_xml(filename=f"{stem}.jpg", size=size))
    write_jpeg(root / "JPEGImages" / "c.jpg", 8, 8)
    (root / "JPEGImages" / "notes.txt").write_text("not an image")


def test_voc_round_trip_and_folder_checks(tmp_path: Path) -> None:
    root = tmp_path / "VOC2007"
    make_voc_folder(root)
    with pytest.raises(DroneVisionError, match=r"c.jpg: no annotation file .*Annotations/c.xml$"):
        read_voc(root, issues=Issues("raise"))
    issues = Issues("skip")
    records = read_voc(root, issues=issues)
    assert issues.counts == {"image_without_label": 1}
    assert [r.name for r in records] == ["a", "b"]  # sorted by annotation file name
    assert [r.resolution_wh for r in records] == [(64, 48), (40, 30)]
    assert records[0].image == root / "JPEGImages" / "a.jpg" and records[0].where == str(root / "Annotations/a.xml")
    assert records[0].xyxy.tolist() == [[10, 5, 30, 15], [0, 0, 64, 48]]

    (root / "JPEGImages" / "c.jpg").unlink()
    (root / "JPEGImages" / "b.jpg").rename(tmp_path / "b.jpg")
    with pytest.raises(DroneVisionError, match=r"b.xml: image file .*b.jpg does not exist"):
        read_voc(root, issues=Issues("raise"))
    issues = Issues("skip")
    assert [r.name for r in read_voc(root, issues=issues)] == ["a"] and issues.counts == {"missing_image": 1}
    issues = Issues("skip")
    assert [r.name for r in read_voc(root, issues=issues, images_dir=tmp_path)] == ["b"]
    assert issues.counts == {"missing_image": 1}  # a.jpg is not in tmp_path

    with pytest.raises(DroneVisionError, match="no Annotations folder"):
        read_voc(tmp_path, issues=Issues())
    with pytest.raises(DroneVisionError, match="image folder does not exist"):
        read_voc(root, issues=Issues(), images_dir=tmp_path / "nope")


# ------------------------------------------------------------------------------------------------- fuzzing both

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**308, max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.sampled_from(["../x.jpg", "/abs.jpg", "a.jpg", ".", "", "C:\\x.jpg"])
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
COCO_KEYS = {
    "images": ["id", "file_name", "width", "height", "extra"],
    "annotations": ["id", "image_id", "category_id", "bbox", "iscrowd"],
    "categories": ["id", "name"],
}
NUMBER = st.integers(-5, 100) | st.floats(allow_nan=True, allow_infinity=True) | JSON_SCALARS


@st.composite
def mutated_coco(draw: st.DrawFn) -> Any:
    """The good document with a few fields replaced, deleted, or whole records and sections swapped for junk."""
    doc = coco_doc()
    for _ in range(draw(st.integers(1, 5))):
        section = draw(st.sampled_from(sorted(COCO_KEYS)))
        action = draw(st.sampled_from(["field", "field", "bbox", "delete", "record", "section", "append"]))
        items = doc.get(section)
        if action == "section":
            doc[section] = draw(JSON_VALUES)
        elif not isinstance(items, list):
            continue
        elif action == "append":
            items.append(copy.deepcopy(draw(st.sampled_from(coco_doc()[section]))))
        elif items:
            index = draw(st.integers(0, len(items) - 1))
            item = items[index]
            if action == "record":
                items[index] = draw(JSON_VALUES)
            elif not isinstance(item, dict):
                continue
            elif action == "delete":
                item.pop(draw(st.sampled_from(COCO_KEYS[section])), None)
            elif action == "bbox":
                item["bbox"] = draw(st.lists(NUMBER, min_size=3, max_size=5))
            else:
                item[draw(st.sampled_from(COCO_KEYS[section]))] = draw(NUMBER | JSON_VALUES)
    return doc


ODD_TEXT = st.sampled_from(["2", "-3", "2.5", "nan", "-inf", "1e400", "", " 7 ", "../x.jpg", "/a.jpg", "a&amp;b"])
MODES = ["good", "odd", "text", "raw", "drop"]
GOOD_TEXT = {"filename": "a.jpg", "name": "car", "difficult": "0", "truncated": "1", "width": "64", "height": "48"}


@st.composite
def mutated_voc(draw: st.DrawFn) -> str | bytes:
    """VOC XML whose elements are mostly sensible, sometimes odd, missing, unescaped junk; or cut, or pure junk."""
    kind = draw(st.sampled_from(["built"] * 6 + ["cut", "junk", "bytes"]))
    if kind == "junk":
        return draw(st.text(max_size=40))
    if kind == "bytes":
        return draw(st.binary(max_size=40))
    modes = draw(st.sampled_from([["good"], ["good"] * 12 + ["odd", "drop"], ["good"] * 4 + MODES, MODES]))

    def element(tag: str, inner: str | None = None) -> str:
        mode = draw(st.sampled_from(modes))
        if mode == "drop":
            return ""
        if inner is None:
            good = GOOD_TEXT.get(tag) or str(draw(st.integers(0, 40) if "min" in tag else st.integers(30, 90)))
            inner = {
                "good": lambda: good,
                "odd": lambda: draw(ODD_TEXT),
                "text": lambda: escape(draw(st.text(max_size=6))),
                "raw": lambda: draw(st.text(max_size=6)),
            }[mode]()
        return f"<{tag}>{inner}</{tag}>"

    objects = []
    for _ in range(draw(st.integers(0, 3))):
        box = "".join(element(t) for t in ("xmin", "ymin", "xmax", "ymax"))
        fields = element("name") + element("difficult") + element("truncated") + element("bndbox", box)
        objects.append(f"<object>{fields}</object>")
    size = element("size", element("width") + element("height"))
    text = f"<annotation><folder>VOC</folder>{element('filename')}{size}{''.join(objects)}</annotation>"
    if kind == "cut":
        i, j = sorted(draw(st.lists(st.integers(0, len(text)), min_size=2, max_size=2)))
        text = text[:i] + text[j:]
    return text


def agree(parse_one: Callable[[Issues], list[SourceImage]]) -> None:
    """Under both policies the parser returns valid records or raises DroneVisionError, and the two agree: the
    ``raise`` policy raises exactly when ``skip`` counts an issue (or raises too, for an unreadable document)."""
    try:
        strict: list[SourceImage] | None = parse_one(Issues("raise"))
    except DroneVisionError as e:
        assert "\n" not in str(e)
        strict = None
    issues = Issues("skip")
    try:
        lenient = parse_one(issues)
    except DroneVisionError:
        assert strict is None
        return
    check_records(lenient)
    if strict is None:
        assert sum(issues.counts.values()) >= 1
    else:
        assert not issues.counts and len(strict) == len(lenient)
        check_records(strict)


@settings(max_examples=100, deadline=None)
@given(doc=mutated_coco() | JSON_VALUES)
def test_parse_coco_returns_valid_records_or_raises_drone_vision_error(doc: Any) -> None:
    agree(lambda issues: parse_coco(copy.deepcopy(doc), root=ROOT, issues=issues, where="x.json"))


@settings(max_examples=100, deadline=None)
@given(text=mutated_voc())
def test_parse_voc_xml_returns_valid_records_or_raises_drone_vision_error(text: str | bytes) -> None:
    def parse_one(issues: Issues) -> list[SourceImage]:
        record = parse_voc_xml(text, root=ROOT, issues=issues, where="a.xml")
        return [] if record is None else [record]

    agree(parse_one)
