"""Tracking accuracy against ground truth: VisDrone-VID/MOT or CVAT-video tracks, scored with TrackEval.

Frames are 0-based decoded-frame indices here (VisDrone-VID's frame 1 is frame 0; CVAT's frame 0 is frame 0).
Only the frames the tracker processed are scored, so ``every_s`` sampling is scored on what it saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dronevision.errors import DroneVisionError
from dronevision.infer.merge import pairwise_overlap

Frames = dict[int, tuple[np.ndarray, np.ndarray]]  # frame -> (object ids (N,), xyxy (N, 4))


class _AnyFrame(Sequence[Path]):
    """Stand-in frame files for the CVAT reader: only the boxes are wanted here, not the pictures."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: Any) -> Any:
        return Path(f"{i}")


def load_truth(fmt: str, path: Path) -> Frames:
    """Ground-truth tracks of one video: ``visdrone-vid`` (a VisDrone-VID/MOT ``.txt``) or ``cvat-video`` (XML).

    Raises:
        DroneVisionError: the file is missing or malformed (the readers' one-line messages, with file and line).
    """
    from dronevision.dataset.records import Issues

    if not path.is_file():
        raise DroneVisionError(f"{path}: ground-truth file does not exist")
    issues = Issues("raise")
    out: Frames = {}
    if fmt == "visdrone-vid":
        from dronevision.dataset.visdrone import parse_visdrone_lines

        parsed = parse_visdrone_lines(path.read_text().splitlines(), source=path, issues=issues, video=True)
        for frame, boxes in parsed.items():
            out[frame - 1] = (np.asarray(boxes.target_id, np.int64), np.asarray(boxes.xyxy, np.float64).reshape(-1, 4))
    elif fmt == "cvat-video":
        from dronevision.dataset.cvat import parse_cvat_video

        records = parse_cvat_video(path.read_text(), frames=_AnyFrame(10**9), issues=issues, where=str(path),
                                   sequence="video")  # fmt: skip
        for frame, record in enumerate(records):
            out[frame] = (record.attrs["target_id"], np.asarray(record.xyxy, np.float64).reshape(-1, 4))
    else:
        raise DroneVisionError(f"labels.format must be visdrone-vid or cvat-video, got '{fmt}'")
    return out


def _contiguous(ids: Sequence[np.ndarray]) -> tuple[list[np.ndarray], int]:
    unique = np.unique(np.concatenate([np.asarray(i, np.int64) for i in ids])) if ids else np.zeros(0, np.int64)
    return [np.searchsorted(unique, np.asarray(i, np.int64)) for i in ids], len(unique)


def mot_metrics(truth: Frames, predicted: Frames, frames: Sequence[int], *, iou: float = 0.5) -> dict[str, Any]:
    """MOTA, IDF1, HOTA, identity switches and the counts behind them, on ``frames`` (TrackEval's CLEAR, Identity
    and HOTA metrics). ``iou`` is the match threshold of MOTA and IDF1 (HOTA averages over 0.05..0.95)."""
    try:
        from trackeval.metrics import CLEAR, HOTA, Identity
    except ImportError:
        raise DroneVisionError("MOT metrics need TrackEval: pip install 'dronevision[mot]'") from None
    empty = (np.zeros(0, np.int64), np.zeros((0, 4)))
    gt = [truth.get(f, empty) for f in frames]
    tr = [predicted.get(f, empty) for f in frames]
    gt_ids, n_gt = _contiguous([g[0] for g in gt])
    tr_ids, n_tr = _contiguous([t[0] for t in tr])
    data = {
        "num_timesteps": len(frames),
        "num_gt_ids": n_gt,
        "num_tracker_ids": n_tr,
        "num_gt_dets": sum(len(g[0]) for g in gt),
        "num_tracker_dets": sum(len(t[0]) for t in tr),
        "gt_ids": gt_ids,
        "tracker_ids": tr_ids,
        "similarity_scores": [pairwise_overlap(g[1], t[1], match="iou") for g, t in zip(gt, tr)],
    }
    config = {"THRESHOLD": iou, "PRINT_CONFIG": False}
    clear, identity, hota = (
        CLEAR(config).eval_sequence(data),
        Identity(config).eval_sequence(data),
        HOTA().eval_sequence(data),
    )
    return {
        "frames": len(frames),
        "gt_objects": n_gt,
        "gt_boxes": data["num_gt_dets"],
        "tracked_boxes": data["num_tracker_dets"],
        "MOTA": round(float(clear["MOTA"]), 4),
        "MOTP": round(float(clear["MOTP"]), 4),
        "IDF1": round(float(identity["IDF1"]), 4),
        "HOTA": round(float(np.mean(hota["HOTA"])), 4),
        "id_switches": int(clear["IDSW"]),
        "false_positives": int(clear["CLR_FP"]),
        "misses": int(clear["CLR_FN"]),
        "iou": iou,
    }
