"""Bounding boxes: several workers' boxes matched by IoU into objects, then averaged.

Matching (per item and class): every box scores the sum of its IoUs >= `match_iou` with
other workers' boxes. In rounds, each (item, class) takes its best-scoring unassigned box as
a seed and gives it, from every other worker, that worker's unassigned box overlapping the
seed most (IoU >= `match_iou`): at most one box per worker per object. This is the greedy
matching of Papadopoulos et al. ("Extreme clicking", ICCV 2017 uses its like) and of
detection evaluation (PASCAL VOC), run for all items at once with arrays, so it needs no
scipy; on crowds with well-separated objects it gives the same groups as the Hungarian
assignment (tests/quality/test_kinds.py checks that against scipy).

Combining: each object's box is the worker-weighted mean of its boxes' corners. A worker's
weight is 1 / s_j^2, s_j^2 their mean squared corner error relative to the object's size
(sqrt of area), shrunk towards the pooled value by `prior_boxes` pseudo-boxes; consensus
and weights alternate a few times (Raykar et al. 2010's Gaussian worker model, per
coordinate, with box noise proportional to size).

An object's agreement is the mean IoU of its boxes with the combined box; its support is
the share of the item's submissions that drew it. Kept: support >= `keep_share`. Review:
two or more workers but a smaller share. Dropped: one worker's box among several
submissions. Constants: IoU 0.5 (PASCAL VOC), keep_share 0.5 (a majority), 5 iterations,
3 pseudo-boxes; chosen before the bench was run, not on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import AnswerError, KindResult, group_sum, sizes, within_item_pairs

NAME = "bbox"
KEPT, REVIEW, DROPPED = 0, 1, 2


@dataclass(frozen=True)
class Boxes:
    """Every submission's boxes: submission s owns rows offsets[s]:offsets[s + 1].

    `boxes` are corners (x0, y0, x1, y1) in pixels; `classes` index the kind's classes.
    A submission with no rows says "no object here".
    """

    offsets: np.ndarray  # (n_submissions + 1,) int64
    boxes: np.ndarray  # (m, 4) float64
    classes: np.ndarray  # (m,) int64

    @property
    def owner(self) -> np.ndarray:
        """The submission of each box."""
        counts = np.diff(self.offsets)
        return np.repeat(np.arange(counts.size, dtype=np.int64), counts)

    @classmethod
    def from_lists(
        cls, per_submission: list[list[tuple[float, float, float, float, int]]]
    ) -> Boxes:
        """From per-submission lists of (x0, y0, x1, y1, class)."""
        counts = np.array([len(s) for s in per_submission], dtype=np.int64)
        rows = [b for s in per_submission for b in s]
        arr = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
        return cls(
            offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            boxes=arr[:, :4].copy(),
            classes=arr[:, 4].astype(np.int64),
        )


@dataclass(frozen=True)
class BoxResult(KindResult):
    """The objects found, per item summaries, and the object of every input box.

    `confidence` per item: the lowest agreement among its kept objects, capped by the share
    of its submissions that drew no dropped box; 0 if an object waits for review, if every
    box was dropped (each drawn by one worker only) or the item has a single submission; 1
    if two or more submissions agree there is nothing; NaN without submissions.
    """

    obj_task: np.ndarray  # (n_objects,)
    obj_class: np.ndarray
    obj_box: np.ndarray  # (n_objects, 4)
    obj_support: np.ndarray  # share of the item's submissions that drew it
    obj_workers: np.ndarray  # how many workers drew it
    obj_agreement: np.ndarray  # mean IoU of its boxes with obj_box (NaN for one box)
    obj_status: np.ndarray  # KEPT, REVIEW or DROPPED
    box_object: np.ndarray  # (m,) object of each input box
    worker_noise: np.ndarray  # (n_workers,) s_j, corner error per unit of object size


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of corner boxes a and b (..., 4), broadcasting; 0 where both are empty."""
    ix = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    iy = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = ix * iy
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    return np.divide(inter, union, out=np.zeros_like(inter, dtype=np.float64), where=union > 0)


