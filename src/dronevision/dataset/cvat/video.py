"""CVAT for video 1.1: tracks interpolated between keyframes (as CVAT does), one record per frame."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from bisect import bisect_right
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dronevision.dataset.cvat.elements import (
    INT64_MAX,
    XYXY,
    TrackBox,
    box_xyxy,
    get_attr,
    get_flag,
    get_label,
    log_ignored,
    parse_int,
    parse_xml,
)
from dronevision.dataset.records import BadRecord as _Bad
from dronevision.dataset.records import Issues, SourceImage
from dronevision.errors import DroneVisionError


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
    n_frames = parse_int((size.text or "").strip(), "task size")
    original = task.find("original_size") if task is not None else None
    if original is None:
        return n_frames, None
    texts = [original.findtext(key) for key in ("width", "height")]
    if None in texts:
        raise _Bad("bad_format", "<original_size> needs <width> and <height>")
    w, h = (parse_int(str(text).strip(), f"original_size {key}", lo=1) for text, key in zip(texts, ("width", "height")))
    return n_frames, (w, h)


def _read_track(node: ET.Element, *, n_frames: int, issues: Issues, where: str) -> list[TrackBox]:
    """The usable boxes of one ``<track>``; bad boxes are reported and skipped."""
    boxes: dict[int, TrackBox] = {}
    for index, child in enumerate(node.findall("box")):
        try:
            frame = parse_int(get_attr(child, "frame", "box"), "frame", lo=-INT64_MAX)
            if not 0 <= frame < n_frames:
                raise _Bad("frame_out_of_range", f"frame {frame} is outside the task's 0..{n_frames - 1}")
            if frame in boxes:
                raise _Bad("bad_format", f"a second box for frame {frame}")
            keyframe, outside = get_flag(child, "keyframe", True), get_flag(child, "outside", False)
            boxes[frame] = (frame, keyframe, outside, get_flag(child, "occluded", False), box_xyxy(child))
        except _Bad as bad:
            issues.report(bad.kind, f"{where} box {index}", bad.message)
    return list(boxes.values())


def video_from_root(
    root: ET.Element, *, frames: Sequence[Path], issues: Issues, where: str, sequence: str, frame_stride: int
) -> list[SourceImage]:
    """The tracks of a CVAT for video ``root``: one record per kept frame (every ``frame_stride``-th of ``frames``)."""
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
            target = parse_int(get_attr(node, "id", "track"), "track id")
            label = get_label(node, "track")
            if target in seen:
                raise _Bad("bad_format", f"track id {target} is used twice")
        except _Bad as bad:
            issues.report(bad.kind, track_where, bad.message)
            continue
        seen.add(target)
        shapes, shape_frames = _sorted_shapes(_read_track(node, n_frames=n_frames, issues=issues, where=track_where))
        if shapes:
            tracks.append((target, label, shapes, shape_frames))
    log_ignored(ignored, where)
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
    root = parse_xml(text, where=where)
    return video_from_root(
        root, frames=frames, issues=issues, where=where, sequence=sequence, frame_stride=frame_stride
    )
