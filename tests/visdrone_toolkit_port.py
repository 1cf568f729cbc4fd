"""TEST ORACLE ONLY: a literal Python transliteration of the official VisDrone-DET toolkit's MATLAB scoring.

The official scorer is the MATLAB code in the public repository VisDrone/VisDrone2018-DET-toolkit. MATLAB cannot run
here, so this file stands in for it: tests compare :func:`dronevision.evaluate.protocols.visdrone_protocol` with it.
It is deliberately slow and literal, loop for loop, and must not be used by the package or "improved":

- ``evalDET.m``              -> :func:`eval_det` (the driver; image sizes are passed in instead of ``imread``)
- ``utils/findImageList.m``  -> :func:`find_image_list`
- ``utils/saveAnnoRes.m``    -> :func:`save_anno_res` (the 5-argument version that evalDET.m calls: it reads image
  sizes and calls dropObjectsInIgr; it does NOT sort the detections, so a result file must already be sorted by score)
- ``utils/dropObjectsInIgr.m`` -> :func:`drop_objects_in_igr`; ``utils/createIntImg.m`` -> :func:`create_int_img`
- ``utils/calcAccuracy.m``   -> :func:`calc_accuracy` (the version that averages over ``evalClass``: every class once
  per image that holds a ground-truth box of it, so the overall numbers weight classes by their number of images)
- ``utils/evalRes.m`` -> :func:`eval_res`; ``utils/compOas.m`` -> :func:`comp_oas`; ``utils/VOCap.m`` -> :func:`voc_ap`

MATLAB's 1-based indices are kept in the arithmetic (``x``, ``y``, ``w``, ``h`` of dropObjectsInIgr) and converted
only where an array is read (``[y - 1, x - 1]``). ``round`` is MATLAB's (halves away from zero), ``sort`` is stable.
Where MATLAB itself would stop with an error the port raises :class:`ToolkitError`: a result or annotation file with
no lines (``load`` gives a 0x0 matrix, and ``det(1:0, 6)`` is out of bounds) and non-integer ignored-region corners
(used as indices).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

import numpy as np


class ToolkitError(Exception):
    """Where the MATLAB toolkit would stop with an error."""


def mround(v: float) -> float:
    """MATLAB ``round``: halves away from zero."""
    return math.copysign(math.floor(abs(v) + 0.5), v)


def load(path: str) -> np.ndarray:
    """MATLAB ``load`` of a comma-separated text file: a numeric matrix, 0x0 for an empty file."""
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                rows.append([float(v) for v in line.rstrip(",").split(",")])
    if not rows:
        return np.zeros((0, 0))
    return np.array(rows, dtype=np.float64)


def find_image_list(gt_path: str) -> list[str]:
    """findImageList.m: the names in the annotation folder (``dir`` lists them sorted)."""
    return sorted(n for n in os.listdir(gt_path) if n not in (".", ".."))


def create_int_img(img: np.ndarray) -> np.ndarray:
    """createIntImg.m: integral image, inclusive (``int(i, j)`` = sum of ``img(1:i, 1:j)``)."""
    height, width = img.shape
    int_img = img.copy()
    for i in range(2, height + 1):
        int_img[i - 1, 0] = int_img[i - 1, 0] + int_img[i - 2, 0]
    for j in range(2, width + 1):
        int_img[0, j - 1] = int_img[0, j - 1] + int_img[0, j - 2]
    for i in range(2, height + 1):
        for j in range(2, width + 1):
            int_img[i - 1, j - 1] = (
                int_img[i - 1, j - 1] + int_img[i - 2, j - 1] + int_img[i - 1, j - 2] - int_img[i - 2, j - 2]
            )
    return int_img


def _drop_in_igr_loop(boxes: np.ndarray, int_igr_map: np.ndarray, img_height: int, img_width: int) -> list[int]:
    """The loop dropObjectsInIgr.m runs twice (over gt, then det): indices (0-based) of the boxes kept."""
    idx_left = []
    for i in range(boxes.shape[0]):
        pos = [max(1.0, mround(v)) for v in boxes[i, 0:4]]
        x = int(max(1, min(img_width, pos[0])))
        y = int(max(1, min(img_height, pos[1])))
        w = int(pos[2])
        h = int(pos[3])
        tl = int_igr_map[y - 1, x - 1]
        tr = int_igr_map[y - 1, min(img_width, x + w) - 1]
        bl = int_igr_map[max(1, min(img_height, y + h)) - 1, x - 1]
        br = int_igr_map[max(1, min(img_height, y + h)) - 1, min(img_width, x + w) - 1]
        igr_val = tl + br - tr - bl
        if igr_val / (h * w) < 0.5:
            idx_left.append(i)
    return idx_left


def drop_objects_in_igr(
    gt: np.ndarray, det: np.ndarray, img_height: int, img_width: int
) -> tuple[np.ndarray, np.ndarray]:
    """dropObjectsInIgr.m: drop gt objects and detections at least half inside the ignored regions (category 0)."""
    if gt.shape[1] < 6:
        raise ToolkitError("gt(:, 6) of an empty annotation file: index out of bounds")
    idx_fr = gt[:, 5] != 0
    curgt = gt[idx_fr, :]
    idx_igr = gt[:, 5] == 0
    igr_region = np.maximum(1, gt[idx_igr, 0:4])
    if igr_region.size:
        if np.any(igr_region != np.round(igr_region)):
            raise ToolkitError("non-integer ignored-region corners used as indices")
        igr_map = np.zeros((img_height, img_width))
        num_igr = igr_region.shape[0]
        for j in range(num_igr):
            r0, c0 = int(igr_region[j, 1]), int(igr_region[j, 0])
            r1 = int(min(img_height, igr_region[j, 1] + igr_region[j, 3]))
            c1 = int(min(img_width, igr_region[j, 0] + igr_region[j, 2]))
            igr_map[r0 - 1 : r1, c0 - 1 : c1] = 1  # igrMap(r0:r1, c0:c1) = 1 (empty when r0 > r1)
        int_igr_map = create_int_img(igr_map.astype(np.float64))
        curgt = curgt[_drop_in_igr_loop(curgt, int_igr_map, img_height, img_width), :]
        if det.shape[0]:
            det = det[_drop_in_igr_loop(det, int_igr_map, img_height, img_width), :]
    return curgt, det


def save_anno_res(
    gt_path: str, res_path: str, image_sizes: Mapping[str, tuple[int, int]], num_imgs: int, name_imgs: list[str]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """saveAnnoRes.m (5 arguments): load, drop objects in ignored regions, turn the gt score into an ignore flag.

    ``image_sizes`` maps an annotation file's name to ``(height, width)`` (the MATLAB reads them with ``imread``).
    """
    allgt: list[np.ndarray] = [np.zeros((0, 0))] * num_imgs
    alldet: list[np.ndarray] = [np.zeros((0, 0))] * num_imgs
    for id_img in range(1, num_imgs + 1):
        name = name_imgs[id_img - 1]
        oldgt = load(os.path.join(gt_path, name))
        olddet = load(os.path.join(res_path, name))
        img_height, img_width = image_sizes[name]
        newgt, det = drop_objects_in_igr(oldgt, olddet, img_height, img_width)
        gt = newgt.copy()
        gt[newgt[:, 4] == 0, 4] = 1
        gt[newgt[:, 4] == 1, 4] = 0
        allgt[id_img - 1] = gt
        alldet[id_img - 1] = det
    return allgt, alldet


def comp_oas(dt: np.ndarray, gt: np.ndarray, ig: np.ndarray | None = None) -> np.ndarray:
    """compOas.m: IoU, or intersection over the detection's area for gt flagged ignore."""
    m = dt.shape[0]
    n = gt.shape[0]
    oa = np.zeros((m, n))
    if ig is None:
        ig = np.zeros(n)
    dtl, gtl, igl = dt.tolist(), gt.tolist(), list(ig)
    de = [[r[0] + r[2], r[1] + r[3]] for r in dtl]
    da = [r[2] * r[3] for r in dtl]
    ge = [[r[0] + r[2], r[1] + r[3]] for r in gtl]
    ga = [r[2] * r[3] for r in gtl]
    for i in range(m):
        for j in range(n):
            w = min(de[i][0], ge[j][0]) - max(dtl[i][0], gtl[j][0])
            if w <= 0:
                continue
            h = min(de[i][1], ge[j][1]) - max(dtl[i][1], gtl[j][1])
            if h <= 0:
                continue
            t = w * h
            u = da[i] if igl[j] else da[i] + ga[j] - t
            oa[i, j] = t / u
    return oa


