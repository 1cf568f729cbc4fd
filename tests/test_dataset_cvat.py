"""CVAT for images / video 1.1 readers: bad-record tables, track interpolation, end to end, and fuzzing."""

from __future__ import annotations

import logging
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dronevision.dataset.cvat import interpolate_track, parse_cvat_images, parse_cvat_video, read_cvat
from dronevision.dataset.records import Issues, SourceImage
from dronevision.errors import DroneVisionError

ROOT = Path("/data/task")
FRAMES = [Path(f"/data/seq/frame_{i:06d}.PNG") for i in range(5)]
BOX = 'label="car" occluded="0" xtl="1" ytl="2" xbr="11" ybr="12" z_order="0"'
ORIGINAL = "<original_size><width>64</width><height>48</height></original_size>"


def images_xml(*images: str) -> str:
    """A CVAT for images 1.1 document around ``<image>`` elements."""
    return (
        f"<annotations>\n<version>1.1</version>\n<meta><task><size>{len(images)}</size></task></meta>\n"
        + "".join(f"{image}\n" for image in images)
        + "</annotations>\n"
    )


def image(name: str = "frames/a.jpg", *boxes: str, size: str = 'width="64" height="48"') -> str:
    return f'<image id="0" name="{name}" {size}>' + "".join(f"<box {b}/>" for b in boxes) + "</image>"


def vbox(
    frame: int | str, xyxy: tuple = (0, 0, 10, 10), *, outside: int = 0, occluded: int = 0, extra: str = ""
) -> str:
    xtl, ytl, xbr, ybr = xyxy
    return (
        f'<box frame="{frame}" keyframe="1" outside="{outside}" occluded="{occluded}" '
        f'xtl="{xtl}" ytl="{ytl}" xbr="{xbr}" ybr="{ybr}" z_order="0" {extra}/>'
    )


def track(track_id: int | str, *boxes: str, label: str = 'label="car"') -> str:
    return f'<track id="{track_id}" {label} source="manual">' + "".join(boxes) + "</track>"


def video_xml(*tracks: str, size: int | str = 5, meta: str | None = None) -> str:
    """A CVAT for video 1.1 document around ``<track>`` elements."""
    meta = f"<meta><task><size>{size}</size>{ORIGINAL}</task></meta>" if meta is None else meta
    return f"<annotations>\n<version>1.1</version>\n{meta}\n" + "".join(f"{t}\n" for t in tracks) + "</annotations>\n"


def boxes_of(records: list[SourceImage]) -> int:
    return sum(len(r.xyxy) for r in records)


# --------------------------------------------------------------------------------------------- CVAT for images


def test_images_good_file_with_boxes_shapes_and_empty_images(caplog: pytest.LogCaptureFixture) -> None:
    text = images_xml(
        image("frames/a.jpg", BOX, BOX.replace('"car"', '"truck"').replace('occluded="0"', 'occluded="1"')).replace(
            "</image>", '<polygon label="road" points="0,0;1,1;2,0"/><tag label="night"/></image>'
        ),
        image("b.png"),
    )
    with caplog.at_level(logging.INFO, logger="dronevision.dataset.cvat"):
        a, b = parse_cvat_images(text, root=ROOT, issues=Issues(), where="ann.xml")
    assert a.image == ROOT / "frames/a.jpg" and a.name == "a" and a.group == "" and a.resolution_wh == (64, 48)
    assert a.labels == ("car", "truck") and a.attrs["occlusion"].tolist() == [0, 1]
    assert a.xyxy.tolist() == [[1, 2, 11, 12]] * 2 and a.where == "ann.xml: <image name='frames/a.jpg'>"
    assert b.name == "b" and b.xyxy.shape == (0, 4) and b.labels == () and b.attrs["occlusion"].shape == (0,)
    assert "ignored 2 non-box annotations (polygon: 1, tag: 1)" in caplog.text


