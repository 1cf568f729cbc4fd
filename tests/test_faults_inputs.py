"""Issue 15, faults and hostile inputs: label files saved with a byte-order mark (item 5) and detection files made
elsewhere with impossible scores or categories (item 8)."""

from __future__ import annotations

import codecs
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from dronevision.dataset import command as build
from dronevision.dataset.coco import parse_coco
from dronevision.dataset.labelstudio import parse_label_studio
from dronevision.dataset.records import Issues
from dronevision.dataset.visdrone import read_visdrone_det, read_visdrone_vid
from dronevision.dataset.yolo import manifest_lines, read_yolo
from dronevision.errors import DroneVisionError
from dronevision.evaluate.command import run as evaluate
from dronevision.evaluate.ground_truth import load_dataset_ground_truth
from dronevision.evaluate.results_io import read_coco_results, read_predictions, read_visdrone_results
from dronevision.synth import write_visdrone_det_set

from .conftest import compose_config, make_yolo_dataset

pytestmark = pytest.mark.faults

POLICIES = ("raise", "skip")
NAMES = {0: "car", 1: "bus"}  # VisDrone categories 4 and 9


def add_bom(*paths: Path) -> None:
    """Put a UTF-8 byte-order mark in front of each file, as Windows Notepad and Excel save UTF-8."""
    for path in paths:
        path.write_bytes(codecs.BOM_UTF8 + path.read_bytes())


def visdrone_set(root: Path, *, n_images: int = 3, boxes: int = 4) -> Path:
    return write_visdrone_det_set(root, n_images=n_images, boxes_per_image=boxes, n_videos=1, resolution_wh=(96, 64))


def one_line_error(err: pytest.ExceptionInfo[DroneVisionError], start: str) -> str:
    message = str(err.value)
    assert message.startswith(start) and "\n" not in message, message
    return message


# --- item 5: byte-order marks -----------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", POLICIES)
def test_visdrone_det_annotations_with_bom_keep_every_box(tmp_path: Path, policy: str) -> None:
    src = visdrone_set(tmp_path / "vd")
    expected = {
        r.name: (r.xyxy.tolist(), r.labels, r.ignore_xyxy.tolist()) for r in read_visdrone_det(src, issues=Issues())
    }
    add_bom(*(src / "annotations").glob("*.txt"))
    issues = Issues(policy)
    got = {r.name: (r.xyxy.tolist(), r.labels, r.ignore_xyxy.tolist()) for r in read_visdrone_det(src, issues=issues)}
    assert got == expected and sum(len(v[0]) for v in got.values()) == 12
    assert not issues.counts and not issues.dropped


@pytest.mark.parametrize("policy", POLICIES)
def test_visdrone_vid_annotations_with_bom_keep_every_box(tmp_path: Path, policy: str) -> None:
    (tmp_path / "sequences" / "seq1").mkdir(parents=True)
    (tmp_path / "annotations").mkdir()
    for frame in (1, 2):
        (tmp_path / "sequences" / "seq1" / f"{frame:07d}.jpg").write_bytes(b"")  # the reader only lists frames
    lines = ["1,7,10,10,5,5,1,4,0,0", "1,8,20,20,6,6,1,9,0,0", "2,7,11,10,5,5,1,4,0,1"]
    (tmp_path / "annotations" / "seq1.txt").write_bytes(codecs.BOM_UTF8 + "\n".join(lines).encode())
    issues = Issues(policy)
    records = list(read_visdrone_vid(tmp_path, issues=issues))
    assert [r.labels for r in records] == [("car", "bus"), ("car",)]
    assert records[0].attrs["target_id"].tolist() == [7, 8] and not issues.counts


@pytest.mark.parametrize("policy", POLICIES)
def test_dataset_build_of_bom_annotations_skips_nothing(tmp_path: Path, policy: str) -> None:
    src = visdrone_set(tmp_path / "vd", n_images=4, boxes=5)
    add_bom(*(src / "annotations").glob("*.txt"))
    cfg = compose_config(
        "dataset_build", f"source.path={src}", f"out_dir={tmp_path / 'built'}", "workers=1", f"on_error={policy}"
    )
    summary = build.run(cfg)
    assert summary["skipped"] == {} and sum(summary["boxes"].values()) == 4 * 5