def match_boxes(
    group: np.ndarray, worker: np.ndarray, boxes: np.ndarray, match_iou: float
) -> np.ndarray:
    """Object id of every box by the greedy rounds of the module docstring."""
    m = group.size
    obj = np.full(m, -1, dtype=np.int64)
    if m == 0:
        return obj
    a, b = within_item_pairs(group)
    ok = worker[a] != worker[b]
    a, b = a[ok], b[ok]
    ov = iou(boxes[a], boxes[b])
    ok = ov >= match_iou
    # Both directions, so "the seed's partners" is one filter on the first column.
    a, b, ov = np.concatenate([a[ok], b[ok]]), np.concatenate([b[ok], a[ok]]), np.tile(ov[ok], 2)
    score = group_sum(a, ov, m)
    next_id = 0
    free = np.ones(m, dtype=bool)
    while free.any():
        idx = np.flatnonzero(free)
        # Best-scoring free box of each group (ties: the lowest index) is the seed.
        order = idx[np.lexsort((idx, -score[idx], group[idx]))]
        _, first = np.unique(group[order], return_index=True)
        seeds = order[first]
        seed_id = np.arange(next_id, next_id + seeds.size)
        obj[seeds] = seed_id
        free[seeds] = False
        is_seed = np.zeros(m, dtype=bool)
        is_seed[seeds] = True
        sel = is_seed[a] & free[b]
        pa, pb, po = a[sel], b[sel], ov[sel]
        if pa.size:
            # Per (seed, partner's worker) keep the partner of largest IoU.
            key_order = np.lexsort((-po, worker[pb], pa))
            pa, pb = pa[key_order], pb[key_order]
            keep = np.ones(pa.size, dtype=bool)
            keep[1:] = (pa[1:] != pa[:-1]) | (worker[pb][1:] != worker[pb][:-1])
            obj[pb[keep]] = obj[pa[keep]]
            free[pb[keep]] = False
        next_id += seeds.size
        # Pairs that touch an assigned box can never be used again.
        live = free[a] & free[b]
        a, b, ov = a[live], b[live], ov[live]
        score = group_sum(a, ov, m)
    return obj


