"""`pip install .` (a wheel, not the source checkout) finds its configs and runs."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .conftest import REPO

pytestmark = pytest.mark.slow


def test_wheel_ships_configs_and_py_typed(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(REPO),
        ],
        check=True,
    )
    wheel = next((tmp_path / "dist").glob("dronevision-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"dronevision/configs/train.yaml", "dronevision/configs/model/yolov8n.yaml", "dronevision/py.typed"} <= names

    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)], check=True
    )
    code = "import dronevision.cli as c, dronevision.train; print(c.CONFIG_DIR)"
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()) == target / "dronevision" / "configs"
    # the installed command composes its config and rejects bad input with one line
    bad = subprocess.run(
        [sys.executable, "-m", "dronevision.train", f"dataset.path={tmp_path / 'none'}", f"out_dir={tmp_path / 'out'}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert bad.returncode == 2 and bad.stderr.startswith(f"error: dataset path {tmp_path / 'none'} does not exist")
