"""Decode videos with PyAV (threaded, one frame in memory at a time) and read image-sequence folders as videos."""

from __future__ import annotations

import glob
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dronevision.dataset.yolo import IMAGE_SUFFIXES
from dronevision.errors import DroneVisionError, first_line

VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".avi", ".ts", ".m2ts", ".mts", ".mov", ".webm", ".mpg", ".mpeg"})


class VideoError(Exception):
    """A video that cannot be read: recorded per video with a one-line reason, the other videos go on."""


class DecodeError(VideoError):
    """FFmpeg stopped decoding part-way (damaged or cut data); the frames before it were good."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"decoding failed ({reason})")
        self.reason = reason  # FFmpeg's words


@dataclass
class DecodedFrame:
    """One decoded frame; pixels are converted only when asked for."""

    index: int  # frame number in the video, 0-based
    time: float  # presentation time in seconds
    source: Any  # an av.VideoFrame or an image path
    _image: np.ndarray | None = field(default=None, repr=False)  # an image file's pixels, read once

    def bgr(self) -> np.ndarray:
        """Full-resolution BGR pixels."""
        if isinstance(self.source, Path):
            if self._image is None:
                import cv2

                self._image = cv2.imread(str(self.source), cv2.IMREAD_COLOR)
                if self._image is None:
                    raise VideoError(f"frame {self.source.name} cannot be read as an image")
            return self._image
        return self.source.to_ndarray(format="bgr24")

    def gray(self, width: int) -> np.ndarray:
        """Grey pixels scaled to ``width`` (aspect kept), for the filters."""
        if isinstance(self.source, Path):
            import cv2

            image = cv2.cvtColor(self.bgr(), cv2.COLOR_BGR2GRAY)
            h, w = image.shape
            return cv2.resize(image, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
        height = max(2, round(self.source.height * width / self.source.width))
        return self.source.reformat(width=width, height=height, format="gray").to_ndarray()


def find_inputs(spec: str) -> list[Path]:
    """Videos and image-sequence folders named by a file, a folder or a glob, sorted.

    A folder that holds images is one image sequence; otherwise its videos and its sub-folders of images count.
    """
    if any(c in spec for c in "*?["):
        paths = [Path(p) for p in sorted(glob.glob(spec))]
        if not paths:
            raise DroneVisionError(f"input '{spec}' matches no file")
        return paths
    path = Path(spec).expanduser()
    if not path.exists():
        raise DroneVisionError(f"input {path} does not exist")
    if path.is_file():
        return [path]
    if _is_sequence(path):
        return [path]
    found = [
        p
        for p in sorted(path.iterdir())
        if (p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES) or (p.is_dir() and _is_sequence(p))
    ]
    if not found:
        raise DroneVisionError(
            f"input folder {path} holds no videos ({', '.join(sorted(VIDEO_SUFFIXES))}) and no image sequences"
        )
    return found


def _is_sequence(folder: Path) -> bool:
    return folder.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir())


SKIP_FRAMES = {None: "DEFAULT", "nonref": "NONREF", "bidir": "BIDIR", "nonkey": "NONKEY"}


def is_still_image(format_name: str, n_frames: int | None) -> bool:
    """Whether FFmpeg read the file as a picture rather than footage: an image demuxer (``png_pipe``,
    ``jpeg_pipe``, ``image2``, ...), or a GIF of one frame. The file name's suffix plays no part.

    Examples:
        >>> is_still_image("png_pipe", 0), is_still_image("image2", 1), is_still_image("gif", 1)
        (True, True, True)
        >>> is_still_image("mov,mp4,m4a,3gp,3g2,mj2", 1), is_still_image("gif", 40)
        (False, False)
    """
    names = set(format_name.split(","))
    return "image2" in names or any(n.endswith("_pipe") for n in names) or ("gif" in names and (n_frames or 0) <= 1)


def check_start(start_s: float, duration_s: float | None) -> None:
    """Raise :class:`VideoError` when the window starts at or past the end of a video of known duration.

    Examples:
        >>> check_start(3.0, 10.0)
        >>> check_start(12.0, 10.0)
        Traceback (most recent call last):
        ...
        dronevision.sample.decode.VideoError: start_s=12 is past the end of the video (duration 10.0 s)
    """
    if duration_s and start_s > 0 and start_s >= duration_s:
        raise VideoError(f"start_s={start_s:g} is past the end of the video (duration {duration_s:.1f} s)")


def read_frames(
    path: Path,
    *,
    skip_frames: str | None = None,
    start_s: float = 0.0,
    end_s: float | None = None,
    threads: int = 0,
    image_fps: float = 30.0,
) -> tuple[dict[str, Any], Iterator[DecodedFrame]]:
    """Open a video (or image-sequence folder) and return its info and a lazy iterator of frames in the window.

    The info holds ``fps``, ``duration_s``, ``frames``, ``codec`` and ``size_hw`` (None where the container does
    not say, and for image sequences).

    ``skip_frames`` tells FFmpeg which frames not to decode at all: ``bidir`` (B-frames, which no I/P frame
    depends on), ``nonref`` (frames nothing refers to) or ``nonkey`` (everything but key frames).

    The iterator raises :class:`DecodeError` where FFmpeg stops decoding part-way; the frames before it are good.

    Raises:
        VideoError: the file is missing, empty, not a video (a still image, say), uses a codec FFmpeg cannot decode,
            or ``start_s`` is past its end.
    """
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        n = len(files)
        info = {"fps": image_fps, "duration_s": n / image_fps, "frames": n, "codec": "images", "size_hw": None}
        check_start(start_s, info["duration_s"])
        return info, _sequence_frames(files, image_fps, start_s, end_s)
    if not path.is_file():
        raise VideoError("file does not exist")
    if path.stat().st_size == 0:
        raise VideoError("empty file (0 bytes)")
    import av

    try:
        container = av.open(str(path))
    except av.error.FFmpegError as e:
        raise VideoError(f"not a readable video ({first_line(e, limit=None)})") from None
    if not container.streams.video:
        container.close()
        raise VideoError("no video stream")
    stream = container.streams.video[0]
    if is_still_image(container.format.name, stream.frames):
        container.close()
        raise VideoError(f"not a video: a single still image ({container.format.name})")
    try:
        decoder = stream.codec_context
        if decoder is None or decoder.codec is None or not decoder.codec.is_decoder:
            raise VideoError("unsupported codec")
    except (av.error.FFmpegError, ValueError) as e:
        container.close()
        raise VideoError(f"unsupported codec ({first_line(e, limit=None)})") from None
    # Frame threading decodes several frames at once; when FFmpeg skips frames it mostly waits, and slice
    # threading was 1.7x faster on our 1080p H.264 clip (scripts/bench_sample.py), with identical pixels.
    stream.thread_type = "SLICE" if skip_frames else "AUTO"
    stream.thread_count = threads
    if skip_frames not in SKIP_FRAMES:
        raise DroneVisionError(f"sampling.skip_frames must be one of {', '.join(map(str, SKIP_FRAMES))}")
    stream.codec_context.skip_frame = SKIP_FRAMES[skip_frames]
    fps = float(stream.average_rate or stream.guessed_rate or 0) or None
    duration = float(stream.duration * stream.time_base) if stream.duration else (container.duration or 0) / 1e6
    info = {"fps": fps, "duration_s": duration or None, "frames": stream.frames or None, "codec": decoder.name}
    info["size_hw"] = (decoder.height, decoder.width) if decoder.height and decoder.width else None
    try:
        check_start(start_s, info["duration_s"])
    except VideoError:
        container.close()
        raise
    return info, _video_frames(container, stream, fps, start_s, end_s, exact_index=skip_frames is None)


def damage_reason(
    info: Mapping[str, Any],
    last_t: float | None,
    *,
    frames: int | None = None,
    failure: str | None = None,
    end_s: float | None = None,
    stopped_early: bool = False,
    any_frame_may_end: bool = False,
) -> str | None:
    """One line on a video whose decoding stopped early (None: it was read to the end of the window).

    ``frames`` is the count of frames decoded, ``failure`` FFmpeg's reason when decoding failed. Without a
    failure, a video counts as truncated when it stopped well before its stated duration; ``stopped_early`` (the
    caller stopped reading) and ``any_frame_may_end`` (only key frames were read) skip that check, and so does a
    window ending before the video does.

    Raises:
        VideoError: no frame was decoded at all.

    Examples:
        >>> info = {"duration_s": 10.0, "fps": 10.0}
        >>> damage_reason(info, 9.9) is None
        True
        >>> damage_reason(info, 5.6, frames=57, failure="Invalid data found")
        'damaged: decoding stopped at 5.6 s of 10.0 s after 57 frames (Invalid data found)'
        >>> damage_reason(info, 1.9, frames=20)
        'truncated: decoding stopped at 1.9 s of 10.0 s after 20 frames'
    """
    if last_t is None:
        raise VideoError(f"decoding failed ({failure})" if failure else "no frame could be decoded")
    expected = info.get("duration_s")
    where = f"decoding stopped at {last_t:.1f} s" + (f" of {expected:.1f} s" if expected else "")
    where += f" after {frames} frames" if frames is not None else ""
    if failure:
        return f"damaged: {where} ({failure})"
    if stopped_early or any_frame_may_end:
        return None
    if expected and (end_s is None or end_s >= expected) and info.get("fps"):
        missing = expected - last_t - 1.0 / info["fps"]
        if missing > max(1.0, 0.05 * expected):
            return f"truncated: {where}"
    return None


def check_complete(
    info: Mapping[str, Any],
    last_t: float | None,
    *,
    end_s: float | None = None,
    stopped_early: bool = False,
    any_frame_may_end: bool = False,
) -> None:
    """Raise :class:`VideoError` for a video that gave no frame, or stopped well before its stated duration.

    The strict form of :func:`damage_reason`, for callers that want the whole video or nothing.
    """
    reason = damage_reason(info, last_t, end_s=end_s, stopped_early=stopped_early, any_frame_may_end=any_frame_may_end)
    if reason:
        raise VideoError(reason)


def _sequence_frames(files: list[Path], fps: float, start_s: float, end_s: float | None) -> Iterator[DecodedFrame]:
    for index, file in enumerate(files):
        t = index / fps
        if t + 1e-9 < start_s:
            continue
        if end_s is not None and t > end_s:
            break
        yield DecodedFrame(index, t, file)


def _video_frames(
    container: Any, stream: Any, fps: float | None, start_s: float, end_s: float | None, *, exact_index: bool
) -> Iterator[DecodedFrame]:
    """Frames in the window, timed from the stream's start (MPEG-TS streams start at an offset); the index counts
    decoded frames, or comes from the timestamp after a seek or when frames are skipped."""
    import av

    offset = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    seeked = start_s > 0
    if seeked:
        container.seek(int((start_s + offset) / stream.time_base), stream=stream, backward=True)  # key frame before
    try:
        for count, frame in enumerate(container.decode(stream)):
            t = frame.time - offset if frame.time is not None else count / (fps or 30.0)
            if t + 1e-6 < start_s:
                continue
            if end_s is not None and t > end_s:
                break
            index = count if (exact_index and not seeked) or not fps else round(t * fps)
            yield DecodedFrame(index, float(t), frame)
    except av.error.FFmpegError as e:
        raise DecodeError(first_line(e, limit=None)) from None
    finally:
        container.close()