@pytest.mark.parametrize(
    ("rotation", "xyxy"),
    [("0", [0, 0, 10, 2]), ("360", [0, 0, 10, 2]), ("90", [4, -4, 6, 6]), ("-90", [4, -4, 6, 6])],
)
def test_rotated_boxes_become_the_axis_aligned_box_around_them(rotation: str, xyxy: list[float]) -> None:
    box = f'label="car" xtl="0" ytl="0" xbr="10" ybr="2" rotation="{rotation}"'
    [im] = parse_cvat_images(images_xml(image("a.jpg", box)), root=ROOT, issues=Issues(), where="ann.xml")
    assert np.allclose(im.xyxy, [xyxy])


def test_missing_size_and_defaults_are_accepted() -> None:
    [im] = parse_cvat_images(
        images_xml(image("a.jpg", 'label="car" xtl="1" ytl="1" xbr="1" ybr="1"', size="")),
        root=ROOT,
        issues=Issues(),
        where="ann.xml",
    )
    assert im.resolution_wh is None and im.attrs["occlusion"].tolist() == [0] and im.xyxy.tolist() == [[1, 1, 1, 1]]


GOOD_IMAGE = image("good.jpg", BOX)

# (bad <image>, issue kind, a fragment of the message, whether skipping drops the image or only its bad box)
BAD_IMAGES = [
    (image("a.jpg", BOX.replace('xtl="1" ', "")), "bad_format", "box 0: box has no 'xtl' attribute", "box"),
    (image("a.jpg", BOX.replace('label="car" ', "")), "bad_format", "box 0: box has no 'label'", "box"),
    (image("a.jpg", BOX.replace('label="car"', 'label=" "')), "bad_format", "empty 'label'", "box"),
    (image("a.jpg", BOX.replace('xtl="1"', 'xtl="one"')), "non_numeric", "xtl is not a number: 'one'", "box"),
    (image("a.jpg", BOX.replace('ytl="2"', 'ytl="nan"')), "non_numeric", "ytl is not a finite number", "box"),
    (image("a.jpg", BOX.replace('xbr="11"', 'xbr="1e400"')), "non_numeric", "xbr is not a finite number", "box"),
    (image("a.jpg", BOX.replace('xbr="11"', 'xbr="0"')), "negative_size", "box 0: box has xbr < xtl", "box"),
    (image("a.jpg", BOX.replace('ybr="12"', 'ybr="1.5"')), "negative_size", "ybr < ytl", "box"),
    (image("a.jpg", BOX.replace('occluded="0"', 'occluded="2"')), "non_numeric", "occluded must be 0 or 1", "box"),
    (image("a.jpg", BOX + ' rotation="left"'), "non_numeric", "rotation is not a number", "box"),
    (image("../a.jpg", BOX), "path_escape", "<image name='../a.jpg'>: file name '../a.jpg' escapes", "image"),
    (image("/etc/a.jpg", BOX), "path_escape", "escapes the source folder", "image"),
    (image("..\\a.jpg", BOX), "path_escape", "escapes the source folder", "image"),
    (image("", BOX), "bad_format", "<image name=''>: image has no file 'name'", "image"),
    ('<image id="3" width="4" height="4"/>', "bad_format", "<image #0>: image has no file 'name'", "image"),
    (image("a.jpg", BOX, size='width="64"'), "bad_format", "image has no 'height' attribute", "image"),
    (image("a.jpg", BOX, size='width="wide" height="48"'), "non_numeric", "width is not an integer", "image"),
    (image("a.jpg", BOX, size='width="0" height="48"'), "bad_format", "width must be in 1..", "image"),
]


@pytest.mark.parametrize(
    ("bad", "kind", "message", "level"), BAD_IMAGES, ids=[f"{b[1]}-{i}" for i, b in enumerate(BAD_IMAGES)]
)
def test_bad_image_records_raise_one_line_or_are_skipped_and_counted(
    bad: str, kind: str, message: str, level: str
) -> None:
    text = images_xml(bad, GOOD_IMAGE)
    with pytest.raises(DroneVisionError, match="^ann.xml: <image ") as err:
        parse_cvat_images(text, root=ROOT, issues=Issues("raise"), where="ann.xml")
    assert message in str(err.value) and "\n" not in str(err.value)

    issues = Issues("skip")
    records = parse_cvat_images(text, root=ROOT, issues=issues, where="ann.xml")
    assert dict(issues.counts) == {kind: 1}
    assert [r.name for r in records] == (["good"] if level == "image" else ["a", "good"])
    assert boxes_of(records) == 1


