"""Synthetic flyovers: box projection, the virtual camera, the rendered video and its ground truth."""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from dronevision.dataset.records import Issues
from dronevision.dataset.visdrone import read_visdrone_vid
from dronevision.synth import (
    PAINT_PALETTE,
    aerial_mosaic,
    camera_path,
    main,
    project_boxes,
    render_flyover,
    warp_frame,
)

from .conftest import BUNDLED

ROT90 = np.array([[0.0, -1.0, 100.0], [1.0, 0.0, 0.0]])  # (x, y) -> (100 - y, x)
C45 = np.sqrt(0.5)
ROT45 = np.array([[C45, -C45, 50.0], [C45, C45, 50.0]])


@pytest.mark.parametrize(
    ("xyxy", "affine", "expected", "visible"),
    [
        ([[10, 20, 30, 60]], np.eye(2, 3), [[10, 20, 30, 60]], [1.0]),  # identity
        ([[10, 20, 30, 60]], [[1, 0, 5], [0, 1, -7]], [[15, 13, 35, 53]], [1.0]),  # translation
        ([[10, 20, 30, 60]], [[2, 0, 0], [0, 0.5, 0]], [[20, 10, 60, 30]], [1.0]),  # anisotropic scale
        ([[10, 20, 30, 60]], ROT90, [[40, 10, 80, 30]], [1.0]),  # 90 degrees: w and h swap
        ([[0, 0, 10, 10]], ROT45, [[50 - 10 * C45, 50, 50 + 10 * C45, 50 + 20 * C45]], [1.0]),  # AABB of a diamond
        ([[90, 40, 110, 60]], np.eye(2, 3), [[90, 40, 100, 60]], [0.5]),  # right edge
        ([[-5, -5, 5, 15]], np.eye(2, 3), [[0, 0, 5, 15]], [0.375]),  # top-left corner
        ([[10, 10, 20, 20]], [[1, 0, -15], [0, 1, 0]], [[0, 10, 5, 20]], [0.5]),  # pushed out by the translation
        ([[200, 200, 210, 210]], np.eye(2, 3), [[100, 100, 100, 100]], [0.0]),  # fully outside
        ([[5, 5, 5, 9]], np.eye(2, 3), [[5, 5, 5, 9]], [0.0]),  # zero area
        (np.zeros((0, 4)), np.eye(2, 3), np.zeros((0, 4)), []),  # no boxes
    ],
)
def test_project_boxes(xyxy: list, affine: np.ndarray, expected: list, visible: list) -> None:
    boxes, fraction = project_boxes(np.asarray(xyxy, float), np.asarray(affine, float), (100, 100))
    np.testing.assert_allclose(boxes, np.asarray(expected, float).reshape(-1, 4), atol=1e-9)
    np.testing.assert_allclose(fraction, visible, atol=1e-9)


def _inverse(affine: np.ndarray) -> np.ndarray:
    return np.linalg.inv(np.vstack([affine, [0.0, 0.0, 1.0]]))[:2]


@pytest.mark.parametrize(
    ("n_frames", "canvas_wh", "frame_wh", "seed", "zoom", "max_rotation_deg"),
    [
        (120, (1248, 1248), (640, 360), 0, (1.0, 1.3), 5.0),
        (120, (1248, 1248), (640, 360), 1, (1.0, 1.3), 5.0),
        (12, (832, 832), (160, 96), 2, (1.0, 1.3), 5.0),
        (50, (416, 416), (416, 234), 3, (1.0, 1.3), 10.0),  # the frame is as wide as the canvas: upscaled
        (50, (400, 300), (1920, 1080), 4, (1.0, 2.0), 20.0),  # the frame is much larger than the canvas
        (1, (800, 600), (160, 90), 5, (1.0, 1.0), 0.0),  # one frame
    ],
)
def test_camera_path_stays_inside_the_canvas(
    n_frames: int,
    canvas_wh: tuple[int, int],
    frame_wh: tuple[int, int],
    seed: int,
    zoom: tuple[float, float],
    max_rotation_deg: float,
) -> None:
    path = camera_path(
        n_frames, canvas_wh=canvas_wh, frame_wh=frame_wh, seed=seed, zoom=zoom, max_rotation_deg=max_rotation_deg
    )
    assert path.shape == (n_frames, 2, 3)
    fw, fh = frame_wh
    corners = np.array([[0, 0, 1], [fw, 0, 1], [0, fh, 1], [fw, fh, 1]], dtype=float)
    for affine in path:
        back = corners @ _inverse(affine).T
        assert (back >= -1e-6).all(), back
        assert (back <= np.array(canvas_wh) + 1e-6).all(), back
    angle = np.degrees(np.arctan2(path[:, 1, 0], path[:, 0, 0]))
    assert (np.abs(angle) <= max_rotation_deg + 1e-9).all()
    scale = np.sqrt(np.abs(np.linalg.det(path[:, :, :2])))
    assert scale.max() / scale.min() <= zoom[1] / zoom[0] + 1e-9
    if fw * 1.2 < canvas_wh[0] and fh * 1.2 < canvas_wh[1]:  # room enough: zoom is used as given
        assert zoom[0] - 1e-9 <= scale.min() and scale.max() <= zoom[1] + 1e-9
    np.testing.assert_array_equal(path, camera_path(n_frames, canvas_wh=canvas_wh, frame_wh=frame_wh, seed=seed,
                                                    zoom=zoom, max_rotation_deg=max_rotation_deg))  # fmt: skip


