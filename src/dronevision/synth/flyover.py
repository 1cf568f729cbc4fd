"""Flyover videos: a virtual camera over a mosaic of real aerial images, with exact per-frame ground truth."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from dronevision.errors import DroneVisionError

log = logging.getLogger(__name__)

# --- synthetic flyovers: a virtual camera over a mosaic of real aerial images -----------------------------------
#
# Coordinates: boxes and affine matrices use continuous pixel coordinates, where pixel ``i`` spans ``[i, i + 1)``,
# so a box ``[0, 0, 1, 1]`` is exactly the top-left pixel. ``cv2.warpAffine`` samples at pixel centres;
# ``warp_frame`` converts, so the ground truth is exact to sub-pixel precision.

FLYOVER_CATEGORY = 4  # VisDrone "car"
MIN_VISIBLE = 0.5
MIN_SIZE_PX = 2.0
# paint_boxes: saturated BGR colours, track id k gets PAINT_PALETTE[k % 6]
PAINT_PALETTE = ((255, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 0), (0, 255, 0), (0, 0, 255))


def _pick_images(splits: dict[str, tuple[Path, ...]], n: int, seed: int) -> list[Path]:
    """``n`` images, deterministic in ``seed``: unaugmented val/test images first, then train."""
    rng = np.random.default_rng(seed)
    first = [p for split in ("val", "test") for p in splits.get(split, ())]
    rest = list(splits.get("train", ()))
    ordered = [first[i] for i in rng.permutation(len(first))] + [rest[i] for i in rng.permutation(len(rest))]
    if len(ordered) < n:
        raise DroneVisionError(f"a mosaic of {n} images needs {n} images, the dataset has {len(ordered)}")
    return ordered[:n]


def aerial_mosaic(dataset_dir: Path, *, grid: tuple[int, int] = (3, 3), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Tile ``grid`` = ``(columns, rows)`` real aerial images of a YOLO dataset into one large canvas.

    Images come from ``val`` and ``test`` first (unaugmented in the bundled ``aerial-cars``), shuffled with
    ``seed``; all tiles take the size of the first one. Every labelled box becomes one track (id = row index).

    Args:
        dataset_dir: a YOLO dataset (``data.yaml``, or a folder holding one), e.g. ``data/samples/aerial-cars``.
        grid: ``(columns, rows)`` of tiles.
        seed: picks the images.

    Returns:
        The BGR canvas ``(H, W, 3)`` and the ``(N, 4)`` float64 ``xyxy`` boxes in canvas pixels.
    """
    import cv2

    from dronevision.dataset.yolo import label_path, load_yolo_dataset, parse_label_lines

    cols, rows = grid
    if cols < 1 or rows < 1:
        raise ValueError(f"grid must be at least (1, 1), got {grid}")
    dataset = load_yolo_dataset(dataset_dir)
    images = _pick_images(dataset.splits, cols * rows, seed)
    tiles, boxes = [], []
    tile_wh: tuple[int, int] | None = None
    for k, path in enumerate(images):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise DroneVisionError(f"{path}: cannot read this image")
        if tile_wh is None:
            tile_wh = (image.shape[1], image.shape[0])
        elif (image.shape[1], image.shape[0]) != tile_wh:
            image = cv2.resize(image, tile_wh, interpolation=cv2.INTER_AREA)
        tiles.append(image)
        tw, th = tile_wh
        label = label_path(path)
        lines = label.read_text().splitlines() if label.is_file() else []
        parsed = parse_label_lines(lines, n_classes=len(dataset.names), source=label)
        cxcywh = np.asarray([row[1:] for row in parsed], dtype=np.float64).reshape(-1, 4) * [tw, th, tw, th]
        xyxy = np.concatenate([cxcywh[:, :2] - cxcywh[:, 2:] / 2, cxcywh[:, :2] + cxcywh[:, 2:] / 2], axis=1)
        xyxy = np.clip(xyxy, 0, [tw, th, tw, th])
        xyxy = xyxy[((xyxy[:, 2:] - xyxy[:, :2]) >= 1).all(axis=1)]
        boxes.append(xyxy + np.tile([(k % cols) * tw, (k // cols) * th], 2))
    canvas = np.concatenate([np.concatenate(tiles[r * cols : (r + 1) * cols], axis=1) for r in range(rows)], axis=0)
    xyxy = np.concatenate(boxes, axis=0) if boxes else np.zeros((0, 4))
    log.info("mosaic %dx%d from %d images, %d boxes", canvas.shape[1], canvas.shape[0], len(images), len(xyxy))
    return canvas, xyxy


def camera_path(
    n_frames: int,
    *,
    canvas_wh: tuple[int, int],
    frame_wh: tuple[int, int],
    seed: int,
    zoom: tuple[float, float] = (1.0, 1.3),
    max_rotation_deg: float = 5.0,
) -> np.ndarray:
    """Affine matrices of a smooth virtual camera flying over a canvas, one per frame.

    The camera pans from near one corner region of the canvas to the opposite one (eased start and stop), zooms
    slowly between ``zoom[0]`` and ``zoom[1]`` (frame pixels per canvas pixel; in or out, by ``seed``) and rolls
    sinusoidally within ``±max_rotation_deg``. The view never leaves the canvas. When the canvas is too small for
    the frame at ``zoom[0]``, all zooms are scaled up by the same factor so that it fits.

    Args:
        n_frames: number of frames (at least 1).
        canvas_wh: canvas size in pixels.
        frame_wh: frame size in pixels.
        seed: picks the pan direction, zoom direction and rotation phase.
        zoom: the zoom range.
        max_rotation_deg: the largest rotation.

    Returns:
        ``(n_frames, 2, 3)`` float64 matrices mapping canvas pixels to frame pixels.

    Examples:
        >>> path = camera_path(5, canvas_wh=(800, 600), frame_wh=(160, 90), seed=0)
        >>> path.shape
        (5, 2, 3)
        >>> corners = np.array([[0, 0, 1], [160, 0, 1], [0, 90, 1], [160, 90, 1]], dtype=float)
        >>> inside = []
        >>> for m in path:
        ...     back = corners @ np.linalg.inv(np.vstack([m, [0, 0, 1]])).T
        ...     inside.append(bool((back[:, 0] >= 0).all() and (back[:, 0] <= 800).all()
        ...                        and (back[:, 1] >= 0).all() and (back[:, 1] <= 600).all()))
        >>> all(inside)
        True
        >>> still = camera_path(2, canvas_wh=(800, 600), frame_wh=(160, 90), seed=0, zoom=(1, 1), max_rotation_deg=0)
        >>> still[:, :, :2].tolist()  # no rotation, no zoom: a pure pan
        [[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]]
    """
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    if not 0 < zoom[0] <= zoom[1]:
        raise ValueError(f"zoom must be (low, high) with 0 < low <= high, got {zoom}")
    if not 0 <= max_rotation_deg < 45:
        raise ValueError(f"max_rotation_deg must be in [0, 45), got {max_rotation_deg}")
    cw, ch = canvas_wh
    fw, fh = frame_wh
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, n_frames) if n_frames > 1 else np.zeros(1)
    ease = (1 - np.cos(np.pi * t)) / 2
    z = zoom[0] + (zoom[1] - zoom[0]) * (ease if rng.random() < 0.5 else 1 - ease)
    theta = np.deg2rad(max_rotation_deg) * np.sin(2 * np.pi * rng.uniform(0.5, 1.5) * t + rng.uniform(0, 2 * np.pi))
    cos, sin = np.abs(np.cos(theta)), np.abs(np.sin(theta))
    # canvas extent of the rotated view at scale 1 (before dividing by the zoom)
    span_x, span_y = fw * cos + fh * sin, fw * sin + fh * cos
    need = float(np.max(np.maximum(span_x / cw, span_y / ch) / z))
    scale = z * (1.0 if need <= 1 else need * 1.2)
    half_x, half_y = float(np.max(span_x / scale)) / 2, float(np.max(span_y / scale)) / 2

    def pan(lo: float, hi: float) -> np.ndarray:
        a, b = lo + rng.uniform(0.0, 0.2) * (hi - lo), lo + rng.uniform(0.8, 1.0) * (hi - lo)
        if rng.random() < 0.5:
            a, b = b, a
        return np.clip(a + (b - a) * ease, lo, hi)

    cx, cy = pan(half_x, cw - half_x), pan(half_y, ch - half_y)
    out = np.zeros((n_frames, 2, 3))
    sin_scaled = scale * np.sin(theta) + 0.0  # 0.0 - x and x + 0.0: no -0.0 in the matrices
    out[:, 0, 0] = out[:, 1, 1] = scale * np.cos(theta)
    out[:, 0, 1] = 0.0 - sin_scaled
    out[:, 1, 0] = sin_scaled
    out[:, 0, 2] = fw / 2 - (out[:, 0, 0] * cx + out[:, 0, 1] * cy)
    out[:, 1, 2] = fh / 2 - (out[:, 1, 0] * cx + out[:, 1, 1] * cy)
    return out


def project_boxes(xyxy: np.ndarray, affine: np.ndarray, frame_wh: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Project boxes through an affine map: the axis-aligned box of each box's 4 transformed corners, clipped.

    Args:
        xyxy: ``(N, 4)`` boxes in source pixels.
        affine: ``(2, 3)`` matrix mapping source pixels to frame pixels.
        frame_wh: frame size; boxes are clipped to ``[0, w] x [0, h]``.

    Returns:
        The ``(N, 4)`` clipped boxes and the ``(N,)`` visible fraction of each (clipped area / unclipped area; 0 for
        an empty box).

    Examples:
        >>> boxes = np.array([[10.0, 10.0, 20.0, 30.0], [90.0, 0.0, 110.0, 10.0]])
        >>> xyxy, visible = project_boxes(boxes, np.array([[1.0, 0, 5], [0, 1, -5]]), (100, 50))
        >>> xyxy.tolist(), visible.tolist()
        ([[15.0, 5.0, 25.0, 25.0], [95.0, 0.0, 100.0, 5.0]], [1.0, 0.125])
        >>> project_boxes(np.zeros((0, 4)), np.eye(2, 3), (100, 50))[0].shape
        (0, 4)
    """
    xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    affine = np.asarray(affine, dtype=np.float64)
    corners = xyxy[:, [[0, 1], [2, 1], [0, 3], [2, 3]]]  # (N, 4 corners, 2)
    points = corners @ affine[:, :2].T + affine[:, 2]
    boxes = np.concatenate([points.min(axis=1), points.max(axis=1)], axis=1)
    w, h = frame_wh
    clipped = np.clip(boxes, 0, [w, h, w, h])
    area = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    clipped_area = np.prod(clipped[:, 2:] - clipped[:, :2], axis=1)
    visible = np.divide(clipped_area, area, out=np.zeros_like(area), where=area > 0)
    return clipped, visible


def flyover_lines(frame: int, xyxy: np.ndarray, visible: np.ndarray, *, min_visible: float = MIN_VISIBLE) -> list[str]:
    """VisDrone-VID lines of one frame: track id = box index + 1, category car, truncation 1 when partly visible.

    Boxes less than ``min_visible`` visible or under 2 px wide or high are left out.

    Examples:
        >>> flyover_lines(3, np.array([[1.0, 2.0, 11.5, 7.0], [0, 0, 1, 9], [0, 0, 5, 5]]), np.array([1.0, 1.0, 0.6]))
        ['3,1,1.00,2.00,10.50,5.00,1,4,0,0', '3,3,0.00,0.00,5.00,5.00,1,4,1,0']
    """
    size = xyxy[:, 2:] - xyxy[:, :2]
    keep = (visible >= min_visible) & (size >= MIN_SIZE_PX).all(axis=1)
    return [
        f"{frame},{i + 1},{x1:.2f},{y1:.2f},{w:.2f},{h:.2f},1,{FLYOVER_CATEGORY},{int(visible[i] < 1 - 1e-9)},0"
        for i in np.flatnonzero(keep).tolist()
        for (x1, y1), (w, h) in [(xyxy[i, :2], size[i])]
    ]


def _pixel_centre_affine(affine: np.ndarray) -> np.ndarray:
    """The same map for ``cv2.warpAffine``, whose pixel ``i`` is the point ``i`` (not the interval ``[i, i+1)``).

    Examples:
        >>> _pixel_centre_affine(np.array([[2.0, 0, 0], [0, 2, 0]])).tolist()
        [[2.0, 0.0, 0.5], [0.0, 2.0, 0.5]]
    """
    out = np.array(affine, dtype=np.float64)
    out[:, 2] += out[:, :2] @ [0.5, 0.5] - 0.5
    return out


def warp_frame(canvas: np.ndarray, affine: np.ndarray, frame_wh: tuple[int, int]) -> np.ndarray:
    """Render one frame of ``canvas`` through ``affine`` (canvas to frame pixels, as from :func:`camera_path`).

    Bilinear; the half-pixel convention is converted so that :func:`project_boxes` of the same ``affine`` is exact.
    Outside the canvas (at most a fraction of a pixel on a camera path) the border is mirrored, never black.
    """
    import cv2

    return cv2.warpAffine(
        canvas, _pixel_centre_affine(affine), tuple(frame_wh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
    )


def render_flyover(
    out_dir: Path,
    *,
    dataset_dir: Path,
    n_frames: int = 120,
    fps: float = 10.0,
    frame_wh: tuple[int, int] = (640, 360),
    blur: float = 0.0,
    noise: float = 0.0,
    seed: int = 0,
    codec: str = "libx264",
    name: str = "flyover",
    grid: tuple[int, int] = (3, 3),
    write_sequence: bool = False,
    paint_boxes: bool = False,
) -> dict[str, Any]:
    """Render a virtual flyover over a mosaic of real aerial images, with exact VisDrone-VID ground truth.

    Writes ``out_dir/<name>.mp4`` (yuv420p, constant ``fps``; libx264 at crf 18) and
    ``out_dir/annotations/<name>.txt`` (``<frame>,<track>,<left>,<top>,<w>,<h>,1,4,<truncation>,0``, frame 1 = the
    first decoded frame). With ``write_sequence``, the same frames also go to ``out_dir/sequences/<name>/0000001.jpg``
    and on, which makes ``out_dir`` a VisDrone-VID folder.

    Args:
        out_dir: output folder (created).
        dataset_dir: the YOLO dataset the mosaic is built from.
        n_frames: number of frames.
        fps: frame rate.
        frame_wh: frame size (even numbers, for yuv420p).
        blur: Gaussian blur sigma in pixels (0: none).
        noise: Gaussian noise standard deviation in grey levels (0: none).
        seed: picks the images, the camera path and the noise.
        codec: PyAV/FFmpeg encoder name.
        name: file stem of the video, annotation file and sequence folder.
        grid: ``(columns, rows)`` of the mosaic.
        write_sequence: also write the frames as JPEG files.
        paint_boxes: debug: fill every ground-truth box (snapped to whole pixels) in the canvas with a pure colour,
            ``PAINT_PALETTE[track_id % 6]``, to check the ground truth against the decoded video.

    Returns:
        ``video``, ``annotations`` and ``sequence`` (or None) paths, ``n_frames``, ``fps``, ``frame_wh``, ``n_tracks``
        (track ids that appear at least once) and ``n_boxes``.
    """
    from fractions import Fraction

    import av
    import cv2

    try:
        av.codec.Codec(codec, "w")
    except Exception:  # PyAV raises UnknownCodecError or ValueError depending on the version
        raise DroneVisionError(f"codec {codec!r} has no encoder in this PyAV/FFmpeg build") from None
    w, h = frame_wh
    if n_frames < 1:
        raise DroneVisionError(f"n_frames must be >= 1, got {n_frames}")
    if fps <= 0:
        raise DroneVisionError(f"fps must be > 0, got {fps}")
    if w < 2 or h < 2 or w % 2 or h % 2:
        raise DroneVisionError(f"frame width and height must be even and >= 2 (yuv420p), got {w}x{h}")
    if blur < 0 or noise < 0:
        raise DroneVisionError(f"blur and noise must be >= 0, got blur={blur} noise={noise}")
    canvas, xyxy = aerial_mosaic(dataset_dir, grid=grid, seed=seed)
    if paint_boxes:
        xyxy = np.round(xyxy)
        for index, (x1, y1, x2, y2) in enumerate(xyxy.astype(int).tolist()):
            canvas[y1:y2, x1:x2] = PAINT_PALETTE[(index + 1) % len(PAINT_PALETTE)]
    path = camera_path(n_frames, canvas_wh=(canvas.shape[1], canvas.shape[0]), frame_wh=frame_wh, seed=seed)
    out_dir = Path(out_dir)
    (out_dir / "annotations").mkdir(parents=True, exist_ok=True)
    video, annotations = out_dir / f"{name}.mp4", out_dir / "annotations" / f"{name}.txt"
    sequence = out_dir / "sequences" / name if write_sequence else None
    if sequence is not None:
        sequence.mkdir(parents=True, exist_ok=True)
    noise_rng = np.random.default_rng([seed, 1])
    rate = Fraction(fps).limit_denominator(1001)
    lines: list[str] = []
    with av.open(str(video), mode="w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.time_base = 1 / rate
        if codec in ("libx264", "libx265"):
            stream.options = {"crf": "18"}
        for index, affine in enumerate(path):
            frame = warp_frame(canvas, affine, frame_wh)
            if blur > 0:
                frame = cv2.GaussianBlur(frame, (0, 0), sigmaX=blur)
            if noise > 0:
                frame = np.clip(frame + noise_rng.normal(0.0, noise, frame.shape), 0, 255).astype(np.uint8)
            if sequence is not None:
                cv2.imwrite(str(sequence / f"{index + 1:07d}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
            lines += flyover_lines(index + 1, *project_boxes(xyxy, affine, frame_wh))
            av_frame = av.VideoFrame.from_ndarray(frame, format="bgr24").reformat(format="yuv420p")
            av_frame.pts, av_frame.time_base = index, 1 / rate
            container.mux(stream.encode(av_frame))
        container.mux(stream.encode(None))
    annotations.write_text("".join(f"{line}\n" for line in lines))
    tracks = {line.split(",", 2)[1] for line in lines}
    log.info("flyover %s: %d frames, %d boxes, %d tracks", video, n_frames, len(lines), len(tracks))
    return {
        "video": video,
        "annotations": annotations,
        "sequence": sequence,
        "n_frames": n_frames,
        "fps": fps,
        "frame_wh": (w, h),
        "n_tracks": len(tracks),
        "n_boxes": len(lines),
    }


# --- command -----------------------------------------------------------------------------------------------------