@pytest.mark.parametrize(
    ("text", "position"),
    [
        ("<annotations><image name='a.jpg'></annotations>", ":1:"),
        (images_xml(GOOD_IMAGE).replace("<box", "<box <"), ":4:"),
        (images_xml(GOOD_IMAGE) + "<annotations/>", ":6:"),
        ("", ":1:"),
        ("<annotations><image name='a\ud800.jpg'/></annotations>", ""),
    ],
)
@pytest.mark.parametrize("policy", ["raise", "skip"])
def test_malformed_xml_always_raises_naming_file_and_line(text: str, position: str, policy: str) -> None:
    for parse in (
        lambda: parse_cvat_images(text, root=ROOT, issues=Issues(policy), where="ann.xml"),
        lambda: parse_cvat_video(text, frames=FRAMES, issues=Issues(policy), where="ann.xml", sequence="s"),
    ):
        with pytest.raises(DroneVisionError, match=f"^ann.xml{position}.*not valid XML") as err:
            parse()
        assert "\n" not in str(err.value)


def test_a_root_other_than_annotations_is_refused() -> None:
    with pytest.raises(DroneVisionError, match=r"ann.xml: root element is <dataset>, not CVAT's <annotations>"):
        parse_cvat_images("<dataset/>", root=ROOT, issues=Issues("skip"), where="ann.xml")


# ---------------------------------------------------------------------------------------------- track interpolation


def kb(frame: int, xyxy: tuple = (0, 0, 10, 10), *, outside: bool = False, occluded: bool = False) -> tuple:
    return (frame, True, outside, occluded, xyxy)


def test_interpolation_midpoint_between_two_keyframes() -> None:
    track_ = interpolate_track([kb(10, (10, 20, 30, 40)), kb(0, (0, 0, 10, 10), occluded=True)], n_frames=11)
    assert sorted(track_) == list(range(11))
    assert track_[0] == ((0.0, 0.0, 10.0, 10.0), True)
    assert track_[5] == ((5.0, 10.0, 20.0, 25.0), True)  # the earlier box's occluded
    assert track_[10] == ((10.0, 20.0, 30.0, 40.0), False)
    assert np.allclose(track_[3][0], (3, 6, 16, 19))


def test_interpolation_outside_gaps_and_the_box_before_an_outside_one() -> None:
    boxes = [kb(2, (0, 0, 4, 4)), kb(4, (4, 4, 8, 8), outside=True), kb(7, (10, 10, 12, 12)), kb(8, outside=True)]
    track_ = interpolate_track(boxes, n_frames=12)
    assert sorted(track_) == [2, 3, 7]  # absent before the first box, from an outside box to the next box, and after
    assert track_[3][0] == (2.0, 2.0, 6.0, 6.0)  # moves towards the outside box, as CVAT does


@pytest.mark.parametrize(
    ("boxes", "n_frames", "present"),
    [
        ([kb(3)], 6, [3, 4, 5]),  # persists after the last box to the end of the task
        ([kb(3), kb(4, outside=True)], 6, [3]),
        ([kb(0)], 1, [0]),
        ([kb(0)], 0, []),
        ([], 5, []),
        ([kb(1, outside=True)], 5, []),
        ([kb(0), kb(2), kb(2, (1, 1, 2, 2), outside=True)], 5, [0, 1]),  # the later box for a frame wins
        ([kb(0), kb(9, (9, 9, 19, 19))], 4, [0, 1, 2, 3]),  # a box after n_frames is still an end point
    ],
)
def test_interpolation_presence(boxes: list[tuple], n_frames: int, present: list[int]) -> None:
    assert sorted(interpolate_track(boxes, n_frames=n_frames)) == present


def test_interpolation_towards_a_box_after_the_task_end() -> None:
    assert interpolate_track([kb(0, (0, 0, 0, 0)), kb(10, (10, 10, 10, 10))], n_frames=3)[2][0] == (2.0, 2.0, 2.0, 2.0)