def eval_res(gt0: np.ndarray, dt0: np.ndarray, thr: float = 0.7, mul: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """evalRes.m: greedy matching, highest score first; gt rows ``[x y w h ignore]``, dt rows ``[x y w h score]``.

    Returns gt ``[x y w h match]`` (-1 ignore, 0 fn, 1 tp) and dt ``[x y w h score match]`` (-1 ignore, 0 fp, 1 tp).
    """
    if gt0.size == 0:
        gt0 = np.zeros((0, 5))
    if dt0.size == 0:
        dt0 = np.zeros((0, 5))
    assert dt0.shape[1] == 5
    nd = dt0.shape[0]
    assert gt0.shape[1] == 5
    ng = gt0.shape[0]
    ord_ = np.argsort(-dt0[:, 4], kind="stable")  # sort(..., 'descend') keeps equal elements in order
    dt0 = dt0[ord_, :]
    ord_ = np.argsort(gt0[:, 4], kind="stable")
    gt0 = gt0[ord_, :]
    gt = gt0.copy()
    dt = np.concatenate([dt0, np.zeros((nd, 1))], axis=1)
    gt[:, 4] = -gt[:, 4]
    oa = comp_oas(dt[:, 0:4], gt[:, 0:4], gt[:, 4] == -1)
    for d in range(1, nd + 1):
        bst_oa = thr
        bstg = 0
        bstm = 0
        for g in range(1, ng + 1):
            m = gt[g - 1, 4]
            if m == 1 and not mul:
                continue
            if bstm != 0 and m == -1:
                break
            if oa[d - 1, g - 1] < bst_oa:
                continue
            bst_oa = oa[d - 1, g - 1]
            bstg = g
            bstm = 1 if m == 0 else -1
        g = bstg
        m = bstm
        if m == -1:
            dt[d - 1, 5] = m
        elif m == 1:
            gt[g - 1, 4] = m
            dt[d - 1, 5] = m
    return gt, dt


def voc_ap(rec: np.ndarray, prec: np.ndarray) -> float:
    """VOCap.m: all-point interpolated average precision."""
    mrec = np.concatenate([[0.0], rec, [1.0]])
    mpre = np.concatenate([[0.0], prec, [0.0]])
    for i in range(len(mpre) - 1, 0, -1):  # i = numel(mpre)-1:-1:1 (1-based)
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    i = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[i] - mrec[i - 1]) * mpre[i]))


