"""YOLO dataset loading, validation and fingerprinting."""

from __future__ import annotations

from pathlib import Path

import pytest

from dronevision.dataset import label_path, load_yolo_dataset, manifest_lines, manifest_sha256, parse_label_lines
from dronevision.errors import DroneVisionError

from .conftest import BUNDLED


def test_bundled_aerial_cars_is_one_class_with_all_splits() -> None:
    ds = load_yolo_dataset(BUNDLED)
    assert ds.names == {0: "vehicle"}
    assert ds.counts() == {"train": 321, "val": 31, "test": 15}
    assert all(label_path(p).is_file() for p in ds.splits["val"])


def test_load_accepts_folder_or_yaml_and_resolves_relative_to_the_yaml(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # paths in the yaml are relative to the yaml, not to the working folder
    by_dir, by_yaml = load_yolo_dataset(tiny_dataset.parent), load_yolo_dataset(tiny_dataset)
    assert by_dir == by_yaml
    assert by_dir.counts() == {"train": 8, "val": 4}
    assert all(p.is_file() for p in by_dir.splits["train"])


def test_roboflow_style_parent_paths_are_resolved(tiny_dataset: Path) -> None:
    tiny_dataset.write_text("train: ../train/images\nval: ../val/images\nnames: ['vehicle']\n")
    assert load_yolo_dataset(tiny_dataset).counts() == {"train": 8, "val": 4}


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("train: train/images\nval: val/images\n", "no 'names'"),
        ("train: train/images\nval: val/images\nnames: []\n", "'names' must be a non-empty"),
        ("train: train/images\nnames: [a]\n", "no 'val' split"),
        ("train: train/images\nval: nowhere/images\nnames: [a]\n", "val path 'nowhere/images' does not exist"),
        ("train: [train/images\n", "not valid YAML"),
        ("names: {0: a, 2: b}\ntrain: train/images\nval: val/images\n", "class ids in 'names' must be 0..1"),
    ],
)
def test_bad_data_yaml_is_one_clear_error_naming_the_file(tiny_dataset: Path, yaml_text: str, message: str) -> None:
    tiny_dataset.write_text(yaml_text)
    with pytest.raises(DroneVisionError, match=message) as err:
        load_yolo_dataset(tiny_dataset)
    assert str(tiny_dataset) in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_dataset_path_and_folder_without_yaml(tmp_path: Path) -> None:
    with pytest.raises(DroneVisionError, match="does not exist"):
        load_yolo_dataset(tmp_path / "nope")
    with pytest.raises(DroneVisionError, match="no data.yaml in this folder"):
        load_yolo_dataset(tmp_path)


def test_empty_split_is_refused(tiny_dataset: Path) -> None:
    for image in (tiny_dataset.parent / "val" / "images").iterdir():
        image.unlink()
    with pytest.raises(DroneVisionError, match="the val split 'val/images' holds no images"):
        load_yolo_dataset(tiny_dataset)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("0 0.5 0.5 0.1", "expected 'class cx cy w h', got 4 fields"),
        ("x 0.5 0.5 0.1 0.1", "not numbers"),
        ("1 0.5 0.5 0.1 0.1", "class id 1 is not in names"),
        ("0 50 50 10 10", "coordinates must be normalised to 0..1"),
    ],
)
def test_bad_label_line_names_file_and_line(line: str, message: str) -> None:
    with pytest.raises(DroneVisionError, match=f"^l.txt:2: {message}"):
        parse_label_lines(["0 0.5 0.5 0.2 0.2", line], n_classes=1, source=Path("l.txt"))


def test_empty_label_file_means_no_boxes() -> None:
    assert parse_label_lines([], n_classes=1, source=Path("l.txt")) == []


def test_manifest_catches_bad_labels_and_tracks_every_change(tiny_dataset: Path) -> None:
    ds = load_yolo_dataset(tiny_dataset)
    before = manifest_sha256(manifest_lines(ds))
    assert before == manifest_sha256(manifest_lines(load_yolo_dataset(tiny_dataset)))  # deterministic
    label = label_path(ds.splits["val"][0])
    label.write_text(label.read_text() + "0 0.5 0.5 0.1 0.1\n")
    assert manifest_sha256(manifest_lines(ds)) != before
    label.unlink()  # an image without labels is still listed, as '-'
    lines = manifest_lines(ds)
    assert any(line.endswith("\t-") for line in lines)
    label.write_text("0 0.5 0.5\n")
    with pytest.raises(DroneVisionError, match=f"{label}:1: expected"):
        manifest_lines(ds)
