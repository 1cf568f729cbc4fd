"""The installed environment: one distribution for each import package that several distributions provide.

The OpenCV wheels all install ``cv2/`` and the one installed last wins, so two of them leave a ``cv2`` whose files
come from either. ultralytics and ultralytics-opencv-headless both install ``ultralytics/`` in the same way.
"""

from __future__ import annotations

import re
from importlib import metadata

import pytest

OPENCV = ("opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless")
ULTRALYTICS = ("ultralytics", "ultralytics-opencv-headless")


def _installed(names: tuple[str, ...]) -> dict[str, metadata.Distribution]:
    """The installed distributions among ``names`` (PEP 503 normalized), by name."""
    found = {re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower(): d for d in metadata.distributions()}
    return {name: found[name] for name in names if name in found}


@pytest.mark.parametrize("names", [OPENCV, ULTRALYTICS], ids=["cv2", "ultralytics"])
def test_one_distribution_installs_the_package(names: tuple[str, ...]) -> None:
    installed = {name: dist.version for name, dist in _installed(names).items()}
    assert len(installed) == 1, f"want exactly one of {names}, found {installed} (make install removes the extra one)"


def test_cv2_imports_from_the_one_opencv() -> None:
    import cv2

    installed = {name: dist.version for name, dist in _installed(OPENCV).items()}
    (version,) = installed.values() if len(installed) == 1 else pytest.fail(f"cv2 {cv2.__version__} from {installed}")
    assert version.startswith(f"{cv2.__version__}."), f"cv2 {cv2.__version__} is not the installed {installed}"
    assert cv2.imdecode is not None and cv2.resize is not None