def test_camera_path_is_smooth_and_pans() -> None:
    path = camera_path(100, canvas_wh=(1248, 1248), frame_wh=(640, 360), seed=0)
    centres = np.stack([_inverse(a) @ [320.0, 180.0, 1.0] for a in path])  # canvas point under the frame centre
    steps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    assert np.linalg.norm(centres[-1] - centres[0]) > 300  # it goes somewhere
    assert steps.max() <= 1.6 * steps.mean()  # eased pan: peak speed pi/2 times the mean
    assert np.abs(np.diff(steps)).max() < 0.1 * steps.max()  # no jerks
    assert not np.array_equal(path, camera_path(100, canvas_wh=(1248, 1248), frame_wh=(640, 360), seed=1))


@pytest.mark.parametrize("degrees", [0.0, 3.0, -4.0])
@pytest.mark.parametrize("scale", [1.0, 1.3, 2.5])
def test_warp_frame_agrees_with_project_boxes_to_subpixel(degrees: float, scale: float) -> None:
    """The intensity centroid of a warped rectangle is the centre of its projected box (off by 0.15-0.75 px without
    the half-pixel conversion)."""
    canvas = np.zeros((300, 400), np.float32)
    canvas[80:100, 100:140] = 1.0
    theta = np.radians(degrees)
    affine = scale * np.array([[np.cos(theta), -np.sin(theta), 0.0], [np.sin(theta), np.cos(theta), 0.0]])
    affine[:, 2] = [100.3, 59.6] - affine[:, :2] @ [120.0, 90.0]
    image = warp_frame(canvas, affine, (200, 120))
    (box,), (visible,) = project_boxes(np.array([[100.0, 80.0, 140.0, 100.0]]), affine, (200, 120))
    ys, xs = np.mgrid[0:120, 0:200] + 0.5
    centroid = [(image * xs).sum() / image.sum(), (image * ys).sum() / image.sum()]
    assert visible == 1.0
    np.testing.assert_allclose(centroid, (box[:2] + box[2:]) / 2, atol=0.1)  # sampling phase: < 0.05
    assert image.sum() == pytest.approx(40 * 20 * scale**2, rel=1e-3)
    if degrees == 0:  # half-maximum edges are the box edges
        cols, rows = np.flatnonzero(image.max(axis=0) >= 0.5), np.flatnonzero(image.max(axis=1) >= 0.5)
        np.testing.assert_allclose([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], box, atol=0.5)


def test_aerial_mosaic_boxes_fall_on_tiles() -> None:
    canvas, xyxy = aerial_mosaic(BUNDLED, grid=(3, 2), seed=0)
    assert canvas.shape == (2 * 416, 3 * 416, 3) and canvas.dtype == np.uint8
    assert len(xyxy) > 20 and xyxy.shape[1] == 4
    assert (xyxy[:, :2] >= 0).all() and (xyxy[:, 2] <= 3 * 416).all() and (xyxy[:, 3] <= 2 * 416).all()
    assert (xyxy[:, 2:] > xyxy[:, :2]).all()
    again, same = aerial_mosaic(BUNDLED, grid=(3, 2), seed=0)
    np.testing.assert_array_equal(canvas, again)
    np.testing.assert_array_equal(xyxy, same)
    assert not np.array_equal(canvas, aerial_mosaic(BUNDLED, grid=(3, 2), seed=1)[0])


