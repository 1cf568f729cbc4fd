"""Faults around the disk (issue 15, items 2 and 9): a full disk, a read-only or unwritable folder, torn files,
and the modes outputs are created with.

A full or read-only disk is a small tmpfs mounted by the test in its own user and mount namespace (``unshare``), so
no root rights are needed and nothing stays mounted; where the machine does not allow that the tests say so and skip.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest
import torch

from dronevision.fsio import atomic_write, make_temp_dir, write_error
from tests.conftest import compose_config, make_yolo_dataset

pytestmark = pytest.mark.faults

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data" / "samples" / "aerial-cars"


@cache
def _namespace_problem() -> str | None:
    """Why a tmpfs cannot be mounted in a user namespace here; None when it can."""
    if shutil.which("unshare") is None:
        return "no unshare(1) on this machine"
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
        capture_output=True,
        text=True,
    )
    return None if probe.returncode == 0 else f"cannot mount a tmpfs in a user namespace: {probe.stderr.strip()}"


def _on_tmpfs(mount: Path, options: str, script: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` (sh) with a tmpfs mounted at ``mount`` (``options``: ``size=4m``, ``size=1m,ro``); the mount
    and what is on it are gone when it returns, so the script copies out what the test reads."""
    problem = _namespace_problem()
    if problem:
        pytest.skip(problem)
    mount.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [
            "unshare",
            "--user",
            "--map-root-user",
            "--mount",
            "sh",
            "-c",
            f"mount -t tmpfs -o {options} tmpfs {mount}\n{script}",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=900,
    )


def _one_error_line(stderr: str) -> str:
    """The command's last stderr line, checked to be its one-line error (no traceback before it)."""
    assert "Traceback" not in stderr, stderr[-3000:]
    line = [part.strip() for part in re.split(r"[\r\n]", stderr) if part.strip()][-1]  # as a terminal shows it
    assert line.startswith("error: "), stderr[-3000:]
    return line


# --- before anything runs ---------------------------------------------------------------------------------------


