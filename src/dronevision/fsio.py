"""Writing outputs safely: whole files or nothing under the real name, folders that follow the user's umask, and a
full disk, a read-only folder or a refused permission told in one line.

Every output file is written to a temporary name in its folder, flushed to disk and renamed over the real name
(:func:`atomic_write`), so a crash or a full disk never leaves a torn file where a reader (a resumed training, the
next stage) expects a whole one. Folders built elsewhere and renamed into place (:func:`make_temp_dir`) get the
mode any other new folder would get.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

from dronevision.errors import DroneVisionError

# the OS errors that are about the place we write to, not about the data: each becomes one line naming the folder
_WRITE_ERRORS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


def umask() -> int:
    """The process's umask (read without changing it for longer than the call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_temp_dir(parent: Path, prefix: str) -> Path:
    """A new temporary folder in ``parent`` with the mode a plain ``mkdir`` would give it.

    ``tempfile.mkdtemp`` creates 0700, and that mode follows the folder through the rename into place: a built
    dataset that a teammate or a training job under another user cannot read.
    """
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    folder.chmod(0o777 & ~umask())
    return folder


@contextmanager
def atomic_write(path: Path, mode: str = "w", **kwargs: object) -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; on success flush, fsync and rename it to ``path``.

    On any error the temporary file is removed and ``path`` is left as it was (the previous whole file, or none).

    Examples:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "a.txt"
        >>> with atomic_write(target) as f:
        ...     _ = f.write("whole")
        >>> target.read_text(), [p.name for p in target.parent.iterdir()]
        ('whole', ['a.txt'])
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.part-{os.getpid()}")
    try:
        with open(tmp, mode, **kwargs) as f:  # noqa: PTH123 (mode and encoding come from the caller)
            yield f
            f.flush()
            os.fsync(f.fileno())
        tmp.chmod(0o666 & ~umask())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` whole or not at all (see :func:`atomic_write`)."""
    with atomic_write(path, "wb") as f:
        f.write(data)
    return path


def write_text(path: Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` whole or not at all (see :func:`atomic_write`)."""
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # a folder on the way that we may not enter
        return False


def save_atomic(path: Path, save: Callable[[Path], object]) -> Path:
    """Let ``save`` write a temporary sibling of ``path`` (a library's own save function), then flush and rename it.

    Examples:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "model.onnx"
        >>> save_atomic(target, lambda part: part.write_bytes(b"onnx")).read_bytes()
        b'onnx'
    """
    path = Path(path)
    part = path.with_name(f".{path.name}.part-{os.getpid()}{path.suffix}")  # some savers insist on the suffix
    try:
        save(part)
        with part.open("rb+") as f:
            os.fsync(f.fileno())
        part.replace(path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return path


def _existing(path: Path) -> Path:
    """``path`` or its nearest folder that exists (raises ``PermissionError`` for one we may not look into)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path if path.is_dir() else path.parent


def human_bytes(n: float) -> str:
    """Bytes in the largest unit that keeps a number >= 1.

    Examples:
        >>> human_bytes(0), human_bytes(1536), human_bytes(5 * 1024**3)
        ('0 B', '1.5 KiB', '5.0 GiB')
    """
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def write_error(e: BaseException, folder: Path | None = None) -> DroneVisionError | None:
    """The one line a full disk, a read-only folder or a refused permission deserves; None for any other error.

    Args:
        e: the error (an ``OSError`` with one of the errnos above; anything else gives None).
        folder: the folder being written, when ``e`` names no file (a failed ``write`` on an open file).

    Examples:
        >>> import errno
        >>> write_error(OSError(errno.EROFS, "Read-only file system", "/tmp/summary.json"))
        DroneVisionError('cannot write /tmp: read-only file system')
        >>> write_error(ValueError("x")) is None
        True
    """
    if not isinstance(e, OSError) or e.errno not in _WRITE_ERRORS:
        return None
    named = Path(e.filename) if isinstance(e.filename, (str, os.PathLike)) else None
    where = folder if named is None else named if _is_dir(named) else named.parent
    if named is not None:
        with suppress(OSError):  # a temporary folder removed on the way out: name the folder the user knows
            where = _existing(where)
    message = f"cannot write {where if where is not None else 'the output'}: {_WRITE_ERRORS[e.errno]}"
    if e.errno in (errno.ENOSPC, errno.EDQUOT) and where is not None:
        try:
            usage = shutil.disk_usage(_existing(where))
            message += f" ({human_bytes(usage.free)} free of {human_bytes(usage.total)})"
        except OSError:
            pass
    return DroneVisionError(message)


def is_write_fault(e: BaseException, out_dir: Path) -> bool:
    """Whether ``e`` is about writing into ``out_dir`` (full, read-only, refused), not about one input: a per-item
    error handler lets it through, so the command stops with one line instead of failing every item the same way.

    Examples:
        >>> import errno
        >>> is_write_fault(OSError(errno.ENOSPC, "full"), Path("/out")), is_write_fault(ValueError(), Path("/out"))
        (True, False)
        >>> is_write_fault(OSError(errno.EACCES, "denied", "/data/in.mp4"), Path("/out"))
        False
    """
    if write_error(e) is None:
        return False
    name = getattr(e, "filename", None)
    if name is None:
        return e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS)  # type: ignore[attr-defined]
    return Path(name).absolute().is_relative_to(Path(out_dir).absolute())


def check_writable(folder: Path) -> None:
    """Make sure ``folder`` (or, when it does not exist yet, the folder it would be created in) takes a new file.

    Raises:
        DroneVisionError: it does not (full, read-only, not ours), in one line naming it.
    """
    folder = where = Path(folder).expanduser()
    try:
        if folder.is_file():
            raise DroneVisionError(f"cannot write {folder}: it is a file, not a folder")
        where = _existing(folder)
        fd, probe = tempfile.mkstemp(prefix=".dronevision-probe-", dir=where)
        try:
            os.write(fd, b"\0" * 4096)  # a full disk refuses data before it refuses a name
            os.fsync(fd)
        finally:
            os.close(fd)
            Path(probe).unlink(missing_ok=True)
    except OSError as e:
        error = write_error(e, where)
        if error is None:
            raise
        raise error from None