def aggregate_boxes(
    tasks: np.ndarray,
    workers: np.ndarray,
    answers: Boxes,
    *,
    n_tasks: int | None = None,
    n_workers: int | None = None,
    n_classes: int | None = None,
    match_iou: float = 0.5,
    keep_share: float = 0.5,
    n_iter: int = 5,
    prior_boxes: float = 3.0,
    weighted: bool = True,
) -> BoxResult:
    """Match, weight and average (see the module docstring)."""
    tasks, workers, n_tasks, n_workers = sizes(tasks, workers, n_tasks, n_workers)
    owner = answers.owner
    bt, bw, bc = tasks[owner], workers[owner], answers.classes
    boxes = np.asarray(answers.boxes, dtype=np.float64)
    n_sub = np.bincount(tasks, minlength=n_tasks).astype(np.float64)
    n_cls = int(n_classes if n_classes is not None else (bc.max() + 1 if bc.size else 1))
    obj = match_boxes(bt * n_cls + bc, bw, boxes, match_iou)
    n_obj = int(obj.max()) + 1 if obj.size else 0
    cnt = np.bincount(obj, minlength=n_obj).astype(np.float64)
    first = np.full(n_obj, -1, dtype=np.int64)
    first[obj[::-1]] = np.arange(obj.size - 1, -1, -1)
    o_task, o_cls = bt[first] if n_obj else bt[:0], bc[first] if n_obj else bc[:0]
    s2 = np.ones(n_workers)
    noise_sq: np.ndarray = np.zeros(obj.size)
    consensus = np.zeros((n_obj, 4))
    for _ in range(n_iter if weighted else 1):
        w = 1.0 / s2[bw] if weighted else np.ones(obj.size)
        wsum = group_sum(obj, w, n_obj)
        consensus = np.stack([group_sum(obj, w * boxes[:, c], n_obj) for c in range(4)], axis=1)
        consensus /= np.maximum(wsum, 1e-300)[:, None]
        size = np.sqrt(
            np.maximum(
                (consensus[:, 2] - consensus[:, 0]) * (consensus[:, 3] - consensus[:, 1]), 1e-12
            )
        )
        dev = (boxes - consensus[obj]) / size[obj][:, None]
        # A box alone in its object tells nothing about its worker's noise.
        multi = cnt[obj] >= 2
        # The consensus includes the box itself with leverage h = w / sum w: dividing by
        # 1 - h makes the squared deviation unbiased for the worker's variance.
        h = w / np.maximum(wsum[obj], 1e-300)
        noise_sq = np.where(multi, (dev * dev).mean(axis=1) / np.maximum(1.0 - h, 1e-3), 0.0)
        used = group_sum(bw, multi.astype(np.float64), n_workers)
        pooled = float(noise_sq[multi].mean()) if multi.any() else 1.0
        pooled = max(pooled, 1e-8)
        s2 = (group_sum(bw, noise_sq, n_workers) + prior_boxes * pooled) / (used + prior_boxes)
    agreement_box = iou(boxes, consensus[obj]) if n_obj else np.zeros(0)
    agreement = np.where(
        cnt >= 2, group_sum(obj, agreement_box, n_obj) / np.maximum(cnt, 1), np.nan
    )
    n_wk = cnt  # at most one box per worker per object
    share = n_wk / np.maximum(n_sub[o_task], 1.0) if n_obj else np.zeros(0)
    status = np.where(share >= keep_share, KEPT, np.where(n_wk >= 2, REVIEW, DROPPED))
    # One submission on the item: its boxes are kept (share 1) but nothing is confirmed.
    kept = status == KEPT
    worst = np.ones(n_tasks)
    np.minimum.at(worst, o_task[kept], np.nan_to_num(agreement[kept], nan=0.0))
    review = np.zeros(n_tasks, dtype=bool)
    review[o_task[status == REVIEW]] = True
    # A dropped box is one worker's claim the others did not back: the item is only as sure
    # as the share of its submissions that drew no such box (0 when every box was dropped,
    # each drawn by one worker; not 1, as "no kept object disagrees" would say).
    dropped_box = status[obj] == DROPPED if n_obj else np.zeros(0, dtype=bool)
    stray_sub = np.zeros(tasks.size, dtype=bool)
    stray_sub[owner[dropped_box]] = True
    strays = group_sum(tasks, stray_sub.astype(np.float64), n_tasks)
    worst = np.minimum(worst, 1.0 - strays / np.maximum(n_sub, 1.0))
    conf = np.where(review, 0.0, worst)
    conf = np.where(n_sub == 1, 0.0, conf)
    conf = np.where(n_sub == 0, np.nan, conf)
    weight = np.min(s2) / s2 if n_workers else np.zeros(0)
    return BoxResult(
        n_answers=n_sub,
        confidence=conf,
        worker_weight=weight,
        obj_task=o_task,
        obj_class=o_cls,
        obj_box=consensus,
        obj_support=share,
        obj_workers=n_wk,
        obj_agreement=agreement,
        obj_status=status,
        box_object=obj,
        worker_noise=np.sqrt(s2),
    )


def match_f1(
    pred: np.ndarray, pred_cls: np.ndarray, gold: np.ndarray, gold_cls: np.ndarray, threshold: float
) -> tuple[float, np.ndarray]:
    """Greedy one-to-one match of predicted to gold boxes (same class, IoU >= threshold).

    Returns F1 (1 when both are empty) and, per gold box, the IoU of its match (0 if none).
    Pairs are taken in decreasing IoU, as detection evaluation does.
    """
    matched = np.zeros(len(gold))
    if len(pred) == 0 or len(gold) == 0:
        return (1.0 if len(pred) == len(gold) else 0.0), matched
    ov = iou(pred[:, None, :], gold[None, :, :])
    ov[pred_cls[:, None] != gold_cls[None, :]] = 0.0
    used_p = np.zeros(len(pred), dtype=bool)
    for flat in np.argsort(-ov, axis=None):
        p, g = divmod(int(flat), len(gold))
        if ov[p, g] < threshold:
            break
        if used_p[p] or matched[g] > 0:
            continue
        used_p[p] = True
        matched[g] = ov[p, g]
    tp = float((matched > 0).sum())
    return 2 * tp / (len(pred) + len(gold)), matched


