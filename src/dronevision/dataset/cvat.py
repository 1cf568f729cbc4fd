"""CVAT for images 1.1 and CVAT for video 1.1 XML exports: pure parsers over the XML text, and one file reader.

Only boxes are read; other shapes (polygons, points, tags, ...) are counted and logged once per file. Rotated boxes
(``rotation="..."``, CVAT 2.x) become the axis-aligned box around them. Bad records go through
:class:`~dronevision.dataset.records.Issues` and are skipped; malformed XML always raises.
"""

from __future__ import annotations

import logging
import math
import xml.etree.ElementTree as ET
from bisect import bisect_right
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

import numpy as np

from dronevision.dataset.records import BadRecord as _Bad
from dronevision.dataset.records import (
    ImageBoxes,
    Issues,
    SourceImage,
    check_items,
    label_names,
    relative_image_name,
    safe_join,
)
from dronevision.dataset.yolo import IMAGE_SUFFIXES
from dronevision.errors import DroneVisionError
from dronevision.schema import Detections

log = logging.getLogger(__name__)

XYXY = tuple[float, float, float, float]
TrackBox = tuple[int, bool, bool, bool, XYXY]  # frame, keyframe, outside, occluded, xyxy
INT64_MAX = 2**63 - 1


def _attr(node: ET.Element, key: str, what: str) -> str:
    value = node.get(key)
    if value is None:
        raise _Bad("bad_format", f"{what} has no '{key}' attribute")
    return value


def _label(node: ET.Element, what: str) -> str:
    label = _attr(node, "label", what)
    if not label.strip():
        raise _Bad("bad_format", f"{what} has an empty 'label'")
    return label


def _int(value: str, key: str, *, lo: int = 0, hi: int = INT64_MAX) -> int:
    try:
        number = int(value)
    except ValueError:
        raise _Bad("non_numeric", f"{key} is not an integer: {value!r}") from None
    if not lo <= number <= hi:
        raise _Bad("bad_format", f"{key} must be in {lo}..{hi}, got {number}")
    return number