def yolo_folder(root: Path) -> Path:
    """A YOLO folder without data.yaml: images/, labels/ and classes.txt, every text file with a BOM."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for name in ("a", "b"):
        assert cv2.imwrite(str(root / "images" / f"{name}.jpg"), np.full((48, 64, 3), 90, np.uint8))
    (root / "labels" / "a.txt").write_text("0 0.5 0.5 0.25 0.25\n1 0.25 0.25 0.125 0.125\n")
    (root / "labels" / "b.txt").write_text("1 0.5 0.5 0.5 0.5\n")
    (root / "classes.txt").write_text("car\ntruck\n")
    add_bom(root / "classes.txt", *(root / "labels").glob("*.txt"))
    return root


@pytest.mark.parametrize("policy", POLICIES)
def test_yolo_labels_and_classes_with_bom_keep_every_box_and_name(tmp_path: Path, policy: str) -> None:
    issues = Issues(policy)
    records = {r.name: r for r in read_yolo(yolo_folder(tmp_path / "y"), issues=issues)}
    assert records["a"].labels == ("car", "truck") and records["b"].labels == ("truck",)
    assert records["a"].xyxy.tolist()[0] == [24.0, 18.0, 40.0, 30.0]
    assert not issues.counts


@pytest.mark.parametrize("policy", POLICIES)
def test_yolo_data_yaml_image_list_and_labels_with_bom(tmp_path: Path, policy: str) -> None:
    data_yaml = make_yolo_dataset(tmp_path / "y", n_train=3, n_val=2)
    root = data_yaml.parent
    (root / "train.txt").write_text("".join(f"{p.relative_to(root)}\n" for p in sorted(root.glob("train/images/*"))))
    data_yaml.write_text(data_yaml.read_text().replace("train: train/images", "train: train.txt"))
    labels = sorted(root.glob("*/labels/*.txt"))
    n_boxes = sum(len(p.read_text().split()) // 5 for p in labels)
    add_bom(data_yaml, root / "train.txt", *labels)
    issues = Issues(policy)
    records = list(read_yolo(data_yaml, issues=issues))
    assert len(records) == 5 and sum(len(r.xyxy) for r in records) == n_boxes and not issues.counts
    from dronevision.dataset import load_yolo_dataset

    assert len(manifest_lines(load_yolo_dataset(data_yaml))) == 10  # every label parsed on the way


def test_evaluate_ground_truth_reads_yolo_labels_with_bom(tmp_path: Path) -> None:
    data_yaml = make_yolo_dataset(tmp_path / "y", n_train=1, n_val=3)
    labels = sorted((data_yaml.parent / "val" / "labels").glob("*.txt"))
    n_boxes = sum(len(p.read_text().splitlines()) for p in labels)
    add_bom(*labels)
    items, names, _ = load_dataset_ground_truth(data_yaml, "val")
    assert names == {0: "vehicle"} and sum(len(it.gt) for it in items) == n_boxes


@pytest.mark.parametrize("policy", POLICIES)
def test_label_file_in_utf16_is_one_line_error(tmp_path: Path, policy: str) -> None:
    src = visdrone_set(tmp_path / "vd", n_images=1)
    [ann] = (src / "annotations").glob("*.txt")
    ann.write_bytes(ann.read_text().encode("utf-16"))  # Notepad's "Unicode"
    with pytest.raises(DroneVisionError) as err:
        list(read_visdrone_det(src, issues=Issues(policy)))
    assert "UTF-16" in one_line_error(err, f"{ann}: not UTF-8 text")


def test_coco_annotations_of_a_skipped_image_are_counted(tmp_path: Path) -> None:
    doc = {
        "images": [{"id": 1, "width": 64, "height": 48}, {"id": 2, "file_name": "b.jpg", "width": 64, "height": 48}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 5]},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [20, 20, 4, 4]},
            {"id": 3, "image_id": 2, "category_id": 1, "bbox": [0, 0, 8, 8]},
        ],
        "categories": [{"id": 1, "name": "car"}],
    }
    issues = Issues("skip", log_warnings=False)
    [record] = parse_coco(doc, root=tmp_path, issues=issues, where="x.json")
    assert record.name == "b" and len(record.xyxy) == 1
    assert issues.counts == {"bad_format": 1} and issues.dropped == {"annotation_of_skipped_image": 2}


def test_label_studio_regions_that_are_not_boxes_are_counted(tmp_path: Path) -> None:
    box = {
        "type": "rectanglelabels",
        "original_width": 200,
        "original_height": 100,
        "value": {"x": 10, "y": 20, "width": 25, "height": 50, "rectanglelabels": ["car"]},
    }
    polygon = {"type": "polygonlabels", "value": {"points": [[1, 1], [5, 1], [5, 5]], "polygonlabels": ["car"]}}
    task = {"id": 1, "data": {"image": "a.jpg"}, "annotations": [{"result": [box, polygon, polygon]}]}
    issues = Issues("skip")
    [record] = parse_label_studio([task], root=tmp_path, issues=issues, where="x.json")
    assert record.labels == ("car",) and issues.dropped == {"not_a_box:polygonlabels": 2}


def test_visdrone_result_files_with_bom_are_read(tmp_path: Path) -> None:
    # the placeholder line (category 0) and 'others' (11) stay allowed and unscored
    lines = ["1,2,3,4,0.9,4,-1,-1", "0,0,1,1,0,0,-1,-1", "1,2,3,4,1,11,-1,-1", "5,6,7,8,0,9,-1,-1"]
    (tmp_path / "a.txt").write_bytes(codecs.BOM_UTF8 + "\n".join(lines).encode())
    det = read_visdrone_results(tmp_path, NAMES)["a"]
    assert det.class_id.tolist() == [0, 1] and det.confidence.tolist() == [0.9, 0.0]
    assert det.xyxy.tolist()[0] == [1.0, 2.0, 4.0, 6.0]


def test_coco_results_json_with_bom_is_read(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    record = {"image_id": 0, "category_id": 2, "bbox": [1, 2, 3, 4], "score": 0.5}
    path.write_bytes(codecs.BOM_UTF8 + json.dumps([record]).encode())
    [det] = read_predictions(path, ["images/val/a.jpg"], NAMES)
    assert det.class_id.tolist() == [1] and det.confidence.tolist() == [0.5]


# --- item 8: detections made elsewhere ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("1,2,3,4,1.5,4,-1,-1", "score 1.5 is not a confidence in 0..1"),
        ("1,2,3,4,-0.1,4,-1,-1", "score -0.1 is not a confidence in 0..1"),
        ("1,2,3,4,nan,4,-1,-1", "not a finite number: score 'nan'"),
        ("1,2,3,4,0.5,57,-1,-1", "category 57 is not one of the dataset's [4, 9]"),
        ("1,2,3,4,0.5,3,-1,-1", "category 3 is not one of the dataset's [4, 9]"),  # bicycle: not a class here
    ],
)
def test_bad_visdrone_result_line_names_file_line_and_problem(tmp_path: Path, line: str, problem: str) -> None:
    (tmp_path / "a.txt").write_text(f"1,2,3,4,0.9,4,-1,-1\n{line}\n")
    with pytest.raises(DroneVisionError) as err:
        read_visdrone_results(tmp_path, NAMES)
    one_line_error(err, f"{tmp_path / 'a.txt'}:2: {problem}")


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"score": 1.5}, "score 1.5 is not a confidence in 0..1"),
        ({"score": -0.1}, "score -0.1 is not a confidence in 0..1"),
        ({"score": math.nan}, "score nan is not a confidence in 0..1"),  # json writes NaN, Python reads it
        ({"score": True}, "score True is not a confidence in 0..1"),
        ({"category_id": True}, "category_id True is not in [1, 2]"),
    ],
)
def test_bad_coco_result_names_file_record_and_problem(tmp_path: Path, change: dict, problem: str) -> None:
    good = {"image_id": 0, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}
    path = tmp_path / "results.json"
    path.write_text(json.dumps([good, {**good, **change}]))
    ground_truth = {"images": [{"id": 0, "file_name": "a.jpg"}], "categories": [{"id": 1}, {"id": 2}]}
    with pytest.raises(DroneVisionError) as err:
        read_coco_results(path, ground_truth)
    one_line_error(err, f"{path}: record 1: {problem}")


@pytest.mark.parametrize("fmt", ["visdrone", "coco"])
def test_evaluate_refuses_a_score_above_one_and_writes_nothing(tmp_path: Path, fmt: str) -> None:
    src = visdrone_set(tmp_path / "vd", n_images=2, boxes=3)
    stems = sorted(p.stem for p in (src / "images").glob("*.jpg"))
    if fmt == "visdrone":
        preds = tmp_path / "preds"
        preds.mkdir()
        for stem in stems:
            (preds / f"{stem}.txt").write_text("1,2,3,4,0.9,4,-1,-1\n1,2,3,4,1.5,4,-1,-1\n")
        start = f"{preds / stems[0]}.txt:2: score 1.5"
    else:
        preds = tmp_path / "preds.json"
        records = [{"image_id": f"{s}.jpg", "category_id": 4, "bbox": [1, 2, 3, 4], "score": 1.5} for s in stems]
        preds.write_text(json.dumps(records))
        start = f"{preds}: record 0: score 1.5"
    cfg = compose_config(
        "evaluate",
        f"predictions={preds}",
        f"dataset.path={src}",
        f"out_dir={tmp_path / 'out'}",
        f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
    )
    with pytest.raises(DroneVisionError) as err:
        evaluate(cfg)
    one_line_error(err, start)
    assert not (tmp_path / "out").exists()
