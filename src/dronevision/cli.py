"""What every stage's command shares: the config folder, Hydra entry points, one-line errors, summary.json."""

from __future__ import annotations

import errno
import json
import logging
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from dronevision.errors import DroneVisionError
from dronevision.fsio import write_error

log = logging.getLogger(__name__)

_HYDRA_FILES = {".hydra"}


def find_config_dir() -> Path:
    """The ``configs/`` folder: inside the installed wheel, else at the root of the source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "configs", here.parents[1] / "configs"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise DroneVisionError(f"no configs/ folder found beside {here} or in the source checkout")


CONFIG_DIR = find_config_dir()

if not OmegaConf.has_resolver("abspath"):
    OmegaConf.register_new_resolver("abspath", lambda path: str(Path(path).expanduser().resolve()))


def group_options(group: str, config_dir: Path = CONFIG_DIR) -> list[str]:
    """Option names of a config group, e.g. ``group_options("model")`` -> ``["yolo11n", ...]``."""
    return sorted(p.stem for p in (config_dir / group).glob("*.yaml"))


def config_groups(config_name: str, config_dir: Path = CONFIG_DIR) -> set[str]:
    """The config groups a command's config uses (its ``defaults`` list), e.g. ``{"model", "mlflow", ...}``."""
    defaults = OmegaConf.load(config_dir / f"{config_name}.yaml").get("defaults") or []
    return {str(next(iter(d))).lstrip("+/").split("@")[0] for d in defaults if isinstance(d, Mapping)}


def check_group_overrides(
    overrides: Sequence[str], config_dir: Path = CONFIG_DIR, groups: set[str] | None = None
) -> None:
    """Reject ``group=option`` overrides naming an option that does not exist, listing the valid ones.

    ``groups`` limits the check to the groups a command uses (``track model=<file>`` names a file, not a group).

    Hydra would say the same over a dozen lines; this is the one-line version, checked before Hydra starts.

    Examples:
        >>> check_group_overrides(["model=yolov8n", "train.epochs=1"])
        >>> check_group_overrides(["model=yolov9000"])
        Traceback (most recent call last):
        ...
        dronevision.errors.DroneVisionError: unknown model 'yolov9000'; valid: rtdetr_l, yolo11n, yolo11s, ...
    """
    for override in overrides:
        key, sep, value = override.lstrip("+~").partition("=")
        if not sep or "." in key or "/" in key or not (config_dir / key).is_dir() or value in ("", "null"):
            continue
        if groups is not None and key not in groups:
            continue
        valid = group_options(key, config_dir)
        for option in value.split(","):  # multirun sweeps list options with commas
            if option not in valid:
                raise DroneVisionError(f"unknown {key} '{option}'; valid: {', '.join(valid)}")


def model_overrides(overrides: Sequence[str], *, to: str) -> list[str]:
    """``model=<file>`` on the command line sets the key ``to`` (a ``model`` key would clash with the config group).

    Examples:
        >>> model_overrides(["model=best.onnx", "batch=[1]", "+model=x.onnx"], to="onnx")
        ['onnx=best.onnx', 'batch=[1]', '+onnx=x.onnx']
    """
    out = []
    for override in overrides:
        key, sep, value = override.partition("=")
        if sep and key.lstrip("+") == "model":
            override = f"{key[: len(key) - len(key.lstrip('+'))]}{to}={value}"
        out.append(override)
    return out


def hydra_output_dir() -> Path | None:
    """Hydra's output folder for this job (one per job in a sweep), or None outside a Hydra app."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else None


def resolve_out_dir(cfg: DictConfig) -> Path:
    """The folder every output of this run lands in: Hydra's job folder under a Hydra app, else ``cfg.out_dir``."""
    return (hydra_output_dir() or Path(cfg.out_dir)).expanduser().resolve()


@contextmanager
def user_errors(out_dir: Callable[[], Path | None] = hydra_output_dir) -> Iterator[None]:
    """Turn a :class:`DroneVisionError`, or a full disk, a read-only folder or a refused permission anywhere, into
    one line on stderr and exit status 2; an interrupt into 130 (SIGINT) or 143 (SIGTERM), keeping what was written.

    The output folder is removed if it holds nothing but Hydra's bookkeeping, so bad input never leaves a
    half-written output folder behind.
    """
    try:
        yield
    except (DroneVisionError, OSError) as e:
        folder = out_dir()
        error = e if isinstance(e, DroneVisionError) else _os_error(e, folder)
        if error is None:  # an OSError that is not about the place written to: a bug, with its traceback
            raise
        if folder is not None and folder.is_dir():
            leftovers = {p.name for p in folder.iterdir()} - _HYDRA_FILES
            if all(name.endswith(".log") for name in leftovers):
                shutil.rmtree(folder, ignore_errors=True)
        _close_progress_bars()
        sys.stderr.write(f"error: {error}\n")
        sys.exit(2)
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM where a stage turns it into KeyboardInterrupt
        name = str(e) if str(e) in signal.Signals.__members__ else "SIGINT"
        sys.stderr.write(f"interrupted by {name}\n")
        sys.exit(128 + signal.Signals[name].value)