def _matlab_colon(a: float, step: float, b: float) -> list[float]:
    """``a:step:b`` (the values MATLAB's colon operator produces for 0.5:0.05:0.95)."""
    n = int(math.floor((b - a) / step + 1e-10))
    return [a + k * step if k <= n / 2 else b - (n - k) * step for k in range(n + 1)]


def calc_accuracy(num_imgs: int, allgt: list[np.ndarray], alldet: list[np.ndarray]) -> dict:
    """calcAccuracy.m: AP per class and IoU threshold (maxDets 500) and AR per class, threshold and maxDets.

    Returns the seven printed numbers (percent) and the ``AP`` (10x10) and ``AR`` (10x10x4) matrices.
    """
    ap = np.zeros((10, 10))
    ar = np.zeros((10, 10, 4))
    eval_class: list[int] = []
    for id_class in range(1, 11):
        for id_img in range(1, num_imgs + 1):
            gt = allgt[id_img - 1]
            if np.count_nonzero(gt[:, 5] == id_class):
                eval_class.append(id_class)
        x = 0
        for thr in _matlab_colon(0.5, 0.05, 0.95):
            x = x + 1
            y = 0
            for max_dets in (1, 10, 100, 500):
                y = y + 1
                gt_match: list[float] = []
                det_match: list[list[float]] = []
                for id_img in range(1, num_imgs + 1):
                    gt = allgt[id_img - 1]
                    det = alldet[id_img - 1]
                    if det.shape[1] < 6:
                        raise ToolkitError("det(1:0, 6) of an empty result file: index out of bounds")
                    idx_gt_cur_class = gt[:, 5] == id_class
                    first = det[0 : min(det.shape[0], max_dets), :]
                    idx_det_cur_class = first[:, 5] == id_class
                    gt0 = gt[idx_gt_cur_class, 0:5]
                    dt0 = first[idx_det_cur_class, 0:5]
                    gt1, dt1 = eval_res(gt0, dt0, thr)
                    gt_match.extend(gt1[:, 4].tolist())
                    det_match.extend(dt1[:, 4:6].tolist())
                dm = np.array(det_match).reshape(-1, 2)
                idrank = np.argsort(-dm[:, 0], kind="stable")
                tp = np.cumsum(dm[idrank, 1] == 1)
                rec = tp / max(1, len(gt_match))
                if rec.size:
                    ar[id_class - 1, x - 1, y - 1] = np.max(rec) * 100
            fp = np.cumsum(dm[idrank, 1] == 0)
            prec = tp / np.maximum(1, fp + tp)
            ap[id_class - 1, x - 1] = voc_ap(rec, prec) * 100
    rows = [c - 1 for c in eval_class]  # AP(evalClass, :) repeats a class once per image that has it
    mean2 = (lambda a: float(np.mean(a))) if rows else (lambda a: float("nan"))
    return {
        "AP_all": mean2(ap[rows, :]),
        "AP_50": mean2(ap[rows, 0]),
        "AP_75": mean2(ap[rows, 5]),
        "AR_1": mean2(ar[rows, :, 0]),
        "AR_10": mean2(ar[rows, :, 1]),
        "AR_100": mean2(ar[rows, :, 2]),
        "AR_500": mean2(ar[rows, :, 3]),
        "AP": ap,
        "AR": ar,
        "evalClass": eval_class,
    }


def eval_det(gt_path: str, res_path: str, image_sizes: Mapping[str, tuple[int, int]]) -> dict:
    """evalDET.m: score a folder of result files against a folder of annotation files (percent, as printed).

    ``image_sizes`` maps each annotation file name (``<stem>.txt``) to the image's ``(height, width)``.
    """
    name_imgs = find_image_list(gt_path)
    num_imgs = len(name_imgs)
    allgt, alldet = save_anno_res(gt_path, res_path, image_sizes, num_imgs, name_imgs)
    return calc_accuracy(num_imgs, allgt, alldet)