# ------------------------------------------------------------------------------------------------- CVAT for video


def test_video_good_file_interpolates_every_track_onto_every_frame() -> None:
    text = video_xml(
        track(3, vbox(1, (0, 0, 10, 10)), vbox(3, (4, 2, 14, 12), occluded=1), vbox(4, outside=1)),
        track(8, vbox(0, (20, 20, 30, 30)), label='label="truck"'),
        track(9, '<polygon frame="0" keyframe="1" outside="0" occluded="0" points="0,0;1,1;2,0"/>'),
    )
    records = parse_cvat_video(text, frames=FRAMES, issues=Issues(), where="ann.xml", sequence="flight1")
    assert [r.name for r in records] == [f"flight1_{i:06d}" for i in range(5)]
    assert [r.image for r in records] == FRAMES and {r.group for r in records} == {"flight1"}
    assert {r.resolution_wh for r in records} == {(64, 48)} and records[2].where == "ann.xml: frame 2"
    assert [r.labels for r in records] == [("truck",), ("car", "truck"), ("car", "truck"), ("car", "truck"), ("truck",)]
    assert records[2].xyxy.tolist() == [[2, 1, 12, 11], [20, 20, 30, 30]]
    assert records[2].attrs["target_id"].tolist() == [3, 8] and records[3].attrs["occlusion"].tolist() == [1, 0]
    assert records[4].attrs["target_id"].tolist() == [8]


@pytest.mark.parametrize(("stride", "kept"), [(1, [0, 1, 2, 3, 4]), (2, [0, 2, 4]), (3, [0, 3]), (7, [0])])
def test_video_frame_stride_keeps_every_nth_frame_from_zero(stride: int, kept: list[int]) -> None:
    text = video_xml(track(0, vbox(0, (0, 0, 4, 4)), vbox(4, (4, 0, 8, 4))))
    records = parse_cvat_video(text, frames=FRAMES, issues=Issues(), where="a.xml", sequence="s", frame_stride=stride)
    assert [r.name for r in records] == [f"s_{i:06d}" for i in kept]
    assert [r.xyxy[0, 0] for r in records] == kept  # interpolated x moves by 1 per frame


def test_video_bad_stride_and_job_exports() -> None:
    with pytest.raises(DroneVisionError, match="frame_stride must be at least 1"):
        parse_cvat_video(video_xml(), frames=FRAMES, issues=Issues(), where="a.xml", sequence="s", frame_stride=0)
    job = video_xml(track(0, vbox(0)), meta="<meta><job><size>2</size></job></meta>")
    records = parse_cvat_video(job, frames=FRAMES, issues=Issues(), where="a.xml", sequence="s")
    assert [len(r.xyxy) for r in records] == [1, 1] and records[0].resolution_wh is None


GOOD_TRACK = track(1, vbox(0), vbox(2, (2, 2, 12, 12)))