@dataclass(frozen=True)
class BoxKind:
    """Boxes of `classes` on an image of `width` x `height` pixels.

    An answer is a list of {"box": [x, y, w, h], "class": name} (COCO's xywh), possibly empty.
    """

    classes: tuple[str, ...]
    width: float
    height: float
    match_iou: float = 0.5
    keep_share: float = 0.5
    name: str = NAME

    def __post_init__(self) -> None:
        if not self.classes:
            raise AnswerError("no_classes", "a bbox kind needs at least one class")
        if not (self.width > 0 and self.height > 0):
            raise AnswerError("bad_image_size", "width and height must be positive")

    def encode(self, answers: list[Any]) -> Boxes:
        index = {c: i for i, c in enumerate(self.classes)}
        per: list[list[tuple[float, float, float, float, int]]] = []
        for n, a in enumerate(answers):
            if not isinstance(a, list):
                raise AnswerError("not_a_list", f"expected a list of boxes, got {a!r}", index=n)
            rows = []
            for b in a:
                if not isinstance(b, dict) or set(b) != {"box", "class"}:
                    raise AnswerError(
                        "bad_box", 'a box is {"box": [x, y, w, h], "class": c}', index=n
                    )
                if b["class"] not in index:
                    raise AnswerError("unknown_class", f"unknown class {b['class']!r}", index=n)
                xywh = b["box"]
                if (
                    not isinstance(xywh, list)
                    or len(xywh) != 4
                    or not all(
                        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                        for v in xywh
                    )
                ):
                    raise AnswerError(
                        "bad_box", "box must be four finite numbers [x, y, w, h]", index=n
                    )
                x, y, w, h = (float(v) for v in xywh)
                if w <= 0 or h <= 0:
                    raise AnswerError("empty_box", "box width and height must be positive", index=n)
                if x < 0 or y < 0 or x + w > self.width or y + h > self.height:
                    raise AnswerError(
                        "outside_image",
                        f"box {xywh} leaves the {self.width}x{self.height} image",
                        index=n,
                    )
                rows.append((x, y, x + w, y + h, index[b["class"]]))
            per.append(rows)
        return Boxes.from_lists(per)

    def aggregate(
        self,
        tasks: np.ndarray,
        workers: np.ndarray,
        answers: Boxes,
        *,
        n_tasks: int | None = None,
        n_workers: int | None = None,
    ) -> BoxResult:
        return aggregate_boxes(
            tasks,
            workers,
            answers,
            n_tasks=n_tasks,
            n_workers=n_workers,
            n_classes=len(self.classes),
            match_iou=self.match_iou,
            keep_share=self.keep_share,
        )

    def agreement(self, tasks: np.ndarray, answers: Boxes) -> float:
        """Mean IoU of every matched box with its object's combined box (NaN if none match)."""
        r = self.aggregate(tasks, np.arange(np.asarray(tasks).size), answers)
        a = r.obj_agreement[np.isfinite(r.obj_agreement)]
        w = r.obj_workers[np.isfinite(r.obj_agreement)]
        return float(np.average(a, weights=w)) if a.size else float("nan")

    def gold_score(self, answers: Boxes, gold: Boxes, *, threshold: float = 0.5) -> np.ndarray:
        """Per submission: F1 of its boxes against the gold boxes (IoU >= threshold, same class)."""
        out = np.empty(answers.offsets.size - 1)
        for s in range(out.size):
            a0, a1 = answers.offsets[s], answers.offsets[s + 1]
            g0, g1 = gold.offsets[s], gold.offsets[s + 1]
            out[s], _ = match_f1(
                answers.boxes[a0:a1],
                answers.classes[a0:a1],
                gold.boxes[g0:g1],
                gold.classes[g0:g1],
                threshold,
            )
        return out

    def is_confident(self, result: KindResult, *, target: float) -> np.ndarray:
        """Every kept object agrees at least `target` (mean IoU) and none waits for review."""
        return np.nan_to_num(result.confidence, nan=0.0) >= target