def _float(value: str, key: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise _Bad("non_numeric", f"{key} is not a number: {value!r}") from None
    if not math.isfinite(number):
        raise _Bad("non_numeric", f"{key} is not a finite number: {value!r}")
    return number


def _flag(node: ET.Element, key: str, default: bool) -> bool:
    value = node.get(key)
    if value is None:
        return default
    if value.strip().lower() not in ("0", "1", "true", "false"):
        raise _Bad("non_numeric", f"{key} must be 0 or 1, got {value!r}")
    return value.strip().lower() in ("1", "true")


def _box_xyxy(node: ET.Element) -> XYXY:
    """``xtl ytl xbr ybr`` of a ``<box>``, as the axis-aligned box around it when it is rotated."""
    xtl, ytl, xbr, ybr = (_float(_attr(node, key, "box"), key) for key in ("xtl", "ytl", "xbr", "ybr"))
    if xbr < xtl or ybr < ytl:
        raise _Bad("negative_size", f"box has xbr < xtl or ybr < ytl: ({xtl}, {ytl}, {xbr}, {ybr})")
    rotation = _float(node.get("rotation", "0"), "rotation") % 360.0
    if rotation:
        cx, cy, hw, hh = xtl / 2 + xbr / 2, ytl / 2 + ybr / 2, xbr / 2 - xtl / 2, ybr / 2 - ytl / 2
        cos, sin = abs(math.cos(math.radians(rotation))), abs(math.sin(math.radians(rotation)))
        hw, hh = hw * cos + hh * sin, hw * sin + hh * cos
        xtl, ytl, xbr, ybr = cx - hw, cy - hh, cx + hw, cy + hh
        if not all(math.isfinite(v) for v in (xtl, ytl, xbr, ybr)):
            raise _Bad("non_numeric", "rotated box coordinates are out of range")
    return xtl, ytl, xbr, ybr


def _parse_xml(text: str | bytes, *, where: str) -> ET.Element:
    """The ``<annotations>`` root element; malformed XML raises with the file and line."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        line, column = e.position
        reason = str(e).rsplit(": line", 1)[0]
        raise DroneVisionError(f"{where}:{line}:{column}: not valid XML ({reason})") from None
    except (ValueError, UnicodeError) as e:  # e.g. lone surrogates in a str
        raise DroneVisionError(f"{where}: not valid XML ({type(e).__name__})") from None
    if root.tag != "annotations":
        raise DroneVisionError(f"{where}: root element is <{str(root.tag)[:40]}>, not CVAT's <annotations>")
    return root


def _log_ignored(ignored: Counter[str], where: str) -> None:
    if ignored:
        kinds = ", ".join(f"{tag}: {n}" for tag, n in sorted(ignored.items()))
        log.info("%s: ignored %d non-box annotations (%s)", where, sum(ignored.values()), kinds)


def _images_from_root(root: ET.Element, *, root_dir: Path, issues: Issues, where: str) -> list[SourceImage]:
    records: list[SourceImage] = []
    ignored: Counter[str] = Counter()
    for number, node in enumerate(root.findall("image")):
        name = node.get("name")
        image_where = f"{where}: <image name={name!r}>" if name is not None else f"{where}: <image #{number}>"
        try:
            if not name or not PurePosixPath(name).stem:
                raise _Bad("bad_format", "image has no file 'name'")
            size = [node.get(key) for key in ("width", "height")]
            resolution_wh = None
            if size[0] is not None or size[1] is not None:
                w, h = (_int(_attr(node, key, "image"), key, lo=1) for key in ("width", "height"))
                resolution_wh = (w, h)
        except _Bad as bad:
            issues.report(bad.kind, image_where, bad.message)
            continue
        image = safe_join(root_dir, name, issues=issues, where=image_where)
        if image is None:
            continue
        xyxy, labels, occlusion = [], [], []
        ignored.update(str(child.tag) for child in node if child.tag != "box")
        for index, child in enumerate(node.findall("box")):
            try:
                label = _label(child, "box")
                occluded = _flag(child, "occluded", False)
                xyxy.append(_box_xyxy(child))
            except _Bad as bad:
                issues.report(bad.kind, f"{image_where} box {index}", bad.message)
                continue
            labels.append(label)
            occlusion.append(int(occluded))
        records.append(
            SourceImage(
                image=image,
                name=PurePosixPath(name).stem,
                group="",
                xyxy=np.asarray(xyxy),
                labels=tuple(labels),
                attrs={"occlusion": np.asarray(occlusion, dtype=np.int64)},
                resolution_wh=resolution_wh,
                where=image_where,
            )
        )
    _log_ignored(ignored, where)
    return records


def parse_cvat_images(text: str, *, root: Path, issues: Issues, where: str) -> list[SourceImage]:
    """Parse a CVAT for images 1.1 export: one :class:`SourceImage` per ``<image>``, with its ``<box>`` shapes.

    Args:
        text: the XML text.
        root: the folder that image names are relative to.
        issues: the bad-record policy; a bad image or box is reported and skipped.
        where: the annotation file, for messages.

    Raises:
        DroneVisionError: the XML is malformed or is not CVAT's, or a bad record under ``Issues("raise")``.

    Examples:
        >>> text = '''<annotations><version>1.1</version>
        ...   <image id="0" name="frames/a.jpg" width="64" height="48">
        ...     <box label="car" occluded="1" xtl="1" ytl="2" xbr="11.5" ybr="12" z_order="0"/>
        ...     <polygon label="road" points="0,0;5,0;5,5"/>
        ...   </image></annotations>'''
        >>> [im] = parse_cvat_images(text, root=Path("/data"), issues=Issues(), where="ann.xml")
        >>> im.image.as_posix(), im.name, im.labels, im.resolution_wh, im.where
        ('/data/frames/a.jpg', 'a', ('car',), (64, 48), "ann.xml: <image name='frames/a.jpg'>")
        >>> im.xyxy.tolist(), im.attrs["occlusion"].tolist()
        ([[1.0, 2.0, 11.5, 12.0]], [1])
        >>> bad = text.replace('xbr="11.5"', 'xbr="0"')
        >>> parse_cvat_images(bad, root=Path("/data"), issues=Issues(), where="ann.xml")
        Traceback (most recent call last):
        ...
        dronevision.errors.DroneVisionError: ann.xml: <image name='frames/a.jpg'> box 0: box has xbr < xtl ...
    """
    return _images_from_root(_parse_xml(text, where=where), root_dir=root, issues=issues, where=where)


def _track_at(shapes: Sequence[TrackBox], frames: Sequence[int], frame: int) -> tuple[XYXY, bool] | None:
    """The box of a track (shapes sorted by frame, ``frames`` their frame numbers) on one frame, or None."""
    i = bisect_right(frames, frame) - 1
    if i < 0 or shapes[i][2]:  # before the first box, or after an outside box
        return None
    f0, _, _, occluded, xyxy0 = shapes[i]
    if f0 == frame or i + 1 == len(shapes):
        t, xyxy1 = 0.0, xyxy0
    else:
        f1, xyxy1 = shapes[i + 1][0], shapes[i + 1][4]
        t = (frame - f0) / (f1 - f0)
    # a convex combination keeps x1 <= x2 and finite values under rounding
    x1, y1, x2, y2 = (float(a) * (1 - t) + float(b) * t for a, b in zip(xyxy0, xyxy1))
    return (x1, y1, x2, y2), bool(occluded)


def _sorted_shapes(boxes: Sequence[TrackBox]) -> tuple[list[TrackBox], list[int]]:
    by_frame = {int(box[0]): box for box in boxes}  # a later box for the same frame wins
    shapes = [by_frame[f] for f in sorted(by_frame)]
    return shapes, [int(s[0]) for s in shapes]


def interpolate_track(boxes: Sequence[TrackBox], *, n_frames: int) -> dict[int, tuple[XYXY, bool]]:
    """The box and ``occluded`` flag of one CVAT track on every frame ``0..n_frames-1`` where the object is present.

    CVAT's semantics: the object exists from its first box on. A frame with a box uses it as is. A frame between two
    boxes gets the linear interpolation of their ``xyxy`` (and the earlier box's ``occluded``), unless the earlier box
    is ``outside``: then the object is absent until the next box. After the last box, the object stays with that box
    to the end of the task unless the last box is ``outside``. Frames with an ``outside`` box have no box. The
    ``keyframe`` flag does not change the result (CVAT interpolates between every pair of consecutive boxes).

    Args:
        boxes: ``(frame, keyframe, outside, occluded, xyxy)`` per given box, in any order; one per frame.
        n_frames: the task size; boxes at or after it still serve as interpolation end points.

    Examples:
        >>> boxes = [(0, True, False, False, (0, 0, 10, 10)), (4, True, False, True, (8, 4, 18, 14))]
        >>> track = interpolate_track(boxes, n_frames=6)
        >>> track[2]  # halfway between the two keyframes
        ((4.0, 2.0, 14.0, 12.0), False)
        >>> track[5]  # the last box is not outside: it persists to the end
        ((8.0, 4.0, 18.0, 14.0), True)
        >>> gap = [(1, True, False, False, (0, 0, 2, 2)), (2, True, True, False, (0, 0, 2, 2)),
        ...        (4, True, False, False, (4, 4, 6, 6)), (5, True, True, False, (4, 4, 6, 6))]
        >>> sorted(interpolate_track(gap, n_frames=8))  # absent before frame 1, on 2-3 (outside), and from 5 on
        [1, 4]
    """
    shapes, frames = _sorted_shapes(boxes)
    if not shapes:
        return {}
    states = ((frame, _track_at(shapes, frames, frame)) for frame in range(max(frames[0], 0), n_frames))
    return {frame: state for frame, state in states if state is not None}


def _task_meta(root: ET.Element) -> tuple[int, tuple[int, int] | None]:
    """The task size and ``original_size`` from ``<meta><task>`` (or ``<meta><job>`` for a job export)."""
    task = root.find("meta/task")
    task = root.find("meta/job") if task is None else task
    size = None if task is None else task.find("size")
    if size is None:
        raise _Bad("bad_format", "no <meta><task><size> (the number of frames)")
    n_frames = _int((size.text or "").strip(), "task size")
    original = task.find("original_size") if task is not None else None
    if original is None:
        return n_frames, None
    texts = [original.findtext(key) for key in ("width", "height")]
    if None in texts:
        raise _Bad("bad_format", "<original_size> needs <width> and <height>")
    w, h = (_int(str(text).strip(), f"original_size {key}", lo=1) for text, key in zip(texts, ("width", "height")))
    return n_frames, (w, h)


def _read_track(node: ET.Element, *, n_frames: int, issues: Issues, where: str) -> list[TrackBox]:
    """The usable boxes of one ``<track>``; bad boxes are reported and skipped."""
    boxes: dict[int, TrackBox] = {}
    for index, child in enumerate(node.findall("box")):
        try:
            frame = _int(_attr(child, "frame", "box"), "frame", lo=-INT64_MAX)
            if not 0 <= frame < n_frames:
                raise _Bad("frame_out_of_range", f"frame {frame} is outside the task's 0..{n_frames - 1}")
            if frame in boxes:
                raise _Bad("bad_format", f"a second box for frame {frame}")
            keyframe, outside = _flag(child, "keyframe", True), _flag(child, "outside", False)
            boxes[frame] = (frame, keyframe, outside, _flag(child, "occluded", False), _box_xyxy(child))
        except _Bad as bad:
            issues.report(bad.kind, f"{where} box {index}", bad.message)
    return list(boxes.values())


def _video_from_root(
    root: ET.Element, *, frames: Sequence[Path], issues: Issues, where: str, sequence: str, frame_stride: int
) -> list[SourceImage]:
    if frame_stride < 1:
        raise DroneVisionError(f"{where}: frame_stride must be at least 1, got {frame_stride}")
    try:
        n_frames, resolution_wh = _task_meta(root)
    except _Bad as bad:
        issues.report(bad.kind, f"{where}: <meta>", bad.message)
        return []
    tracks: list[tuple[int, str, list[TrackBox], list[int]]] = []
    seen: set[int] = set()
    ignored: Counter[str] = Counter()
    for number, node in enumerate(root.findall("track")):
        track_id = node.get("id")
        track_where = f"{where}: <track id={track_id!r}>" if track_id is not None else f"{where}: <track #{number}>"
        ignored.update(str(child.tag) for child in node if child.tag != "box")
        try:
            target = _int(_attr(node, "id", "track"), "track id")
            label = _label(node, "track")
            if target in seen:
                raise _Bad("bad_format", f"track id {target} is used twice")
        except _Bad as bad:
            issues.report(bad.kind, track_where, bad.message)
            continue
        seen.add(target)
        shapes, shape_frames = _sorted_shapes(_read_track(node, n_frames=n_frames, issues=issues, where=track_where))
        if shapes:
            tracks.append((target, label, shapes, shape_frames))
    _log_ignored(ignored, where)
    first_missing = -(-len(frames) // frame_stride) * frame_stride  # the first kept frame without a file
    if first_missing < n_frames:
        issues.report("missing_image", where, f"the task has {n_frames} frames but only {len(frames)} frame files")
    records = []
    for frame in range(0, min(n_frames, len(frames)), frame_stride):
        xyxy, labels, target_ids, occlusion = [], [], [], []
        for target, label, shapes, shape_frames in tracks:
            state = _track_at(shapes, shape_frames, frame)
            if state is not None:
                xyxy.append(state[0])
                labels.append(label)
                target_ids.append(target)
                occlusion.append(int(state[1]))
        records.append(
            SourceImage(
                image=frames[frame],
                name=f"{sequence}_{frame:06d}",
                group=sequence,
                xyxy=np.asarray(xyxy),
                labels=tuple(labels),
                attrs={
                    "target_id": np.asarray(target_ids, dtype=np.int64),
                    "occlusion": np.asarray(occlusion, dtype=np.int64),
                },
                resolution_wh=resolution_wh,
                where=f"{where}: frame {frame}",
            )
        )
    return records


def parse_cvat_video(
    text: str, *, frames: Sequence[Path], issues: Issues, where: str, sequence: str, frame_stride: int = 1
) -> list[SourceImage]:
    """Parse a CVAT for video 1.1 export: one :class:`SourceImage` per kept frame, with every track's box on it.

    Tracks are interpolated as CVAT does (:func:`interpolate_track`). Frame ``i`` is the image ``frames[i]``; frames
    ``0, frame_stride, 2 * frame_stride, ...`` are kept, including those without boxes. Rotated boxes become
    axis-aligned before interpolation (CVAT interpolates the angle; the difference is small between keyframes).

    Args:
        text: the XML text.
        frames: the frame images, in frame order.
        issues: the bad-record policy; a bad box or track is reported and skipped, and so are frames without a file
            (reported once per file).
        where: the annotation file, for messages.
        sequence: the group of every frame, and the prefix of their names.
        frame_stride: keep every ``frame_stride``-th frame.

    Raises:
        DroneVisionError: the XML is malformed or is not CVAT's, ``frame_stride < 1``, or a bad record under
            ``Issues("raise")``.

    Examples:
        >>> text = '''<annotations><version>1.1</version>
        ...   <meta><task><size>3</size>
        ...     <original_size><width>64</width><height>48</height></original_size></task></meta>
        ...   <track id="7" label="car" source="manual">
        ...     <box frame="0" keyframe="1" outside="0" occluded="0" xtl="0" ytl="0" xbr="10" ybr="10" z_order="0"/>
        ...     <box frame="2" keyframe="1" outside="0" occluded="0" xtl="4" ytl="2" xbr="14" ybr="12" z_order="0"/>
        ...   </track></annotations>'''
        >>> frames = [Path(f"frame_{i:06d}.PNG") for i in range(3)]
        >>> ims = parse_cvat_video(text, frames=frames, issues=Issues(), where="ann.xml", sequence="flight1")
        >>> [(im.name, im.group, im.image.name) for im in ims][1]
        ('flight1_000001', 'flight1', 'frame_000001.PNG')
        >>> ims[1].xyxy.tolist(), ims[1].labels, ims[1].attrs["target_id"].tolist(), ims[1].resolution_wh
        ([[2.0, 1.0, 12.0, 11.0]], ('car',), [7], (64, 48))
        >>> [im.name for im in parse_cvat_video(text, frames=frames, issues=Issues(), where="ann.xml", sequence="s",
        ...                                     frame_stride=2)]
        ['s_000000', 's_000002']
    """
    root = _parse_xml(text, where=where)
    return _video_from_root(
        root, frames=frames, issues=issues, where=where, sequence=sequence, frame_stride=frame_stride
    )


def _images_root(xml: Path, images_dir: Path | None) -> Path:
    if images_dir is not None:
        return Path(images_dir)
    return xml.parent / "images" if (xml.parent / "images").is_dir() else xml.parent


def read_cvat(
    path: Path, *, issues: Issues, images_dir: Path | None = None, frame_stride: int = 1
) -> list[SourceImage]:
    """Read a CVAT for images 1.1 or CVAT for video 1.1 export (told apart by ``<track>`` vs ``<image>`` elements).

    Args:
        path: the XML file, or a folder that holds ``annotations.xml``.
        issues: the bad-record policy; images and frames whose file does not exist are reported as ``missing_image``.
        images_dir: where the images (or video frames) are; default ``<xml folder>/images`` if it exists, else the
            XML's folder. Video frames are the image files there, sorted by name (``frame_000000.PNG``, ...).
        frame_stride: for a video export, keep every ``frame_stride``-th frame.

    Returns:
        The images; for a video, their group is the name of the XML's folder.

    Raises:
        DroneVisionError: the file is missing or malformed, or a bad record under ``Issues("raise")``.
    """
    path = Path(path).expanduser().resolve()
    if path.is_dir():
        path = path / "annotations.xml"
    if not path.is_file():
        raise DroneVisionError(f"{path}: CVAT annotation file does not exist")
    where = str(path)
    root = _parse_xml(path.read_bytes(), where=where)  # bytes: expat honours the declared encoding
    images_root = _images_root(path, images_dir)
    has_tracks, has_images = root.find("track") is not None, root.find("image") is not None
    if has_tracks and has_images:
        issues.report("bad_format", where, "holds both <image> and <track> elements: not one CVAT 1.1 format")
        return []
    if not has_tracks and not has_images:
        log.warning("%s: no <image> or <track> elements: nothing to read", where)
    if has_tracks:
        files = sorted(images_root.iterdir(), key=lambda p: p.name) if images_root.is_dir() else []
        frames = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
        sequence = path.parent.name
        records = _video_from_root(
            root, frames=frames, issues=issues, where=where, sequence=sequence, frame_stride=frame_stride
        )
    else:
        records = []
        for record in _images_from_root(root, root_dir=images_root, issues=issues, where=where):
            if record.image.is_file():
                records.append(record)
            else:
                issues.report("missing_image", record.where, f"image file {record.image} does not exist")
    log.info("%s: %d images, %d boxes", where, len(records), sum(len(r.xyxy) for r in records))
    return records


def cvat_images_xml(items: Sequence[tuple[str, tuple[int, int], Detections]], names: Mapping[int, str]) -> ET.Element:
    """A CVAT for images 1.1 ``<annotations>`` element from ``(image name, (w, h), boxes)``; exact float text.

    Examples:
        >>> det = Detections(xyxy=[[1.5, 2, 10, 0.1 + 20]], class_id=[0])
        >>> root = cvat_images_xml([("f/a.jpg", (64, 48), det)], {0: "car"})
        >>> root.find("meta/task/labels/label/name").text, root.find("image").attrib
        ('car', {'id': '0', 'name': 'f/a.jpg', 'width': '64', 'height': '48'})
        >>> root.find("image/box").get("ybr")
        '20.1'
    """
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = "1.1"
    task = ET.SubElement(ET.SubElement(root, "meta"), "task")
    ET.SubElement(task, "size").text = str(len(items))
    ET.SubElement(task, "mode").text = "annotation"
    labels = ET.SubElement(task, "labels")
    for name in label_names(names):
        label = ET.SubElement(labels, "label")
        ET.SubElement(label, "name").text = name
        ET.SubElement(label, "type").text = "rectangle"
    for index, (image_name, (w, h), det) in enumerate(items):
        attrib = {"id": str(index), "name": image_name, "width": str(int(w)), "height": str(int(h))}
        node = ET.SubElement(root, "image", attrib)
        for (x1, y1, x2, y2), cls in zip(det.xyxy.tolist(), det.class_id.tolist()):
            box = {"label": names[cls], "occluded": "0", "source": "auto"}
            box.update({k: repr(float(v)) for k, v in zip(("xtl", "ytl", "xbr", "ybr"), (x1, y1, x2, y2))})
            box["z_order"] = "0"
            ET.SubElement(node, "box", box)
    return root


def write_cvat_images(path: Path, items: Sequence[ImageBoxes], names: Mapping[int, str], *, image_root: Path) -> Path:
    """Write a CVAT for images 1.1 XML file to upload as annotations to a CVAT task holding the same images.

    Image names are relative to ``image_root`` (as the CVAT task knows them); boxes have ``source="auto"``.

    Returns:
        ``path``.
    """
    check_items(items, names)
    named = [(relative_image_name(image, image_root), wh, det) for image, wh, det in items]
    root = cvat_images_xml(named, names)
    ET.indent(root)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    log.info("%s: %d images, %d boxes (CVAT for images 1.1)", path, len(items), sum(len(d) for _, _, d in items))
    return path