# (bad <track>, or a whole document; issue kind; message fragment; boxes left on the 5 frames when skipped)
BAD_VIDEOS = [
    (track(0, vbox("x")), "non_numeric", "<track id='0'> box 0: frame is not an integer: 'x'", 5),
    (track(0, vbox("1.0")), "non_numeric", "frame is not an integer", 5),
    (track(0, vbox(0), vbox(5)), "frame_out_of_range", "box 1: frame 5 is outside the task's 0..4", 10),
    (track(0, vbox(-1)), "frame_out_of_range", "frame -1 is outside", 5),
    (track(0, vbox(0), vbox(0, (1, 1, 2, 2))), "bad_format", "box 1: a second box for frame 0", 10),
    (track(0, vbox(0).replace('xtl="0" ', "")), "bad_format", "box has no 'xtl' attribute", 5),
    (track(0, vbox(0).replace('frame="0" ', "")), "bad_format", "box has no 'frame' attribute", 5),
    (track(0, vbox(0, (5, 0, 1, 1))), "negative_size", "xbr < xtl", 5),
    (track(0, vbox(0, (0, "inf", 1, 1))), "non_numeric", "ytl is not a finite number", 5),
    (track(0, vbox(0, extra='rotation="x"')), "non_numeric", "rotation is not a number", 5),
    (track(0, vbox(0).replace('outside="0"', 'outside="yes"')), "non_numeric", "outside must be 0 or 1", 5),
    (track(0, vbox(0).replace('keyframe="1"', 'keyframe=""')), "non_numeric", "keyframe must be 0 or 1", 5),
    (track(0, vbox(0), label=""), "bad_format", "<track id='0'>: track has no 'label'", 5),
    (track(0, vbox(0), label='label=""'), "bad_format", "track has an empty 'label'", 5),
    (track("zero", vbox(0)), "non_numeric", "<track id='zero'>: track id is not an integer", 5),
    (track(-2, vbox(0)), "bad_format", "track id must be in 0..", 5),
    (track(1, vbox(0)), "bad_format", "<track id='1'>: track id 1 is used twice", 5),
    (track(0, vbox(0)).replace(' id="0"', ""), "bad_format", "<track #0>: track has no 'id'", 5),
    (video_xml(GOOD_TRACK, meta="<meta><task/></meta>"), "bad_format", "<meta>: no <meta><task><size>", 0),
    (video_xml(GOOD_TRACK, size="many"), "non_numeric", "<meta>: task size is not an integer: 'many'", 0),
    (video_xml(GOOD_TRACK, size=-1), "bad_format", "<meta>: task size must be in 0..", 0),
    (video_xml(GOOD_TRACK, size=7), "missing_image", "ann.xml: the task has 7 frames but only 5 frame files", 5),
    (
        video_xml(
            GOOD_TRACK, meta="<meta><task><size>5</size><original_size><width>9</width></original_size></task></meta>"
        ),
        "bad_format",
        "<original_size> needs <width> and <height>",
        0,
    ),
    (
        video_xml(GOOD_TRACK, meta=f"<meta><task><size>5</size>{ORIGINAL.replace('64', 'x')}</task></meta>"),
        "non_numeric",
        "original_size width is not an integer",
        0,
    ),
]


@pytest.mark.parametrize(
    ("bad", "kind", "message", "n_boxes"), BAD_VIDEOS, ids=[f"{b[1]}-{i}" for i, b in enumerate(BAD_VIDEOS)]
)
def test_bad_video_records_raise_one_line_or_are_skipped_and_counted(
    bad: str, kind: str, message: str, n_boxes: int
) -> None:
    text = bad if bad.startswith("<annotations>") else video_xml(bad, GOOD_TRACK)
    with pytest.raises(DroneVisionError, match="^ann.xml: ") as err:
        parse_cvat_video(text, frames=FRAMES, issues=Issues("raise"), where="ann.xml", sequence="s")
    assert message in str(err.value) and "\n" not in str(err.value)

    issues = Issues("skip")
    records = parse_cvat_video(text, frames=FRAMES, issues=issues, where="ann.xml", sequence="s")
    assert dict(issues.counts) == {kind: 1}
    assert len(records) == (5 if n_boxes else 0) and boxes_of(records) == n_boxes


def test_video_missing_frames_are_reported_only_when_a_kept_frame_lacks_its_file() -> None:
    text = video_xml(GOOD_TRACK, size=7)
    issues = Issues("skip")
    records = parse_cvat_video(text, frames=FRAMES, issues=issues, where="a.xml", sequence="s", frame_stride=3)
    assert [r.name for r in records] == ["s_000000", "s_000003"] and dict(issues.counts) == {"missing_image": 1}
    records = parse_cvat_video(text, frames=FRAMES, issues=Issues(), where="a.xml", sequence="s", frame_stride=4)
    assert [r.name for r in records] == ["s_000000", "s_000004"]  # frames 5 and 6 have no file but are not kept


# ----------------------------------------------------------------------------------------------------- end to end


def write_image(path: Path, size_wh: tuple[int, int] = (64, 48)) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(path.name))
    assert cv2.imwrite(str(path), rng.integers(0, 255, (size_wh[1], size_wh[0], 3), dtype=np.uint8))