def _os_error(e: OSError, out_dir: Path | None) -> DroneVisionError | None:
    """The one line for an OSError that is about the disk: writing the outputs, or reading an input we may not."""
    name = e.filename if isinstance(e.filename, str) else None
    outside = out_dir is None or not Path(name or out_dir).absolute().is_relative_to(Path(out_dir).absolute())
    if e.errno in (errno.EACCES, errno.EPERM) and name and outside:
        return DroneVisionError(f"cannot read {name}: permission denied")
    return write_error(e, out_dir)


def _close_progress_bars() -> None:
    """Close the progress bars an error left open, so that the error line starts a line of its own."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return
    for bar in list(getattr(tqdm, "_instances", [])):
        bar.close()


class Signals:
    """SIGINT and SIGTERM both stop a run (training, track) as KeyboardInterrupt, never in the middle of writing a
    checkpoint (a trainer saves within ``Signals.saving()``)."""

    received: str | None = None
    _saving = 0
    _pending = False

    @classmethod
    def handler(cls, signum: int, frame: Any) -> None:
        cls.received = signal.Signals(signum).name
        if cls._saving:
            cls._pending = True
            return
        raise KeyboardInterrupt(cls.received)

    @classmethod
    @contextmanager
    def saving(cls) -> Iterator[None]:
        cls._saving += 1
        try:
            yield
        finally:
            cls._saving -= 1
        if cls._pending and not cls._saving:
            cls._pending = False
            raise KeyboardInterrupt(cls.received)


@contextmanager
def interruptible() -> Iterator[type[Signals]]:
    """Within the block, SIGTERM stops the process as Ctrl-C does (KeyboardInterrupt); handlers restored after.

    Yields the class whose ``received`` attribute names the signal that arrived, if any.
    """
    if threading.current_thread() is not threading.main_thread():
        yield Signals
        return
    Signals.received, Signals._pending = None, False
    saved = {s: signal.signal(s, Signals.handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield Signals
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


def hydra_main(
    config_name: str,
    run: Callable[[DictConfig], Any],
    rewrite_overrides: Callable[[list[str]], list[str]] | None = None,
    *,
    may_be_missing: Sequence[str] = (),
    extra_defaults: Callable[[], Mapping[str, Any]] | None = None,
    validators: Callable[[], Mapping[str, Callable[[str, Any], str | None]]] | None = None,
) -> Callable[[], None]:
    """Build a stage's console entry point: check (and optionally rewrite) the overrides, then ``run(cfg)`` under
    Hydra.

    Before Hydra makes the output folder, the whole command line is checked (see :mod:`dronevision.config_check`:
    types, ranges, required values, unknown keys) and the output folder must take a file: bad input or a full or
    read-only disk is one line and exit 2, with nothing created.

    Args:
        config_name: the command's primary config.
        run: the command, called with the composed config.
        rewrite_overrides: rewrites the command line first (``model=<file>`` -> ``weights=<file>``).
        may_be_missing: ``???`` keys ``run`` fills in itself when they are not given.
        extra_defaults: keys outside the config that the command accepts, with defaults that give their types.
        validators: ``{prefix: check(key, value)}`` for keys checked by other rules than their defaults' types.
    """

    @hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name=config_name)
    def _main(cfg: DictConfig) -> None:
        with user_errors():
            run(cfg)

    def main() -> None:
        from dronevision.config_check import check_overrides, out_dir_of
        from dronevision.fsio import check_writable

        logging.raiseExceptions = False  # a log file on a full disk: the error below says so, not a traceback per line
        try:
            check_group_overrides(sys.argv[1:], groups=config_groups(config_name))
            if rewrite_overrides is not None:
                sys.argv[1:] = rewrite_overrides(sys.argv[1:])
            cfg = check_overrides(
                config_name,
                sys.argv[1:],
                config_dir=CONFIG_DIR,
                may_be_missing=may_be_missing,
                extra_defaults=extra_defaults() if extra_defaults is not None else None,
                validators=validators() if validators is not None else None,
            )
            folder = out_dir_of(cfg) if cfg is not None else None
            if folder is not None:
                with suppress(OSError):  # not about writing (a name too long, ...): Hydra will say what it is
                    check_writable(folder)
        except DroneVisionError as e:
            sys.stderr.write(f"error: {e}\n")
            sys.exit(2)
        _main()

    return main


def write_summary(out_dir: Path, summary: dict[str, Any]) -> Path:
    """Write ``summary.json`` whole or not at all (a reader never sees half a file, a full disk never tears it)."""
    from dronevision.fsio import write_text

    return write_text(out_dir / "summary.json", json.dumps(summary, indent=2, sort_keys=False, default=str) + "\n")