COMMANDS = {
    "sample": ["dronevision.sample", f"input={SAMPLES / 'test' / 'images'}"],
    "dataset": ["dronevision.dataset", "source.format=yolo", f"source.path={SAMPLES}"],
    "train": ["dronevision.train", "debug=fast", f"dataset.path={SAMPLES}"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize(("options", "reason"), [("size=1m,ro", "read-only file system"), ("size=64k", "no space")])
def test_a_read_only_or_full_out_dir_is_one_line_before_anything_runs(
    tmp_path: Path, command: str, options: str, reason: str
) -> None:
    mount = tmp_path / "mnt"
    fill = "dd if=/dev/zero of={m}/filler bs=4k 2>/dev/null; " if "ro" not in options else ""
    args = " ".join(COMMANDS[command])
    done = _on_tmpfs(
        mount,
        options,
        f"{fill.format(m=mount)}{sys.executable} -m {args} out_dir={mount}/out; echo rc=$?; ls -A {mount}",
    )
    line = _one_error_line(done.stderr)
    assert line.startswith(f"error: cannot write {mount}: {reason}"), line
    if reason == "no space":
        assert "free of 64.0 KiB" in line
    listing = done.stdout.splitlines()
    assert listing[0] == "rc=2" and listing[1:] in ([], ["filler"])  # no out_dir, no Hydra folder, no log


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A folder every user may enter (pytest's tmp_path sits in a folder only its owner may)."""
    folder = Path(tempfile.mkdtemp(prefix="dronevision-faults-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


@pytest.mark.parametrize("where", ["shared", "private"])
def test_a_folder_of_another_user_is_one_line(tmp_path: Path, shared_tmp: Path, where: str) -> None:
    """EACCES: the command runs as nobody, in a folder only root may write (or in one it may not even enter)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv(1) to run a command as another user")
    root = shared_tmp if where == "shared" else tmp_path
    locked, home = root / "locked", shared_tmp / "home"
    locked.mkdir()
    home.mkdir()
    locked.chmod(0o555)
    home.chmod(0o777)
    done = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m", *COMMANDS["dataset"]]
        + [f"out_dir={locked}/out"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "HOME": str(home)},
    )
    assert done.returncode == 2
    assert _one_error_line(done.stderr) == f"error: cannot write {locked}: permission denied"
    assert not any(locked.iterdir())


# --- while it runs ----------------------------------------------------------------------------------------------


def test_a_disk_that_fills_while_the_dataset_is_written_leaves_nothing(tmp_path: Path) -> None:
    mount = tmp_path / "mnt"
    args = " ".join(COMMANDS["dataset"])
    done = _on_tmpfs(mount, "size=4m", f"{sys.executable} -m {args} out_dir={mount}/out; echo rc=$?; ls -A {mount}")
    line = _one_error_line(done.stderr)
    assert line.startswith(f"error: cannot write {mount}/out: no space left on the device ("), line
    assert done.stdout.splitlines() == ["rc=2"]  # neither the dataset nor its temporary folder is left


def test_a_disk_that_fills_while_frames_are_sampled_stops_in_one_line(tmp_path: Path) -> None:
    """Not each video's error in turn: the out_dir is full, so the command stops and keeps no half video."""
    from tests.test_faults_footage import encode, scenes

    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a", "b"):
        encode(videos / f"{name}.mp4", scenes(8, (640, 480)))
    mount = tmp_path / "mnt"
    done = _on_tmpfs(
        mount,
        "size=256k",
        f"{sys.executable} -m dronevision.sample input={videos} out_dir={mount}/out sampling.every_s=0.1; "
        f"echo rc=$?; find {mount}/out -name '*.jpg' | wc -l",
    )
    line = _one_error_line(done.stderr)
    assert line.startswith(f"error: cannot write {mount}/out: no space left on the device ("), line
    assert done.stdout.split() == ["rc=2", "0"]  # no frame of a half-sampled video is left


@pytest.mark.slow
def test_a_disk_that_fills_mid_training_keeps_last_pt_whole_and_resume_finishes(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    mount, out, keep = tmp_path / "mnt", tmp_path / "mnt" / "out", tmp_path / "kept"
    keep.mkdir()
    weights = out / "train" / "weights"
    py = sys.executable
    common = f"out_dir={out} mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db"
    script = f"""
(while [ ! -f {weights}/last.pt ]; do sleep 0.02; done; dd if=/dev/zero of={mount}/filler bs=64k 2>/dev/null) &
{py} -m dronevision.train debug=fast dataset.path={tiny_dataset} train.epochs=3 train.fraction=1.0 {common} \
    >/dev/null 2>{keep}/full.err
echo $? > {keep}/full.rc
wait
ls -A {weights} > {keep}/weights.txt
{py} -c "import torch; print(torch.load('{weights}/last.pt', weights_only=False)['epoch'])" > {keep}/epoch.txt
rm {mount}/filler
{py} -m dronevision.train {common} train.resume=true >/dev/null 2>{keep}/resume.err
echo $? > {keep}/resume.rc
cp {out}/summary.json {keep}/
"""
    done = _on_tmpfs(mount, "size=256m", script)  # a checkpoint is ~30 MB; renaming needs room for two
    assert done.returncode == 0, done.stderr[-3000:]
    assert (keep / "full.rc").read_text().strip() == "2"
    line = _one_error_line((keep / "full.err").read_text())
    assert line.startswith(f"error: cannot write {out}") and "no space left on the device (" in line, line
    assert line.endswith(
        f"; {weights / 'last.pt'} holds the last finished epoch; make room, then: "
        f"python -m dronevision.train out_dir={out} train.resume=true"
    ), line
    # last.pt is the last finished epoch, whole: no torn file under a real name, no temporary file left
    assert (keep / "weights.txt").read_text().split() in (["best.pt", "last.pt"], ["last.pt"])
    assert int((keep / "epoch.txt").read_text()) >= 0
    assert (keep / "resume.rc").read_text().strip() == "0", (keep / "resume.err").read_text()[-3000:]
    import json

    summary = json.loads((keep / "summary.json").read_text())
    assert summary["resumed"] is True and summary["metrics"]["map50"] is not None


@pytest.mark.slow
def test_resume_refuses_a_torn_last_pt_and_names_one_that_loads(tiny_dataset: Path, tmp_path: Path) -> None:
    import signal
    import time

    out = tmp_path / "out"
    weights = out / "train" / "weights"
    training = subprocess.Popen(
        [sys.executable, "-m", "dronevision.train", "debug=fast", f"dataset.path={tiny_dataset}", "train.epochs=50"]
        + ["train.fraction=1.0", f"out_dir={out}", f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not (weights / "best.pt").is_file() and training.poll() is None:
            time.sleep(0.05)
    finally:
        training.send_signal(signal.SIGKILL)
        training.wait()
    best_epoch = torch.load(weights / "best.pt", weights_only=False)["epoch"]
    # then something cut last.pt at 12 KB (what a full disk did before checkpoints were written atomically)
    (weights / "last.pt").write_bytes((weights / "last.pt").read_bytes()[:12_000])
    done = subprocess.run(
        [sys.executable, "-m", "dronevision.train", f"out_dir={out}", "train.resume=true"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 2
    line = _one_error_line(done.stderr)
    assert line.startswith(f"error: cannot resume: {weights / 'last.pt'} does not load ("), line
    assert line.endswith(
        f"{weights / 'best.pt'} (epoch {best_epoch + 1}) loads: `cp {weights / 'best.pt'} {weights / 'last.pt'}` "
        "to resume from it"
    ), line


# --- the pieces -------------------------------------------------------------------------------------------------


def test_a_write_that_fails_halfway_leaves_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "last.pt"
    target.write_bytes(b"epoch 1")
    with pytest.raises(OSError, match="disk full"), atomic_write(target, "wb") as f:
        f.write(b"epoch 2, first half")
        raise OSError(28, "disk full")
    assert target.read_bytes() == b"epoch 1"
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_write_errors_name_the_folder_and_the_free_space(tmp_path: Path) -> None:
    (tmp_path / "weights").mkdir()
    full = write_error(OSError(28, "No space left on device", str(tmp_path / "weights" / "last.pt")))
    gone = write_error(OSError(28, "No space left on device", str(tmp_path / "frames" / ".tmp-v1" / "000001.jpg")))
    assert str(gone).startswith(f"cannot write {tmp_path}: no space left")  # the temporary folder was removed
    assert str(full).startswith(f"cannot write {tmp_path / 'weights'}: no space left on the device (")
    assert " free of " in str(full)
    unnamed = write_error(OSError(28, "No space left on device"), tmp_path)
    assert str(unnamed).startswith(f"cannot write {tmp_path}: no space left")
    assert write_error(OSError(2, "No such file")) is None


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_built_datasets_follow_the_umask(tmp_path: Path, mask: int) -> None:
    from dronevision.dataset.command import run

    source = make_yolo_dataset(tmp_path / "src").parent
    saved = os.umask(mask)
    try:
        folder = make_temp_dir(tmp_path, ".x-")
        run(
            compose_config(
                "dataset_build", "source.format=yolo", f"source.path={source}", f"out_dir={tmp_path / 'built'}"
            )
        )
    finally:
        os.umask(saved)
    expected = 0o777 & ~mask
    assert stat.S_IMODE(folder.stat().st_mode) == expected
    assert stat.S_IMODE((tmp_path / "built").stat().st_mode) == expected  # was 0700 whatever the umask
    assert stat.S_IMODE((tmp_path / "built" / "summary.json").stat().st_mode) == 0o666 & ~mask