def _read_annotations(path: Path) -> dict[int, dict[int, tuple[np.ndarray, int]]]:
    """frame -> track id -> (xyxy, truncation)."""
    out: dict[int, dict[int, tuple[np.ndarray, int]]] = defaultdict(dict)
    for line in path.read_text().splitlines():
        f = line.split(",")
        assert len(f) == 10 and f[6:8] == ["1", "4"] and f[9] == "0", line
        x, y, w, h = map(float, f[2:6])
        out[int(f[0])][int(f[1])] = (np.array([x, y, x + w, y + h]), int(f[8]))
    return out


def _decode(video: Path) -> tuple[list[np.ndarray], list[float], float]:
    import av

    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        rate = float(stream.average_rate)
    return [f.to_ndarray(format="bgr24") for f in frames], [float(f.time) for f in frames], rate


@pytest.mark.parametrize("fps", [10.0, 7.5])
def test_render_flyover_video_and_annotations(tmp_path: Path, fps: float) -> None:
    result = render_flyover(tmp_path, dataset_dir=BUNDLED, n_frames=12, fps=fps, frame_wh=(160, 96), grid=(2, 2))
    assert result["video"] == tmp_path / "flyover.mp4" and result["sequence"] is None
    assert (result["n_frames"], result["fps"], result["frame_wh"]) == (12, fps, (160, 96))
    frames, times, rate = _decode(result["video"])
    assert len(frames) == 12 and rate == pytest.approx(fps)
    assert times == pytest.approx([i / fps for i in range(12)], abs=1e-3)
    assert frames[0].shape == (96, 160, 3)
    assert min(f.mean() for f in frames) > 20  # real imagery everywhere, no black frames
    gt = _read_annotations(result["annotations"])
    assert set(gt) <= set(range(1, 13)) and len({t for boxes in gt.values() for t in boxes}) == result["n_tracks"] > 0
    for boxes in gt.values():
        for xyxy, truncation in boxes.values():
            assert (xyxy >= 0).all() and xyxy[2] <= 160 and xyxy[3] <= 96
            assert (xyxy[2:] - xyxy[:2] >= 2).all()
            touches = xyxy[0] <= 0 or xyxy[1] <= 0 or xyxy[2] >= 160 or xyxy[3] >= 96
            assert truncation in (0, 1) and (truncation == 0 or touches)


def _isolated(xyxy: np.ndarray, gap: float) -> set[int]:
    """Track ids of boxes with no other box within ``gap`` pixels."""
    grown = xyxy + [-gap, -gap, gap, gap]
    lo = np.maximum(grown[:, None, :2], xyxy[None, :, :2])
    hi = np.minimum(grown[:, None, 2:], xyxy[None, :, 2:])
    overlaps = (hi > lo).all(axis=2)
    np.fill_diagonal(overlaps, False)
    return {i + 1 for i in np.flatnonzero(~overlaps.any(axis=1)).tolist()}


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.prod(np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None))
    return float(inter / (np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter))


def test_ground_truth_covers_painted_boxes_in_the_decoded_video(tmp_path: Path) -> None:
    """Boxes painted into the canvas (colour by track id) sit under their annotations in every decoded frame."""
    result = render_flyover(
        tmp_path, dataset_dir=BUNDLED, n_frames=12, frame_wh=(320, 192), grid=(2, 2), paint_boxes=True
    )
    isolated = _isolated(np.round(aerial_mosaic(BUNDLED, grid=(2, 2), seed=0)[1]), gap=10)
    frames, _, _ = _decode(result["video"])
    palette = np.array(PAINT_PALETTE, dtype=float)
    gt = _read_annotations(result["annotations"])
    checked, seen_in = 0, defaultdict(int)
    for number, boxes in gt.items():
        image = frames[number - 1].astype(float)
        for track, (xyxy, truncation) in boxes.items():
            if truncation or track not in isolated:
                continue
            colour = palette[track % len(palette)]
            x1, y1 = np.floor(np.maximum(xyxy[:2] - 4, 0)).astype(int)
            x2, y2 = np.ceil(np.minimum(xyxy[2:] + 4, [320, 192])).astype(int)
            window = image[y1:y2, x1:x2]
            mask = np.linalg.norm(window - colour, axis=2) < 120
            ys, xs = np.nonzero(mask)
            assert len(xs), f"frame {number} track {track}: no painted pixels under the box"
            found = np.array([xs.min() + x1, ys.min() + y1, xs.max() + x1 + 1, ys.max() + y1 + 1], dtype=float)
            assert _iou(found, xyxy) > 0.7, (number, track, found, xyxy)
            cx, cy = ((xyxy[:2] + xyxy[2:]) / 2).astype(int)
            nearest = np.linalg.norm(palette - image[cy, cx], axis=1).argmin()
            assert nearest == track % len(palette), f"frame {number}: track {track} sits on another track's colour"
            checked += 1
            seen_in[track] += 1
    assert checked >= 20 and max(seen_in.values()) >= 3  # many boxes, some followed over several frames


