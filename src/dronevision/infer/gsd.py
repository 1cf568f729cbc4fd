"""Ground sample distance (GSD): resize frames so that objects appear at the size the model was trained on.

A model trained on footage of ``train_m`` metres per pixel sees objects of a fixed size in pixels; footage flown
lower or higher shows them larger or smaller. When the footage's GSD is known, each frame is resized by
``footage_gsd / train_gsd`` (clamped to :data:`FACTOR_RANGE`) before detection and the boxes are mapped back
(:mod:`dronevision.infer.multiscale`). The footage's GSD comes, first found first, from

- a sidecar next to the video, ``<video stem>.gsd.json``: ``{"gsd_m": 0.05}`` or
  ``{"altitude_m": 120, "focal_mm": 24, "sensor_width_mm": 13.2}`` (focal and sensor fall back to the config's);
- DJI telemetry next to the video, ``<video stem>.SRT``: the altitude at each frame's time (``rel_alt``,
  ``altitude`` or ``H 120.5m``), with the config's ``focal_mm`` and ``sensor_width_mm``;
- the config: ``slicing.gsd.value_m``, or ``slicing.gsd.altitude_m`` with ``focal_mm`` and ``sensor_width_mm``.

A file that does not parse, or an altitude that is missing, zero or negative, is one WARNING line naming the file
and line; that video is then processed without GSD scaling, and its result says so (:meth:`GsdScaler.summary`).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from dronevision.errors import DroneVisionError

log = logging.getLogger(__name__)

FACTOR_RANGE = (0.25, 4.0)  # a resize beyond this is a wrong setting more often than real footage
RECOMPUTE = 0.05  # along an SRT track, the factor changes only when the altitude moves by more than this fraction
SIDECAR_SUFFIX = ".gsd.json"
ALTITUDE_KEYS = ("rel_alt", "altitude", "h")  # the first present in an SRT block is its altitude

_TIME = re.compile(r"^\s*(\d+):(\d+):(\d+)[,.](\d+)\s*-->\s*(\d+):(\d+):(\d+)[,.](\d+)")
_FIELD = re.compile(r"\b([A-Za-z_][A-Za-z_]*)\s*:\s*([-+]?\d+(?:\.\d+)?)")
_HEIGHT = re.compile(r"(?<![\w.])H\s+([-+]?\d+(?:\.\d+)?)\s*m\b")


# --- pure core -------------------------------------------------------------------------------------------------


def gsd_from_altitude(altitude_m: float, *, focal_mm: float, sensor_width_mm: float, image_width_px: int) -> float:
    """Metres per pixel of a nadir camera: ``altitude * sensor width / (focal length * image width)``.

    Examples:
        >>> round(gsd_from_altitude(100, focal_mm=8.8, sensor_width_mm=13.2, image_width_px=5472), 4)
        0.0274
        >>> gsd_from_altitude(0, focal_mm=8.8, sensor_width_mm=13.2, image_width_px=5472)
        Traceback (most recent call last):
        ...
        ValueError: altitude must be > 0, got 0
    """
    for name, value in (("altitude", altitude_m), ("focal_mm", focal_mm), ("sensor_width_mm", sensor_width_mm)):
        if value is None or not float(value) > 0:
            raise ValueError(f"{name} must be > 0, got {value}")
    if image_width_px < 1:
        raise ValueError(f"image_width_px must be >= 1, got {image_width_px}")
    return float(altitude_m) * float(sensor_width_mm) / (float(focal_mm) * image_width_px)


def resize_factor(footage_gsd_m: float, train_gsd_m: float, *, limits: tuple[float, float] = FACTOR_RANGE) -> float:
    """How much to resize a frame so that its objects appear at the training scale, clamped to ``limits``.

    Footage of 0.05 m/px seen by a model trained at 0.10 m/px is shrunk by half.

    Examples:
        >>> resize_factor(0.05, 0.10), resize_factor(0.2, 0.1), resize_factor(0.001, 0.1), resize_factor(9, 0.1)
        (0.5, 2.0, 0.25, 4.0)
    """
    if not footage_gsd_m > 0 or not train_gsd_m > 0:
        raise ValueError(f"GSDs must be > 0, got footage {footage_gsd_m} and training {train_gsd_m}")
    return float(min(max(footage_gsd_m / train_gsd_m, limits[0]), limits[1]))


def _seconds(h: str, m: str, s: str, frac: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(frac) / 10 ** len(frac)


def parse_srt(text: str, *, source: str = "<srt>") -> list[tuple[float, float, dict[str, Any]]]:
    """DJI ``.SRT`` telemetry as ``(start_s, end_s, fields)`` per subtitle block.

    ``fields`` holds every ``name: number`` of the block (``rel_alt``, ``abs_alt``, ``altitude``, ``focal_len``,
    ...; lower-cased), ``h`` for older firmware's ``H 120.5m``, and ``line``: the block's first line number.

    Raises:
        DroneVisionError: a block has no valid time line (``<source>:<line>: ...``), or there is no block.

    Examples:
        >>> block = '1\\n00:00:01,000 --> 00:00:01,033\\n[rel_alt: 120.500 abs_alt: 560.300] H.S 2.0m/s\\n'
        >>> parse_srt(block)
        [(1.0, 1.033, {'rel_alt': 120.5, 'abs_alt': 560.3, 'line': 1})]
        >>> parse_srt('1\\n00:00:00,000 --> 00:00:00,033\\nF/2.8, D 25.30m, H 98.00m, H.S 0.00m/s\\n')[0][2]
        {'h': 98.0, 'line': 1}
    """
    entries = []
    lines = text.lstrip("\ufeff").splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        start = i
        while i < len(lines) and lines[i].strip():
            i += 1
        block = lines[start:i]
        times = next((_TIME.match(line) for line in block[:2] if _TIME.match(line)), None)
        if times is None:
            raise DroneVisionError(f"{source}:{start + 1}: not an SRT block (no 'HH:MM:SS,mmm --> HH:MM:SS,mmm' line)")
        g = times.groups()
        body = " ".join(line for line in block if not _TIME.match(line))
        found: dict[str, Any] = {k.lower(): float(v) for k, v in _FIELD.findall(re.sub(r"<[^>]*>", " ", body))}
        height = _HEIGHT.search(body)
        if height:
            found["h"] = float(height.group(1))
        found["line"] = start + 1
        entries.append((_seconds(*g[:4]), _seconds(*g[4:]), found))
    if not entries:
        raise DroneVisionError(f"{source}:1: no SRT blocks")
    return entries


def altitude_track(
    entries: Sequence[tuple[float, float, Mapping[str, Any]]], *, source: str = "<srt>"
) -> list[tuple[float, float, float]]:
    """``(start_s, end_s, altitude_m)`` per block of :func:`parse_srt`, the altitude from :data:`ALTITUDE_KEYS`.

    Raises:
        DroneVisionError: a block has no altitude, or one that is zero or negative (``<source>:<line>: ...``).

    Examples:
        >>> altitude_track([(0.0, 1.0, {"altitude": 50.0, "line": 1}), (1.0, 2.0, {"rel_alt": 60.0, "line": 5})])
        [(0.0, 1.0, 50.0), (1.0, 2.0, 60.0)]
    """
    track = []
    for start, end, found in entries:
        key = next((k for k in ALTITUDE_KEYS if k in found), None)
        where = f"{source}:{found.get('line', '?')}"
        if key is None:
            raise DroneVisionError(f"{where}: no altitude (rel_alt, altitude or 'H ...m')")
        if not found[key] > 0:
            raise DroneVisionError(f"{where}: altitude {key} = {found[key]:g} m is not above ground")
        track.append((float(start), float(end), float(found[key])))
    return track


def altitude_at(track: Sequence[tuple[float, float, float]], t: float) -> float | None:
    """The altitude at ``t`` seconds: linear between the middles of the blocks, the first/last one outside them.

    Examples:
        >>> track = [(0.0, 1.0, 100.0), (1.0, 2.0, 110.0), (5.0, 6.0, 140.0)]
        >>> altitude_at(track, 0.0), altitude_at(track, 1.0), altitude_at(track, 3.5), altitude_at(track, 60)
        (100.0, 105.0, 125.0, 140.0)
        >>> altitude_at([], 1.0) is None
        True
    """
    if not track:
        return None
    middles = [(a + b) / 2 for a, b, _ in track]
    return float(np.interp(t, middles, [alt for _, _, alt in track]))


def parse_sidecar(text: str, *, source: str = "<sidecar>") -> dict[str, float]:
    """A ``<video>.gsd.json``: ``{"gsd_m": ..}`` or ``{"altitude_m": .., "focal_mm": .., "sensor_width_mm": ..}``.

    Raises:
        DroneVisionError: not JSON, not an object, neither key, or a value that is not a number > 0
            (``<source>:<line>: ...``).

    Examples:
        >>> parse_sidecar('{"gsd_m": 0.05}')
        {'gsd_m': 0.05}
        >>> parse_sidecar('{\\n "altitude_m": -3}', source="a.gsd.json")
        Traceback (most recent call last):
        ...
        dronevision.errors.DroneVisionError: a.gsd.json:2: altitude_m must be a number > 0, got -3
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DroneVisionError(f"{source}:{e.lineno}: not JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise DroneVisionError(f"{source}:1: expected a JSON object with gsd_m or altitude_m")
    known = ("gsd_m", "altitude_m", "focal_mm", "sensor_width_mm")
    if "gsd_m" not in data and "altitude_m" not in data:
        raise DroneVisionError(f"{source}:1: neither gsd_m nor altitude_m")
    out = {}
    for key in known:
        if key not in data:
            continue
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            line = next((n for n, row in enumerate(text.splitlines(), 1) if f'"{key}"' in row), 1)
            raise DroneVisionError(f"{source}:{line}: {key} must be a number > 0, got {json.dumps(value)}")
        out[key] = float(value)
    return out


# --- settings --------------------------------------------------------------------------------------------------


def settings_values(cls: type, config: Mapping[str, Any] | None, group: str) -> dict[str, Any]:
    """The set (non-null) values of a settings mapping for the dataclass ``cls``; a key that is not one of its
    fields is refused in one line naming the ``group``.

    Examples:
        >>> settings_values(GsdSettings, {"train_m": 0.1, "value_m": None}, "slicing.gsd")
        {'train_m': 0.1}
    """
    names = [f.name for f in fields(cls)]
    unknown = sorted(set(config or {}) - set(names))
    if unknown:
        raise DroneVisionError(f"unknown {group} keys {unknown}; valid: {', '.join(names)}")
    return {k: v for k, v in (config or {}).items() if v is not None}


@dataclass(frozen=True)
class GsdSettings:
    """GSD-aware inference: the ``slicing.gsd`` keys (``configs/slicing/default.yaml``). Off while ``train_m`` is None.

    Attributes:
        train_m: metres per pixel of the training images as the model saw them; None: no GSD scaling.
        value_m: the footage's GSD (metres per pixel), when known for all of it.
        altitude_m: the footage's altitude above ground, with ``focal_mm`` and ``sensor_width_mm``.
        focal_mm: the camera's real (not 35 mm-equivalent) focal length.
        sensor_width_mm: the camera's sensor width.
        sidecar: look for ``<video stem>.gsd.json`` and ``<video stem>.SRT`` next to each video (track).

    Examples:
        >>> GsdSettings.from_config({"train_m": 0.1, "value_m": 0.05}).config_gsd(1920)
        0.05
        >>> GsdSettings.from_config({"train": 0.1})
        Traceback (most recent call last):
        ...
        dronevision.errors.DroneVisionError: unknown slicing.gsd keys ['train']; valid: train_m, value_m, ...
    """

    train_m: float | None = None
    value_m: float | None = None
    altitude_m: float | None = None
    focal_mm: float | None = None
    sensor_width_mm: float | None = None
    sidecar: bool = True

    def __post_init__(self) -> None:
        for f in fields(self)[:5]:
            value = getattr(self, f.name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
                raise DroneVisionError(f"slicing.gsd.{f.name} must be a number > 0 or null, got {value!r}")
        if self.altitude_m is not None and not (self.focal_mm and self.sensor_width_mm):
            raise DroneVisionError("slicing.gsd.altitude_m needs slicing.gsd.focal_mm and slicing.gsd.sensor_width_mm")

    @property
    def active(self) -> bool:
        """Whether GSD scaling is asked for (``train_m`` set)."""
        return self.train_m is not None

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> GsdSettings:
        """Settings from a ``slicing.gsd`` mapping; unknown keys are refused, None means off."""
        return cls(**settings_values(cls, config, "slicing.gsd"))

    def config_gsd(self, image_width_px: int) -> float | None:
        """The footage's GSD from the config alone (``value_m``, else ``altitude_m`` with the camera), or None."""
        if self.value_m is not None:
            return float(self.value_m)
        if self.altitude_m is not None and self.focal_mm and self.sensor_width_mm:
            return gsd_from_altitude(
                self.altitude_m,
                focal_mm=self.focal_mm,
                sensor_width_mm=self.sensor_width_mm,
                image_width_px=image_width_px,
            )
        return None


# --- per video -------------------------------------------------------------------------------------------------


class GsdScaler:
    """The resize factor of each frame of one footage, from its sidecar, its SRT track or the config.

    Build it with :meth:`for_video` (track) or directly with ``source=None`` (the config only: evaluate, pre-labelling).
    """

    def __init__(
        self,
        settings: GsdSettings,
        *,
        source: str | None = None,
        gsd_m: float | None = None,
        camera: Mapping[str, float] | None = None,
        track: Sequence[tuple[float, float, float]] = (),
        warning: str | None = None,
    ) -> None:
        self.settings, self.warning = settings, warning
        self.source, self.gsd_m, self.track = source, gsd_m, list(track)
        self.camera = {"focal_mm": settings.focal_mm, "sensor_width_mm": settings.sensor_width_mm, **(camera or {})}
        self._altitude: float | None = None
        self._factor = 1.0
        self.factors: tuple[float, float] | None = None  # the smallest and largest factor used
        self.clamped = False
        if settings.active and source is None and warning is None:
            self.source = "config" if settings.value_m or settings.altitude_m else None

    @classmethod
    def for_video(cls, video: Path, settings: GsdSettings) -> GsdScaler:
        """The scaler of one video: its sidecar, else its ``.SRT``, else the config; a bad file is one WARNING
        and no scaling for this video."""
        if not settings.active or not settings.sidecar:
            return cls(settings)
        video = Path(video)
        sidecar = video.parent / f"{video.stem}{SIDECAR_SUFFIX}"
        srt = next((p for p in (video.with_suffix(".SRT"), video.with_suffix(".srt")) if p.is_file()), None)
        try:
            if sidecar.is_file():
                data = parse_sidecar(sidecar.read_text(errors="replace"), source=str(sidecar))
                camera = {k: data[k] for k in ("focal_mm", "sensor_width_mm") if k in data}
                if "gsd_m" not in data:
                    cls._need_camera(settings, camera, str(sidecar))
                return cls(settings, source="sidecar", gsd_m=data.get("gsd_m"), camera=camera,
                           track=[(0.0, 0.0, data["altitude_m"])] if "gsd_m" not in data else ())  # fmt: skip
            if srt is not None:
                cls._need_camera(settings, {}, str(srt))
                text = srt.read_text(errors="replace")
                track = altitude_track(parse_srt(text, source=str(srt)), source=str(srt))
                return cls(settings, source="srt", track=track)
        except (DroneVisionError, OSError) as e:
            message = str(e).strip().splitlines()[0]
            log.warning("%s; processed without GSD scaling", message)
            return cls(settings, warning=message)
        return cls(settings)

    @staticmethod
    def _need_camera(settings: GsdSettings, camera: Mapping[str, float], source: str) -> None:
        if not (camera.get("focal_mm") or settings.focal_mm) or not (
            camera.get("sensor_width_mm") or settings.sensor_width_mm
        ):
            raise DroneVisionError(
                f"{source}:1: an altitude needs the camera: set slicing.gsd.focal_mm and slicing.gsd.sensor_width_mm"
            )

    def factor(self, image_width_px: int, t: float = 0.0) -> float | None:
        """The resize factor of a frame ``image_width_px`` wide at ``t`` seconds; None when its GSD is not known
        (the frame is seen as without GSD scaling)."""
        s = self.settings
        if not s.active or self.warning is not None or s.train_m is None:
            return None
        if self.source in ("sidecar", "srt") and self.gsd_m is None:
            altitude = altitude_at(self.track, t)
            if altitude is None:
                return None
            if self._altitude is not None and abs(altitude - self._altitude) <= RECOMPUTE * self._altitude:
                return self._factor
            self._altitude = altitude
            gsd = gsd_from_altitude(
                altitude,
                focal_mm=float(self.camera["focal_mm"]),  # type: ignore[arg-type]
                sensor_width_mm=float(self.camera["sensor_width_mm"]),  # type: ignore[arg-type]
                image_width_px=image_width_px,
            )
        else:
            gsd = self.gsd_m if self.gsd_m is not None else s.config_gsd(image_width_px)
            if gsd is None:
                return None
        raw = gsd / s.train_m
        self._factor = resize_factor(gsd, s.train_m)
        if self._factor != raw and not self.clamped:
            self.clamped = True
            log.warning(
                "GSD resize factor %.3g (footage %.4g m/px, training %.4g m/px, %s) clamped to %g",
                raw, gsd, s.train_m, self.source, self._factor,
            )  # fmt: skip
        lo, hi = self.factors or (self._factor, self._factor)
        self.factors = (min(lo, self._factor), max(hi, self._factor))
        return self._factor

    def summary(self) -> dict[str, Any] | None:
        """What a result records: ``source`` (``sidecar``, ``srt``, ``config`` or None), the ``factor`` used (the
        range along an SRT track), ``clamped`` and the ``warning`` that turned scaling off; None when not asked."""
        if not self.settings.active:
            return None
        factor: float | list[float] | None = None
        if self.factors is not None:
            lo, hi = self.factors
            factor = round(lo, 4) if lo == hi else [round(lo, 4), round(hi, 4)]
        return {
            "source": None if self.warning else self.source,
            "factor": factor,
            "clamped": self.clamped,
            "warning": self.warning,
        }