def test_read_cvat_images_export_from_folder_or_file(tmp_path: Path) -> None:
    task = tmp_path / "task_12"
    write_image(task / "images" / "frames" / "a.jpg")
    write_image(task / "images" / "b.jpg")
    xml = images_xml(image("frames/a.jpg", BOX), image("b.jpg"), image("gone.jpg", BOX))
    (task / "annotations.xml").write_text('<?xml version="1.0" encoding="utf-8"?>\n' + xml)

    issues = Issues("skip")
    records = read_cvat(task, issues=issues)
    assert [r.image for r in records] == [task / "images" / "frames" / "a.jpg", task / "images" / "b.jpg"]
    assert dict(issues.counts) == {"missing_image": 1} and boxes_of(records) == 1
    assert records[0].where == f"{task / 'annotations.xml'}: <image name='frames/a.jpg'>"
    with pytest.raises(DroneVisionError, match=r"<image name='gone.jpg'>: image file .*gone.jpg does not exist"):
        read_cvat(task / "annotations.xml", issues=Issues("raise"))

    (task / "images" / "gone.jpg").write_bytes((task / "images" / "b.jpg").read_bytes())
    assert len(read_cvat(task, issues=Issues("raise"))) == 3
    elsewhere = tmp_path / "pictures"
    write_image(elsewhere / "b.jpg")
    assert [r.image for r in read_cvat(task, issues=Issues("skip"), images_dir=elsewhere)] == [elsewhere / "b.jpg"]


def test_read_cvat_images_next_to_the_xml_without_images_folder(tmp_path: Path) -> None:
    write_image(tmp_path / "a.jpg")
    (tmp_path / "export.xml").write_text(images_xml(image("a.jpg", BOX)))
    [record] = read_cvat(tmp_path / "export.xml", issues=Issues())
    assert record.image == tmp_path / "a.jpg" and record.image.is_file()


def test_read_cvat_video_export_with_real_frames(tmp_path: Path) -> None:
    import cv2

    folder = tmp_path / "flight_07"
    for i in range(6):
        write_image(folder / "images" / f"frame_{i:06d}.PNG")
    (folder / "images" / "notes.txt").write_text("not a frame")
    xml = video_xml(track(4, vbox(0, (0, 0, 10, 10)), vbox(4, (8, 8, 18, 18)), vbox(5, outside=1)), size=6)
    (folder / "annotations.xml").write_text(xml)

    records = read_cvat(folder, issues=Issues(), frame_stride=2)
    assert [r.name for r in records] == ["flight_07_000000", "flight_07_000002", "flight_07_000004"]
    assert [r.image.name for r in records] == ["frame_000000.PNG", "frame_000002.PNG", "frame_000004.PNG"]
    assert {r.group for r in records} == {"flight_07"}
    assert records[1].xyxy.tolist() == [[4, 4, 14, 14]] and records[1].attrs["target_id"].tolist() == [4]
    for record in records:
        height, width = cv2.imread(str(record.image)).shape[:2]
        assert record.resolution_wh == (width, height)

    (folder / "images" / "frame_000005.PNG").unlink()
    (folder / "images" / "frame_000004.PNG").unlink()
    with pytest.raises(DroneVisionError, match="the task has 6 frames but only 4 frame files"):
        read_cvat(folder, issues=Issues("raise"), frame_stride=2)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "CVAT annotation file does not exist"),
        (
            "<annotations>\n<image name='a.jpg'>\n</annotations>",
            r"annotations.xml:3:2: not valid XML \(mismatched tag\)",
        ),
        (images_xml(GOOD_IMAGE).replace("</annotations>", track(0, vbox(0)) + "</annotations>"), "both <image> and"),
    ],
)
def test_read_cvat_bad_files(tmp_path: Path, content: str | None, message: str) -> None:
    if content is not None:
        (tmp_path / "annotations.xml").write_text(content)
    with pytest.raises(DroneVisionError, match=message) as err:
        read_cvat(tmp_path, issues=Issues("raise"))
    assert str(tmp_path / "annotations.xml") in str(err.value) and "\n" not in str(err.value)


