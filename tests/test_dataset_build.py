"""The dataset stage: VisDrone DET/VID and YOLO sources, taxonomy, grouped splits, tiling, atomic output."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import DictConfig

from dronevision.dataset import command as build
from dronevision.dataset import load_yolo_dataset, parse_label_lines
from dronevision.dataset.command import Taxonomy, assign_splits, group_of, plan_items
from dronevision.dataset.records import Issues, SourceImage
from dronevision.dataset.visdrone import parse_visdrone_lines
from dronevision.errors import DroneVisionError
from dronevision.infer import clip_boxes, slice_bboxes
from dronevision.synth import write_visdrone_det_set

from .conftest import VISDRONE_MINI, compose_config, make_yolo_dataset

# Counted by hand from the three annotation files (column 6, category 0 or score 0 excluded): 252 objects.
VISDRONE_MINI_COUNTS = {
    "pedestrian": 24,
    "people": 68,
    "bicycle": 6,
    "car": 33,
    "van": 3,
    "truck": 1,
    "tricycle": 5,
    "awning-tricycle": 19,
    "motor": 93,
}


@pytest.fixture
def compose_build(tmp_path: Path) -> Callable[..., DictConfig]:
    def _compose(*overrides: str) -> DictConfig:
        return compose_config("dataset_build", f"out_dir={tmp_path / 'built'}", "workers=1", *overrides)

    return _compose


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _copy_visdrone(tmp_path: Path) -> Path:
    return Path(shutil.copytree(VISDRONE_MINI, tmp_path / "visdrone"))


# --- golden: the real VisDrone fixture -----------------------------------------------------------------------------


def test_visdrone_golden_counts_masked_ignored_regions_and_linked_images(compose_build, tmp_path: Path) -> None:
    summary = build.run(
        compose_build(f"source.path={VISDRONE_MINI}", "split.group_pattern=null", "split.val_fraction=0.34")
    )
    out = tmp_path / "built"
    manifest = json.loads((out / "manifest.json").read_text())
    total = {}
    for counts in manifest["class_counts"].values():
        for name, n in counts.items():
            total[name] = total.get(name, 0) + n
    assert total == VISDRONE_MINI_COUNTS
    assert summary["class_counts"] == manifest["class_counts"]
    assert manifest["ignored_regions"] == 4
    # every file is listed with its hash; images are linked byte for byte unless masked
    for rel, digest in manifest["files"].items():
        assert _sha(out / rel) == digest
    for entry in manifest["entries"]:
        assert set(entry["sha256"]) == {entry["file"], "labels" + entry["file"][6:-4] + ".txt"}
        for rel, digest in entry["sha256"].items():
            assert _sha(out / rel) == digest
    masked = {e["file"] for e in manifest["entries"] if e["ignored"]}
    for entry in manifest["entries"]:
        same = _sha(out / entry["file"]) == _sha(Path(entry["source_image"]))
        assert same == (entry["file"] not in masked)
    # ignored regions are filled with the source image's mean colour
    entry = next(e for e in manifest["entries"] if e["ignored"])
    source = cv2.imread(entry["source_image"]).astype(float)
    written = cv2.imread(str(out / entry["file"])).astype(float)
    x1, y1, x2, y2 = (int(round(v)) for v in entry["ignored"][0])
    region = written[y1 + 1 : y2 - 1, x1 + 1 : x2 - 1].reshape(-1, 3)
    assert np.abs(region.mean(axis=0) - source.reshape(-1, 3).mean(axis=0)).max() < 4
    assert region.std(axis=0).max() < 4
    # truncation/occlusion kept per box; the COCO JSON agrees with the labels
    assert all(len(e["attrs"]["occlusion"]) == len(e["boxes"]) for e in manifest["entries"])
    coco = json.loads((out / "annotations" / "instances_val.json").read_text())
    assert len(coco["annotations"]) == summary["boxes"]["val"]
    assert (out / "samples.png").stat().st_size > 0
    assert load_yolo_dataset(out).counts() == {"train": 2, "val": 1}


def test_vehicles_taxonomy_maps_visdrone_and_counts_the_unmapped(compose_build) -> None:
    summary = build.run(compose_build(f"source.path={VISDRONE_MINI}", "taxonomy=vehicles", "split.val_fraction=0"))
    assert summary["classes"] == ["car", "van", "truck", "bus", "motor", "bicycle", "tricycle"]
    assert summary["class_counts"]["train"]["tricycle"] == 5 + 19  # awning-tricycle -> tricycle
    assert summary["dropped"]["unmapped:pedestrian"] == 24 and summary["dropped"]["unmapped:people"] == 68


def test_on_unmapped_error_names_the_file(compose_build) -> None:
    with pytest.raises(DroneVisionError, match=r"0000001_\d+_d_\d+\.txt: class 'people' is not in taxonomy 'vehicles'"):
        build.run(compose_build(f"source.path={VISDRONE_MINI}", "taxonomy=vehicles", "taxonomy.on_unmapped=error"))


def test_occlusion_filter_and_others_dropped_and_counted(compose_build, tmp_path: Path) -> None:
    src = _copy_visdrone(tmp_path)
    ann = next((src / "annotations").glob("*.txt"))
    ann.write_text(ann.read_text() + "1,1,5,5,1,11,0,0\n")
    occluded = sum(
        1
        for line in ann.read_text().splitlines()
        if line.split(",")[7] == "2" and line.split(",")[5] not in ("0", "11") and line.split(",")[4] != "0"
    )
    summary = build.run(
        compose_build(
            f"source.path={src}", "filter.max_occlusion=1", "split.val_fraction=0", "split.group_pattern=null"
        )
    )
    assert summary["dropped"]["visdrone_others"] == 1
    heavy = sum(
        1
        for f in (src / "annotations").glob("*.txt")
        for line in f.read_text().splitlines()
        if line.split(",")[7] == "2" and line.split(",")[5] not in ("0", "11") and line.split(",")[4] != "0"
    )
    assert summary["dropped"]["filter_occlusion"] == heavy >= occluded > 0


# --- splits ---------------------------------------------------------------------------------------------------------


def test_no_group_in_two_splits_and_builds_are_byte_identical(compose_build, tmp_path: Path) -> None:
    src = write_visdrone_det_set(tmp_path / "gen", n_images=60, boxes_per_image=5, n_videos=12, resolution_wh=(96, 64))
    overrides = [f"source.path={src}", "split.val_fraction=0.25", "split.test_fraction=0.15", "split.seed=3"]
    first = build.run(compose_build(*overrides))
    manifest = json.loads((tmp_path / "built" / "manifest.json").read_text())
    groups = manifest["groups"]
    assert set(groups) == {"train", "val", "test"}
    for a in groups:
        for b in groups:
            assert a == b or not set(groups[a]) & set(groups[b]), "a video in two splits"
    for entry in manifest["entries"]:
        assert entry["group"] == Path(entry["file"]).name.split("_")[0]
    again = build.run(compose_build(*overrides, "overwrite=true"))
    assert again["manifest_sha256"] == first["manifest_sha256"]
    other = build.run(compose_build(*overrides[:-1], "split.seed=4", "overwrite=true"))
    assert other["manifest_sha256"] != first["manifest_sha256"]


@pytest.mark.parametrize(
    ("sizes", "val", "test"),
    [({"a": 10}, 0.2, 0.0), ({"a": 1, "b": 1}, 0.5, 0.0), ({f"g{i}": i + 1 for i in range(20)}, 0.2, 0.1)],
)
def test_assign_splits_keeps_groups_whole_and_train_non_empty(sizes: dict, val: float, test: float) -> None:
    out = assign_splits(sizes, val_fraction=val, test_fraction=test, seed=0)
    assert set(out) == set(sizes)
    assert "train" in out.values()
    if len(sizes) > 1:
        assert "val" in out.values()
    assert out == assign_splits(sizes, val_fraction=val, test_fraction=test, seed=0)


def test_group_pattern_named_group() -> None:
    assert group_of("flightA-0001", r"(?P<group>flight\w)-") == "flightA"


# --- bad input --------------------------------------------------------------------------------------------------


BAD_VISDRONE_LINES = [
    ("1,2,3", "wrong_field_count", "expected 8 comma-separated fields, got 3"),
    ("1,2,x,4,1,4,0,0", "non_numeric", "not numbers"),
    ("1,2,nan,4,1,4,0,0", "non_numeric", "not finite numbers"),
    ("1,2,-3,4,1,4,0,0", "negative_size", "negative width or height"),
    ("1,2,3,4,1,12,0,0", "unknown_class", "category 12 is not a VisDrone category"),
]


@pytest.mark.parametrize(("line", "kind", "message"), BAD_VISDRONE_LINES)
def test_bad_visdrone_line_raises_with_file_and_line_or_is_counted(line: str, kind: str, message: str) -> None:
    lines = ["10,10,5,5,1,4,0,0", "", line]
    with pytest.raises(DroneVisionError, match=f"^a.txt:3: {message}"):
        parse_visdrone_lines(lines, source=Path("a.txt"), issues=Issues("raise"))
    issues = Issues("skip")
    parsed = parse_visdrone_lines(lines, source=Path("a.txt"), issues=issues)
    assert issues.counts == {kind: 1}
    assert len(parsed[0].xyxy) == 1  # the good line survives


def _break(src: Path, how: str) -> str:
    """Damage a copy of the VisDrone fixture; returns the problem kind to expect."""
    images, anns = sorted((src / "images").iterdir()), sorted((src / "annotations").iterdir())
    if how == "outside":
        anns[0].write_text(anns[0].read_text() + "5000,5000,10,10,1,4,0,0\n")
        return "box_outside_image"
    if how == "label_without_image":
        images[0].unlink()
        return "label_without_image"
    if how == "image_without_label":
        anns[0].unlink()
        return "image_without_label"
    if how == "truncated":
        images[0].write_bytes(images[0].read_bytes()[:2000])
        return "unreadable_image"
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["outside", "label_without_image", "image_without_label", "truncated"])
def test_bad_source_raises_one_line_or_is_counted_and_nothing_half_written(
    compose_build, tmp_path: Path, how: str
) -> None:
    src = _copy_visdrone(tmp_path)
    kind = _break(src, how)
    with pytest.raises(DroneVisionError) as err:
        build.run(compose_build(f"source.path={src}"))
    assert "\n" not in str(err.value) and str(src) in str(err.value)
    assert not (tmp_path / "built").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".built")], "temporary folder left behind"
    summary = build.run(compose_build(f"source.path={src}", "on_error=skip", "split.val_fraction=0"))
    assert summary["skipped"] == {kind: 1}


def test_duplicate_names_across_sources_are_refused(compose_build, tmp_path: Path) -> None:
    a, b = _copy_visdrone(tmp_path), Path(shutil.copytree(VISDRONE_MINI, tmp_path / "other"))
    sources = f"sources=[{{format: visdrone, path: {a}}}, {{format: visdrone, path: {b}}}]"
    with pytest.raises(DroneVisionError, match="file name '0000001_02999_d_0000005' also comes from"):
        build.run(compose_build(sources))


def test_existing_out_dir_is_refused_unless_overwrite(compose_build, tmp_path: Path) -> None:
    (tmp_path / "built").mkdir()
    (tmp_path / "built" / "keep.txt").write_text("x")
    with pytest.raises(DroneVisionError, match="already exists"):
        build.run(compose_build(f"source.path={VISDRONE_MINI}"))
    assert (tmp_path / "built" / "keep.txt").exists()
    build.run(compose_build(f"source.path={VISDRONE_MINI}", "overwrite=true", "split.val_fraction=0"))
    assert not (tmp_path / "built" / "keep.txt").exists() and (tmp_path / "built" / "manifest.json").exists()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(st.text(alphabet="0123456789,.-enaix \t", max_size=40), max_size=6),
    video=st.booleans(),
    policy=st.sampled_from(["raise", "skip"]),
)
def test_visdrone_parser_returns_valid_boxes_or_our_error(lines: list[str], video: bool, policy: str) -> None:
    try:
        parsed = parse_visdrone_lines(lines, source=Path("p.txt"), issues=Issues(policy), video=video)
    except DroneVisionError:
        return
    for boxes in parsed.values():
        arr = np.asarray(boxes.xyxy).reshape(-1, 4)
        assert np.isfinite(arr).all() and (arr[:, 2] >= arr[:, 0]).all() and (arr[:, 3] >= arr[:, 1]).all()
        assert len(boxes.labels) == len(arr) == len(boxes.occlusion)


_good_line = st.tuples(
    st.integers(0, 500),
    st.integers(0, 500),
    st.integers(0, 80),
    st.integers(0, 80),
    st.sampled_from([0, 1]),
    st.integers(0, 11),
    st.integers(0, 2),
    st.integers(0, 2),
)


@settings(max_examples=100, deadline=None)
@given(rows=st.lists(_good_line, max_size=8), video=st.booleans(), keep_others=st.booleans())
def test_fast_and_line_by_line_visdrone_parsers_agree(rows: list, video: bool, keep_others: bool) -> None:
    lines = [",".join(map(str, ((i % 3 + 1, i) if video else ()) + r)) for i, r in enumerate(rows)]
    clean_issues, mixed_issues = Issues("skip"), Issues("skip")
    clean = parse_visdrone_lines(lines, source=Path("a"), issues=clean_issues, video=video, keep_others=keep_others)
    # one bad line sends the whole file through the line-by-line parser; the good lines must come out the same
    mixed = parse_visdrone_lines(
        [*lines, "bad"], source=Path("a"), issues=mixed_issues, video=video, keep_others=keep_others
    )
    assert mixed_issues.counts == {"wrong_field_count": 1}
    assert clean_issues.dropped == mixed_issues.dropped
    assert {k: v.__dict__ for k, v in clean.items()} == {k: v.__dict__ for k, v in mixed.items()}


@settings(max_examples=150, deadline=None)
@given(
    lines=st.lists(st.text(alphabet="0123456789 .-e", max_size=30), max_size=5),
    policy=st.sampled_from(["raise", "skip"]),
)
def test_yolo_parser_returns_valid_rows_or_our_error(lines: list[str], policy: str) -> None:
    try:
        rows = parse_label_lines(lines, n_classes=3, source=Path("l.txt"), issues=Issues(policy))
    except DroneVisionError:
        return
    for cls, cx, cy, w, h in rows:
        assert 0 <= cls < 3 and w >= 0 and h >= 0 and all(np.isfinite([cx, cy, w, h]))


# --- other sources ----------------------------------------------------------------------------------------------


def test_visdrone_vid_every_nth_frame_keeps_target_ids_and_groups_by_sequence(compose_build, tmp_path: Path) -> None:
    root = tmp_path / "vid"
    for seq in ("uav0001", "uav0002", "uav0003"):
        (root / "sequences" / seq).mkdir(parents=True)
        lines = []
        for frame in range(1, 7):
            cv2.imwrite(str(root / "sequences" / seq / f"{frame:07d}.jpg"), np.full((48, 64, 3), 40, np.uint8))
            lines.append(f"{frame},7,{frame},5,10,8,1,4,0,0")
            lines.append(f"{frame},9,30,20,6,6,1,10,0,1")
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"{seq}.txt").write_text("\n".join(lines) + "\n")
    summary = build.run(
        compose_build(
            "source.format=visdrone-vid", f"source.path={root}", "source.frame_stride=2", "split.val_fraction=0.3"
        )
    )
    manifest = json.loads((tmp_path / "built" / "manifest.json").read_text())
    frames = sorted(Path(e["file"]).stem for e in manifest["entries"])
    assert len(frames) == 9 and {f.rsplit("_", 1)[1] for f in frames} == {"0000001", "0000003", "0000005"}
    assert all(e["attrs"]["target_id"] == [7, 9] for e in manifest["entries"])
    assert {e["group"] for e in manifest["entries"]} == {"uav0001", "uav0002", "uav0003"}
    assert sum(summary["images"].values()) == 9 and summary["images"]["val"] == 3
    first = next(e for e in manifest["entries"] if e["file"].endswith("uav0001_0000003.jpg"))
    assert first["boxes"][0] == [first["boxes"][0][0], 3.0, 5.0, 13.0, 13.0]  # frame 3's own box, not frame 1's


def test_yolo_source_round_trips_and_merges_with_visdrone(compose_build, tmp_path: Path) -> None:
    data_yaml = make_yolo_dataset(tmp_path / "yolo", n_train=6, n_val=3)
    summary = build.run(compose_build("source.format=yolo", f"source.path={data_yaml}", "source.keep_splits=true"))
    out = tmp_path / "built"
    assert summary["images"] == {"train": 6, "val": 3}
    for split in ("train", "val"):
        for label in (tmp_path / "yolo" / split / "labels").iterdir():
            src = np.loadtxt(label, ndmin=2)
            got = np.loadtxt(out / "labels" / split / label.name, ndmin=2)
            assert np.allclose(src, got, atol=2e-6)
    sources = f"sources=[{{format: yolo, path: {data_yaml}}}, {{format: visdrone, path: {VISDRONE_MINI}}}]"
    merged = build.run(compose_build(sources, "overwrite=true", "taxonomy=vehicles", "split.val_fraction=0.3"))
    assert sum(merged["images"].values()) == 12
    assert merged["dropped"]["unmapped:pedestrian"] == 24  # 'vehicle' maps to car, pedestrians are dropped


# --- tiling -----------------------------------------------------------------------------------------------------


def test_tiles_cover_the_image_and_stay_inside() -> None:
    tiles = slice_bboxes((1920, 1080), size=640, overlap=0.2)
    covered = np.zeros((1080, 1920), bool)
    for x1, y1, x2, y2 in tiles:
        assert 0 <= x1 < x2 <= 1920 and 0 <= y1 < y2 <= 1080 and x2 - x1 == 640 and y2 - y1 == 640
        covered[y1:y2, x1:x2] = True
    assert covered.all()


def _record(xyxy: list, labels: list[str]) -> SourceImage:
    return SourceImage(image=Path("a.jpg"), name="a", group="", xyxy=xyxy, labels=labels, where="a.txt")


@pytest.mark.parametrize(("min_visibility", "kept_in_left_tile"), [(0.5, True), (0.7, False)])
def test_box_across_a_tile_edge_is_clipped_and_kept_by_visibility(
    min_visibility: float, kept_in_left_tile: bool
) -> None:
    # image 200 x 100, tiles 100 wide without overlap: [0,100) and [100,200); the box spans x 60..120 (2/3 left)
    cfg = {"tiling": {"enabled": True, "tile": 100, "overlap": 0.0, "min_visibility": min_visibility}}
    issues = Issues()
    taxonomy = Taxonomy(classes=("car",), mapping={"car": "car"})
    items = plan_items(
        _record([[60, 10, 120, 30]], ["car"]),
        resolution_wh=(200, 100),
        split="train",
        taxonomy=taxonomy,
        cfg=cfg,
        issues=issues,
    )
    left, right = items
    assert left.window_xyxy == (0, 0, 100, 100) and right.window_xyxy == (100, 0, 200, 100)
    assert (len(left.xyxy) == 1) == kept_in_left_tile
    if kept_in_left_tile:
        assert left.xyxy.tolist() == [[60, 10, 100, 30]]
    assert len(right.xyxy) == 0  # 1/3 visible: below both thresholds
    assert issues.dropped["tile_low_visibility"] == (1 if kept_in_left_tile else 2)
    assert issues.clipped["by_tile"] == (1 if kept_in_left_tile else 0)


def test_boxes_are_clipped_to_the_image_and_zero_area_dropped_both_counted() -> None:
    issues = Issues()
    taxonomy = Taxonomy(classes=("car",), mapping={"car": "car"})
    record = _record([[-5, 10, 20, 30], [40, 40, 40, 50], [10, 10, 20, 20]], ["car"] * 3)
    (item,) = plan_items(record, resolution_wh=(100, 80), split="train", taxonomy=taxonomy, cfg={}, issues=issues)
    assert item.xyxy.tolist() == [[0, 10, 20, 30], [10, 10, 20, 20]]
    assert issues.clipped == {"to_image": 1} and issues.dropped == {"zero_area": 1}
    assert not item.rewrite  # no tiling, nothing to mask: the image is linked


def test_tile_offsets_round_trip_to_source_pixels(compose_build, tmp_path: Path) -> None:
    build.run(
        compose_build(
            f"source.path={VISDRONE_MINI}",
            "tiling=sahi",
            "tiling.tile=160",
            "tiling.overlap=0.25",
            "tiling.min_visibility=1.0",
            "split.val_fraction=0",
        )
    )
    manifest = json.loads((tmp_path / "built" / "manifest.json").read_text())
    from dronevision.dataset.visdrone import read_visdrone_det

    source = {r.name: r for r in read_visdrone_det(VISDRONE_MINI, issues=Issues())}
    assert len(manifest["entries"]) > 3  # the 455 x 256 frames are cut into several tiles
    for entry in manifest["entries"]:
        assert entry["size"] == [e - s for s, e in zip(entry["window"][:2], entry["window"][2:])]
        image = cv2.imread(str(tmp_path / "built" / entry["file"]))
        assert image.shape[1::-1] == tuple(entry["size"])
        record = source[Path(entry["source_image"]).stem]
        x0, y0 = entry["window"][:2]
        for box in entry["boxes"]:  # fully visible boxes map back exactly onto a source box
            back = np.array(box[1:]) + [x0, y0, x0, y0]
            assert np.abs(record.xyxy - back).max(axis=1).min() < 0.01
    assert {Path(e["source_image"]).stem for e in manifest["entries"]} == set(source)


def test_clip_boxes_visibility_table() -> None:
    boxes = np.array([[0, 0, 10, 10], [95, 0, 105, 10], [200, 0, 210, 10]], float)
    clipped, visible = clip_boxes(boxes, np.array([0, 0, 100, 100]))
    assert visible.tolist() == [1.0, 0.5, 0.0]
    assert clipped[1].tolist() == [95, 0, 100, 10]


# --- end to end -------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_built_visdrone_dataset_trains_one_epoch(compose_build, compose_train, tmp_path: Path) -> None:
    from dronevision.train import run as train

    build.run(
        compose_build(
            f"source.path={VISDRONE_MINI}", "split.group_pattern=null", "split.val_fraction=0.34", "taxonomy=vehicles"
        )
    )
    summary = train(compose_train(f"dataset.path={tmp_path / 'built'}", "train.fraction=1.0", "export.enabled=false"))
    assert summary["dataset"]["classes"] == ["car", "van", "truck", "bus", "motor", "bicycle", "tricycle"]
    assert (summary["dataset"]["n_train"], summary["dataset"]["n_val"]) == (2, 1)
    assert Path(summary["weights"]).is_file()


def test_cli_bad_source_is_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    from .conftest import REPO

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dronevision.dataset",
            f"source.path={tmp_path / 'nope'}",
            f"out_dir={tmp_path / 'out'}",
            f"paths.log_dir={tmp_path / 'logs'}",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: source.path {tmp_path / 'nope'} does not exist"
    assert not (tmp_path / "out").exists()


def test_coco_and_voc_sources_build_with_crowd_and_difficult_as_ignored(compose_build, tmp_path: Path) -> None:
    images = tmp_path / "coco" / "images"
    images.mkdir(parents=True)
    for name in ("a", "b"):
        cv2.imwrite(str(images / f"{name}.jpg"), np.full((48, 64, 3), 90, np.uint8))
    doc = {
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
            {"id": 2, "file_name": "b.jpg", "width": 64, "height": 48},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 5], "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 2, "bbox": [5, 5, 20, 10], "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 1, "bbox": [40, 30, 10, 10], "iscrowd": 1},
        ],
        "categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "Truck"}],
    }
    (tmp_path / "coco" / "annotations").mkdir()
    (tmp_path / "coco" / "annotations" / "instances.json").write_text(json.dumps(doc))
    voc = tmp_path / "voc"
    (voc / "Annotations").mkdir(parents=True)
    (voc / "JPEGImages").mkdir()
    cv2.imwrite(str(voc / "JPEGImages" / "v.jpg"), np.full((48, 64, 3), 90, np.uint8))
    obj = (
        "<object><name>{}</name><difficult>{}</difficult><bndbox><xmin>11</xmin><ymin>6</ymin><xmax>30</xmax>"
        "<ymax>15</ymax></bndbox></object>"
    )
    (voc / "Annotations" / "v.xml").write_text(
        f"<annotation><filename>v.jpg</filename><size><width>64</width><height>48</height></size>"
        f"{obj.format('car', 0)}{obj.format('bus', 1)}</annotation>"
    )
    sources = (
        f"sources=[{{format: coco, path: {tmp_path / 'coco' / 'annotations' / 'instances.json'}}}, "
        f"{{format: voc, path: {voc}}}]"
    )
    summary = build.run(compose_build(sources, "split.val_fraction=0", "taxonomy=vehicles"))
    assert summary["class_counts"] == {"train": {"car": 2, "truck": 1}}
    manifest = json.loads((tmp_path / "built" / "manifest.json").read_text())
    assert manifest["ignored_regions"] == 2  # the crowd box and the difficult bus
    by_name = {Path(e["file"]).stem: e for e in manifest["entries"]}
    assert by_name["v"]["boxes"] == [[0, 10.0, 5.0, 30.0, 15.0]]  # VOC's 1-based pixels -> 0-based xyxy


def test_cvat_video_source_interpolates_and_builds(compose_build, tmp_path: Path) -> None:
    task = tmp_path / "flight7"
    (task / "images").mkdir(parents=True)
    for frame in range(5):
        cv2.imwrite(str(task / "images" / f"frame_{frame:06d}.jpg"), np.full((48, 64, 3), 60, np.uint8))
    (task / "annotations.xml").write_text(
        "<annotations><version>1.1</version><meta><task><size>5</size><original_size><width>64</width>"
        "<height>48</height></original_size></task></meta>"
        '<track id="3" label="car"><box frame="0" keyframe="1" outside="0" occluded="0" xtl="0" ytl="0" xbr="10" '
        'ybr="10"/><box frame="4" keyframe="1" outside="0" occluded="0" xtl="40" ytl="20" xbr="50" ybr="30"/>'
        "</track></annotations>"
    )
    summary = build.run(
        compose_build("source.format=cvat", f"source.path={task / 'annotations.xml'}", "split.val_fraction=0")
    )
    assert summary["images"] == {"train": 5} and summary["class_counts"] == {"train": {"car": 5}}
    manifest = json.loads((tmp_path / "built" / "manifest.json").read_text())
    middle = next(e for e in manifest["entries"] if e["file"].endswith("_000002.jpg"))
    assert middle["boxes"] == [[0, 20.0, 10.0, 30.0, 20.0]]  # halfway between the two keyframes
    assert middle["attrs"]["target_id"] == [3] and middle["group"] == "flight7"


def test_one_group_means_no_val_split_and_says_so(compose_build, caplog: pytest.LogCaptureFixture) -> None:
    summary = build.run(compose_build(f"source.path={VISDRONE_MINI}"))  # the 3 frames come from one video
    assert summary["images"] == {"train": 3}
    assert any("val split is empty" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
