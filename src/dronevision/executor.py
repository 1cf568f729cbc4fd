"""Run one task per video, in this process, in a local process pool, or on Ray (the `executor/` config group)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dronevision.errors import DroneVisionError


def run_tasks(
    fn: Callable[..., dict[str, Any]],
    tasks: Sequence[tuple[Any, ...]],
    executor: Mapping[str, Any],
    *,
    workers: int | None = None,
    desc: str = "videos",
) -> list[dict[str, Any]]:
    """``[fn(*task) for task in tasks]``, in input order, run by ``executor.name``.

    ``local`` runs in this process when ``workers`` is 1 (or there is one task), else in a spawn pool of
    ``workers`` processes (None: one per core, at most one per task). ``ray`` runs one Ray task per item on a local
    Ray instance, or on the cluster at ``executor.address``.
    """
    from tqdm import tqdm

    workers = int(workers or min(len(tasks), os.cpu_count() or 1))
    name = executor.get("name")
    if name == "ray":
        import ray

        address = executor.get("address")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if not ray.is_initialized():
            ray.init(
                address=address or None,
                num_cpus=None if address else workers,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
        remote = ray.remote(fn)
        refs = [remote.remote(*task) for task in tasks]
        return [ray.get(ref) for ref in tqdm(refs, desc=desc, unit="video", leave=False)]
    if name != "local":
        raise DroneVisionError(f"executor must be local or ray, got '{name}'")
    if workers <= 1 or len(tasks) == 1:
        return [fn(*task) for task in tqdm(tasks, desc=desc, unit="video", leave=False)]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(fn, *task) for task in tasks]
        return [f.result() for f in tqdm(futures, desc=desc, unit="video", leave=False)]