def test_ground_truth_track_ids_follow_the_camera(tmp_path: Path) -> None:
    """Between frames, each track moves like its neighbours (the camera), so ids never jump between cars."""
    result = render_flyover(tmp_path, dataset_dir=BUNDLED, n_frames=12, frame_wh=(320, 192), grid=(2, 2))
    gt = _read_annotations(result["annotations"])
    pairs = 0
    for number in range(1, 12):
        now, nxt = gt.get(number, {}), gt.get(number + 1, {})
        common = sorted(t for t in set(now) & set(nxt) if not now[t][1] and not nxt[t][1])
        if len(common) < 3:
            continue
        centre = {t: ((now[t][0][:2] + now[t][0][2:]) / 2, (nxt[t][0][:2] + nxt[t][0][2:]) / 2) for t in common}
        shift = np.median([b - a for a, b in centre.values()], axis=0)
        for t, (a, b) in centre.items():
            assert np.linalg.norm(b - (a + shift)) < 8, f"track {t} jumps between frames {number} and {number + 1}"
            pairs += 1
    assert pairs >= 20


def test_write_sequence_is_a_visdrone_vid_folder(tmp_path: Path) -> None:
    result = render_flyover(
        tmp_path, dataset_dir=BUNDLED, n_frames=6, frame_wh=(160, 96), grid=(2, 2), write_sequence=True, name="fly"
    )
    assert result["sequence"] == tmp_path / "sequences" / "fly"
    issues = Issues()
    records = list(read_visdrone_vid(tmp_path, issues=issues))
    assert not issues.counts
    assert [r.name for r in records] == [f"fly_{i:07d}" for i in range(1, 7)]
    assert all(r.group == "fly" and r.image.is_file() for r in records)
    gt = _read_annotations(result["annotations"])
    for number, record in enumerate(records, start=1):
        expected = gt.get(number, {})
        assert list(record.attrs["target_id"]) == list(expected)
        np.testing.assert_allclose(record.xyxy, np.array([b for b, _ in expected.values()]).reshape(-1, 4))
        assert list(record.attrs["truncation"]) == [t for _, t in expected.values()]
        assert set(record.labels) <= {"car"}
    frames, _, _ = _decode(result["video"])
    import cv2

    jpeg = cv2.imread(str(records[0].image)).astype(float)
    assert np.abs(jpeg - frames[0]).mean() < 6  # the same frames as the video, up to compression


def test_command_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv, message in [
        ([f"out_dir={tmp_path}", f"dataset_dir={tmp_path / 'missing'}"], "dataset not found"),
        (["n_frames=3"], "out_dir=<folder> is required"),
        ([f"out_dir={tmp_path}", "frames=3"], "unknown argument 'frames=3'"),
        ([f"out_dir={tmp_path}", "n_frames=many"], "n_frames: bad value 'many'"),
        ([f"out_dir={tmp_path}", "width=161"], "must be even"),
        ([f"out_dir={tmp_path}", "codec=nope264"], "codec 'nope264'"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    main(["--help"])
    assert capsys.readouterr().out.startswith("usage: python -m dronevision.synth out_dir=")


def test_command_renders_a_flyover(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "dronevision.synth", f"out_dir={out}", "n_frames=3", "width=64", "height=48",
         "fps=5", "blur=1", "noise=3", "sequence=true"],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("\n") == 1 and proc.stdout.startswith("dronevision synth: 3 frames 64x48 @ 5 fps")
    assert (out / "flyover.mp4").is_file() and (out / "annotations" / "flyover.txt").is_file()
    assert sorted(p.name for p in (out / "sequences" / "flyover").iterdir()) == [f"{i:07d}.jpg" for i in (1, 2, 3)]
    assert (out / "summary.json").is_file()