def test_read_cvat_of_an_export_without_images_or_tracks_is_empty(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "annotations.xml").write_text(video_xml())
    assert read_cvat(tmp_path, issues=Issues("raise")) == []
    assert "no <image> or <track> elements" in caplog.text


def test_read_cvat_declared_encoding_is_honoured(tmp_path: Path) -> None:
    write_image(tmp_path / "é.jpg")
    text = '<?xml version="1.0" encoding="latin-1"?>\n' + images_xml(image("é.jpg", BOX))
    (tmp_path / "annotations.xml").write_bytes(text.encode("latin-1"))
    assert read_cvat(tmp_path, issues=Issues())[0].name == "é"


# --------------------------------------------------------------------------------------------- property tests

JUNK = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=8)
NUMBER = st.one_of(
    st.integers(-3, 40).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", "0", "1", "-0", " 7 ", "1e400", "nan", "-inf", "1_0", "9" * 30, "0x10", "3.5"]),
    JUNK,
)


def mostly(good: st.SearchStrategy[str], bad: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A good value, or one time in twenty a bad one: most documents then hold some good records."""
    return st.tuples(st.integers(0, 19), good, bad).map(lambda t: t[2] if t[0] == 0 else t[1])


def attributes(pairs: dict[str, st.SearchStrategy[str]]) -> st.SearchStrategy[str]:
    """`` key="value"`` for each key; one time in twenty a key is left out."""
    parts = [mostly(value.map(lambda v, k=k: f" {k}={quoteattr(v)}"), st.just("")) for k, value in pairs.items()]
    return st.tuples(*parts).map("".join)


def coords(xywh: tuple[int, float, int, float]) -> st.SearchStrategy[str]:
    """``xtl ytl xbr ybr`` attributes of a good box, each one now and then left out or made bad."""
    x, y, w, h = xywh
    values = {"xtl": x, "ytl": y, "xbr": x + w, "ybr": y + h}
    return attributes({key: mostly(st.just(repr(value)), NUMBER) for key, value in values.items()})


COORDS = st.tuples(st.integers(0, 60), st.floats(0, 60), st.integers(0, 30), st.floats(0, 30)).flatmap(coords)
FLAG = mostly(st.sampled_from(["0", "1"]), st.sampled_from(["true", "2", "", "x", " 1"]))
LABEL = mostly(st.sampled_from(["car", "truck"]), st.sampled_from(["", " ", "<&>"]))
ROTATION = mostly(st.sampled_from(["0", "90", "30.5"]), NUMBER)
IMAGE_BOX = st.tuples(attributes({"label": LABEL, "occluded": FLAG, "rotation": ROTATION}), COORDS).map("".join)
NAME = mostly(
    st.sampled_from(["a.jpg", "frames/b.png", "c.JPG"]),
    st.sampled_from(["../c.jpg", "/abs.jpg", "", ".", "d\\..\\e.jpg", "C:\\x.jpg"]) | JUNK,
)
SIZE = mostly(st.integers(1, 4000).map(str), NUMBER)
SHAPE = mostly(IMAGE_BOX.map(lambda a: f"<box{a}/>"), st.just('<points label="p" points="1,2"/>'))
IMAGE = st.tuples(attributes({"name": NAME, "width": SIZE, "height": SIZE}), st.lists(SHAPE, max_size=4)).map(
    lambda t: f"<image{t[0]}>{''.join(t[1])}</image>"
)
IMAGES_DOC = st.lists(IMAGE, max_size=4).map(lambda i: f"<annotations><version>1.1</version>{''.join(i)}</annotations>")

FRAME = mostly(st.integers(0, 8).map(str), st.integers(-2, 40).map(str) | NUMBER)
VIDEO_FLAGS = attributes({"frame": FRAME, "keyframe": FLAG, "outside": FLAG, "occluded": FLAG})
VIDEO_BOX = st.tuples(VIDEO_FLAGS, COORDS).map(lambda t: f"<box{t[0]}{t[1]}/>")
TRACK = st.tuples(
    attributes({"id": mostly(st.integers(0, 100).map(str), NUMBER), "label": LABEL}), st.lists(VIDEO_BOX, max_size=6)
).map(lambda t: f"<track{t[0]}>{''.join(t[1])}</track>")
META = st.tuples(mostly(st.integers(5, 12).map(str), NUMBER), SIZE, SIZE).map(
    lambda m: (
        f"<meta><task><size>{m[0]}</size><original_size><width>{m[1]}</width><height>{m[2]}</height>"
        "</original_size></task></meta>"
    )
)
VIDEO_DOC = st.tuples(META, st.lists(TRACK, max_size=4)).map(
    lambda t: f"<annotations><version>1.1</version>{t[0]}{''.join(t[1])}</annotations>"
)
EDITS = st.lists(
    st.tuples(st.integers(0, 10**6), st.integers(0, 6), JUNK | st.sampled_from(["<", ">", '"', "/>"])), max_size=3
)


def mutated(docs: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Documents as generated, with a few slices replaced by junk, or arbitrary text."""

    def edit(doc: str, edits: list[tuple[int, int, str]]) -> str:
        for position, length, insert in edits:
            position %= len(doc) + 1
            doc = doc[:position] + insert + doc[position + length :]
        return doc

    return st.one_of(docs, st.tuples(docs, EDITS).map(lambda t: edit(*t)), st.text(max_size=60))


def assert_valid(records: list[SourceImage], issues: Issues) -> None:
    for record in records:
        assert isinstance(record, SourceImage)
        assert np.isfinite(record.xyxy).all()
        assert (record.xyxy[:, 2] >= record.xyxy[:, 0]).all() and (record.xyxy[:, 3] >= record.xyxy[:, 1]).all()
        assert all(values.dtype.kind == "i" for values in record.attrs.values())
    if issues.policy == "raise":
        assert not issues.counts


FUZZ = settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(text=mutated(IMAGES_DOC), policy=st.sampled_from(["raise", "skip"]))
def test_images_parser_returns_valid_records_or_raises_dronevision_error(text: str, policy: str) -> None:
    issues = Issues(policy)
    try:
        records = parse_cvat_images(text, root=ROOT, issues=issues, where="fuzz.xml")
    except DroneVisionError as e:
        assert "\n" not in str(e) and str(e).startswith("fuzz.xml")
        return
    assert_valid(records, issues)


@FUZZ
@given(
    text=mutated(VIDEO_DOC),
    policy=st.sampled_from(["raise", "skip"]),
    stride=st.integers(1, 3),
    n_files=st.integers(0, 13),
)
def test_video_parser_returns_valid_records_or_raises_dronevision_error(
    text: str, policy: str, stride: int, n_files: int
) -> None:
    issues, frames = Issues(policy), [Path(f"frame_{i:06d}.PNG") for i in range(n_files)]
    try:
        records = parse_cvat_video(
            text, frames=frames, issues=issues, where="fuzz.xml", sequence="s", frame_stride=stride
        )
    except DroneVisionError as e:
        assert "\n" not in str(e) and str(e).startswith("fuzz.xml")
        return
    assert_valid(records, issues)
    assert [r.name for r in records] == [f"s_{i:06d}" for i in range(0, len(records) * stride, stride)]
    assert all(r.image == frames[int(r.name[2:])] for r in records)


XYXY = st.tuples(st.floats(-1e300, 1e300), st.floats(-1e300, 1e300), st.floats(0, 1e300), st.floats(0, 1e300)).map(
    lambda v: (v[0], v[1], v[0] + v[2], v[1] + v[3])
)


@FUZZ
@given(
    boxes=st.lists(st.tuples(st.integers(-3, 30), st.booleans(), st.booleans(), st.booleans(), XYXY), max_size=6),
    n_frames=st.integers(0, 30),
)
def test_interpolated_boxes_stay_finite_ordered_and_within_the_task(boxes: list[tuple], n_frames: int) -> None:
    track_ = interpolate_track(boxes, n_frames=n_frames)
    assert all(max(0, min(b[0] for b in boxes)) <= f < n_frames for f in track_)
    for (x1, y1, x2, y2), occluded in track_.values():
        assert all(np.isfinite(v) for v in (x1, y1, x2, y2)) and x2 >= x1 and y2 >= y1 and isinstance(occluded, bool)
