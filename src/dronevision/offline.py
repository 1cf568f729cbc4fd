"""Keep ultralytics and MLflow offline: no network probes, run-time installs, font downloads or telemetry."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

_ENV = {
    "YOLO_OFFLINE": "true",  # ultralytics skips its online check, analytics and hub calls
    "YOLO_AUTOINSTALL": "false",  # ...and never pip-installs a missing package at run time
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
}


def ultralytics_config_dir() -> Path:
    """Where ultralytics keeps its settings and fonts for dronevision (``YOLO_CONFIG_DIR`` wins)."""
    if "YOLO_CONFIG_DIR" in os.environ:
        return Path(os.environ["YOLO_CONFIG_DIR"])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "dronevision" / "ultralytics"


def configure_offline() -> None:
    """Set the environment before ultralytics is imported; variables the user already set are kept.

    ultralytics checks for ``Arial.ttf`` whenever it reads a dataset and downloads it when missing. We give it
    matplotlib's bundled DejaVu Sans under that name in a config folder of our own, so it never asks the network.
    """
    for name, value in _ENV.items():
        os.environ.setdefault(name, value)
    os.environ.setdefault("YOLO_CONFIG_DIR", str(ultralytics_config_dir()))
    config_dir = Path(os.environ["YOLO_CONFIG_DIR"]).expanduser() / "Ultralytics"  # ultralytics' USER_CONFIG_DIR
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        return
    dejavu = Path(spec.submodule_search_locations[0]) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
    for font in ("Arial.ttf", "Arial.Unicode.ttf"):
        target = config_dir / font
        try:  # a read-only or foreign home (even its stat may be refused): ultralytics uses PIL's default font
            if dejavu.is_file() and not target.exists():
                config_dir.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(dejavu, target)
        except OSError:
            return
