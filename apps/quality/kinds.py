"""The per-kind parts of an item's life beyond single_choice, behind one interface.

The pipeline, gold scoring, job aggregation, agreement and exports call an `AnswerKind`
(one class per kind, registered in `ANSWER_KINDS`) and never branch on the kind themselves:
a new kind is a kernel module in `algorithms/kinds/` plus one class here.

- `item_outcome`: one item's answers -> its result (canonical JSON text, as stored), the
  per-kind confidence, a per-item agreement and whether the item may stop asking. It runs on
  every label, so it reads only the item's answers and their workers' gold records: tags and
  levels weigh each answer by its worker's accuracy on the job's gold (`gold_units`, shrunk
  towards the policy's assumed accuracy); numbers and boxes use their kernels on the item
  alone (their uncertainty is the answers' own spread).
- `job_results`: the kind's kernel over every answer of the job (workers' biases, noise and
  coins estimated across items), the result a job aggregation writes back.
- `gold_correct`: an answer against a gold answer, with the kind's score and pass line.
- `job_agreement`: Krippendorff's alpha with the kind's distance, mean IoU for boxes.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, ClassVar

import numpy as np

from apps.assignments.models import Label
from apps.jobs.kinds import answer_text, answer_value, schema_kind
from apps.jobs.models import Job
from apps.jobs.policy import Policy
from apps.quality.algorithms.kinds import BoxKind, LabelKind
from apps.quality.algorithms.kinds.bbox import KEPT, REVIEW
from apps.quality.algorithms.kinds.numeric import interval_half_width
from apps.quality.algorithms.kinds.ordinal import ordered_confusions
from apps.workforce.models import Worker

# Gold pass lines, chosen with the scores' meaning, not fitted: half the tags right (Jaccard),
# one level off at most, within the job's tolerance, at least half the boxes matched (F1 at
# IoU 0.5 with the class).
MULTI_GOLD_PASS = 0.5
BOX_GOLD_PASS = 0.5
# A worker of accuracy a reads an ordinal level right with probability a: the prior's spread
# puts that share of a Gaussian within half a level. A small spam share keeps it proper.
ORDINAL_SPAM = 0.05
# Default box agreement (mean IoU with the combined box) that settles an item.
DEFAULT_TARGET_IOU = 0.7


@dataclass(frozen=True)
class ItemOutcome:
    """One item's result under its kind. `label` is canonical JSON text (None: no result)."""

    label: str | None
    confidence: float | None
    agreement: float | None
    confident: bool
    posterior: list[float] | None = None
    extra: dict = field(default_factory=dict)


def _finite(value: float | None, digits: int = 6) -> float | None:
    if value is None or not math.isfinite(float(value)):
        return None
    return round(float(value), digits)


def _prior_accuracy(tier: str, policy: Policy) -> float:
    if tier == Worker.Tier.EXPERT:
        return policy.new_expert_accuracy
    return policy.new_worker_accuracy


def _mean_pairwise(values: list[Any], similarity: Any) -> float | None:
    pairs = list(itertools.combinations(range(len(values)), 2))
    if not pairs:
        return None
    return float(np.mean([similarity(values[a], values[b]) for a, b in pairs]))


class AnswerKind:
    """What each kind provides to the life of an item (see the module docstring)."""

    name: ClassVar[str]
    # Krippendorff's distance the job agreement uses, as named in the API.
    distance: ClassVar[str]

    def item_outcome(
        self,
        *,
        kind: Any,
        schema: dict,
        policy: Policy,
        answers: list[Any],
        accuracy: list[float],
    ) -> ItemOutcome:
        """One item's result from its decoded answers, with each answerer's accuracy (on
        this kind's unit: a tag, a level) as the job's gold measured it."""
        raise NotImplementedError

    def job_results(
        self,
        *,
        kind: Any,
        schema: dict,
        tasks: np.ndarray,
        workers: np.ndarray,
        answers: list[Any],
        n_tasks: int,
        n_workers: int,
        gold: dict[int, Any],
    ) -> list[tuple[str | None, float | None, dict]]:
        """(result text, confidence, result_meta details) per task from the kernel over the
        whole job; `gold` maps the tasks that are gold items to their decoded gold answers."""
        raise NotImplementedError

    def gold_score(self, *, kind: Any, schema: dict, answer: Any, gold: Any) -> tuple[float, bool]:
        """The kind's score of a decoded answer against a gold answer, and whether it passes."""
        raise NotImplementedError

    def gold_units(
        self, *, kind: Any, answers: list[Any], golds: list[Any]
    ) -> tuple[float, float, float] | None:
        """A worker's gold answers in the unit `item_outcome`'s accuracy counts: (units,
        units right, units per answer); None for a kind that does not weigh by accuracy."""
        return None

    def job_agreement(self, *, kind: Any, tasks: np.ndarray, answers: list[Any]) -> float:
        """Krippendorff's alpha with the kind's distance (the kernel's), NaN if unpairable."""
        return float(kind.agreement(tasks, kind.encode(answers)))


class MultiChoice(AnswerKind):
    name = "multi_choice"
    distance = "masi"

    def item_outcome(self, *, kind, schema, policy, answers, accuracy):
        y = kind.encode(answers).astype(np.float64)
        acc = np.clip(np.asarray(accuracy, dtype=np.float64), 1e-3, 1 - 1e-3)
        # One coin per answer, per tag: each yes/no adds +-logit(accuracy) to a tag's log-odds.
        weight = np.log(acc / (1 - acc))[:, None]
        logit = ((2 * y - 1) * weight).sum(axis=0)
        post = 0.5 * (1.0 + np.tanh(0.5 * logit))
        confidence = float(np.min(np.maximum(post, 1 - post)))
        tags = kind.decode((post > 0.5)[None, :])[0]
        sets = [set(a) for a in answers]
        return ItemOutcome(
            label=answer_text(tags),
            confidence=_finite(confidence),
            agreement=_finite(
                _mean_pairwise(sets, lambda a, b: len(a & b) / len(a | b) if a | b else 1.0)
            ),
            confident=confidence >= policy.target_confidence,
            posterior=[round(float(p), 6) for p in post],
            extra={
                "method": "multi_choice",
                "tag_confidence": {
                    t: round(float(p), 6) for t, p in zip(kind.tags, post, strict=True)
                },
            },
        )

    def job_results(self, *, kind, schema, tasks, workers, answers, n_tasks, n_workers, gold):
        r = kind.aggregate(
            tasks, workers, kind.encode(answers), n_tasks=n_tasks, n_workers=n_workers
        )
        labels = kind.decode(r.tags)
        return [
            (
                answer_text(labels[i]) if r.n_answers[i] else None,
                _finite(r.confidence[i]),
                {
                    "tag_confidence": {
                        t: _finite(p) for t, p in zip(kind.tags, r.posterior[i], strict=True)
                    }
                },
            )
            for i in range(n_tasks)
        ]

    def gold_score(self, *, kind, schema, answer, gold):
        score = float(kind.gold_score(kind.encode([answer]), kind.encode([gold]))[0])
        return score, score >= MULTI_GOLD_PASS

    def gold_units(self, *, kind, answers, golds):
        k = len(kind.tags)
        if not answers:
            return 0.0, 0.0, float(k)
        right = (kind.encode(answers) == kind.encode(golds)).sum()
        return float(k * len(answers)), float(right), float(k)


class Ordinal(AnswerKind):
    name = "ordinal"
    distance = "ordinal"

    def item_outcome(self, *, kind, schema, policy, answers, accuracy):
        levels = kind.encode(answers)
        k = len(kind.levels)
        acc = np.clip(np.asarray(accuracy, dtype=np.float64), 1.0 / k + 1e-3, 1 - 1e-6)
        spread = 0.5 / np.array([NormalDist().inv_cdf(0.5 + a / 2) for a in acc])
        conf = ordered_confusions(
            np.zeros(len(levels)), spread, np.full(len(levels), ORDINAL_SPAM), k
        )
        log_post = np.log(conf[np.arange(len(levels)), :, levels]).sum(axis=0)
        post = np.exp(log_post - log_post.max())
        post /= post.sum()
        top = int(np.argmax(post))
        return ItemOutcome(
            label=answer_text(kind.levels[top]),
            confidence=_finite(post[top]),
            agreement=_finite(
                _mean_pairwise(list(levels), lambda a, b: 1.0 - abs(int(a) - int(b)) / (k - 1))
            ),
            confident=float(post[top]) >= policy.target_confidence,
            posterior=[round(float(p), 6) for p in post],
            extra={"method": "ordinal", "expected_level": round(float(post @ np.arange(k)), 6)},
        )

    def job_results(self, *, kind, schema, tasks, workers, answers, n_tasks, n_workers, gold):
        r = kind.aggregate(
            tasks, workers, kind.encode(answers), n_tasks=n_tasks, n_workers=n_workers
        )
        return [
            (
                answer_text(kind.levels[r.level[i]]) if r.level[i] >= 0 else None,
                _finite(r.confidence[i]),
                {"expected_level": _finite(r.expected[i])},
            )
            for i in range(n_tasks)
        ]

    def gold_score(self, *, kind, schema, answer, gold):
        score = float(kind.gold_score(kind.encode([answer]), kind.encode([gold]))[0])
        return score, score >= 1.0 - 1.0 / (len(kind.levels) - 1) - 1e-9

    def gold_units(self, *, kind, answers, golds):
        if not answers:
            return 0.0, 0.0, 1.0
        right = (kind.encode(answers) == kind.encode(golds)).sum()
        return float(len(answers)), float(right), 1.0


class Numeric(AnswerKind):
    name = "numeric"
    distance = "interval"

    def item_outcome(self, *, kind, schema, policy, answers, accuracy):
        tolerance = float(schema["tolerance"])
        x = kind.encode(answers)
        n = len(x)
        r = kind.aggregate(
            np.zeros(n, dtype=np.int64),
            np.arange(n),
            x,
            n_tasks=1,
            n_workers=n,
            tolerance=tolerance,
        )
        span = kind.maximum - kind.minimum
        half = float(r.half_width[0])
        # The item stops once the consensus is pinned down within the tolerance: more
        # answers shrink the worker model's error, never the crowd's shared error, which the
        # reported interval (and confidence) still include. Stopping on the whole interval
        # would send every item whose assumed shared error nearly fills the tolerance to
        # max_labels for nothing.
        consensus = float(interval_half_width(r.se[:1], r.df[:1], 0.0, kind.level)[0])
        return ItemOutcome(
            label=answer_text(_finite(r.value[0])),
            confidence=_finite(r.confidence[0]),
            agreement=_finite(
                _mean_pairwise(list(x), lambda a, b: 1.0 - abs(a - b) / span)
                if math.isfinite(span)
                else None
            ),
            # One answer says nothing of the answers' spread: never confident alone.
            confident=n >= 2 and math.isfinite(consensus) and consensus <= tolerance,
            extra={
                "method": "numeric",
                "interval": [_finite(r.low[0]), _finite(r.high[0])],
                "level": kind.level,
                "half_width": _finite(half),
                "consensus_half_width": _finite(consensus),
                "tolerance": tolerance,
                "unit": kind.unit,
            },
        )

    def job_results(self, *, kind, schema, tasks, workers, answers, n_tasks, n_workers, gold):
        x = kind.encode(answers)
        tolerance = float(schema["tolerance"])
        # With gold items, the crowd's shared error beyond the worker model is measured on
        # them and widens every interval so that it covers the truth, not only the
        # consensus; without, the kernel's assumed share (numeric.SHARED_RATIO).
        gold_tasks = np.fromiter(gold, dtype=np.int64, count=len(gold))
        r = kind.aggregate_with_gold(
            tasks,
            workers,
            x,
            gold_tasks=gold_tasks,
            gold=np.array([float(gold[t]) for t in gold_tasks.tolist()]),
            n_tasks=n_tasks,
            n_workers=n_workers,
            tolerance=tolerance,
        )
        item_var = r.item_var
        return [
            (
                answer_text(_finite(r.value[i])) if r.n_answers[i] else None,
                _finite(r.confidence[i]),
                {
                    "interval": [_finite(r.low[i]), _finite(r.high[i])],
                    "half_width": _finite(r.half_width[i]),
                    "item_var": _finite(item_var),
                },
            )
            for i in range(n_tasks)
        ]

    def gold_score(self, *, kind, schema, answer, gold):
        tolerance = float(schema["tolerance"])
        score = float(
            kind.gold_score(kind.encode([answer]), kind.encode([gold]), tolerance=tolerance)[0]
        )
        return score, abs(float(answer) - float(gold)) <= tolerance


def _boxes_json(kind: BoxKind, boxes: np.ndarray, classes: np.ndarray) -> list[dict]:
    return [
        {
            "box": [
                round(float(x0), 2),
                round(float(y0), 2),
                round(float(x1 - x0), 2),
                round(float(y1 - y0), 2),
            ],
            "class": kind.classes[int(c)],
        }
        for (x0, y0, x1, y1), c in zip(boxes, classes, strict=True)
    ]


class Bbox(AnswerKind):
    name = "bbox"
    distance = "mean_iou"

    def item_outcome(self, *, kind, schema, policy, answers, accuracy):
        target = float(schema.get("target_iou") or DEFAULT_TARGET_IOU)
        n = len(answers)
        boxes = kind.encode(answers)
        r = kind.aggregate(np.zeros(n, dtype=np.int64), np.arange(n), boxes, n_tasks=1, n_workers=n)
        kept = r.obj_status == KEPT
        agreement = r.obj_agreement[kept]
        agreement = agreement[np.isfinite(agreement)]
        # The kernel caps it by the share of submissions that drew no dropped box.
        confidence = float(r.confidence[0])
        return ItemOutcome(
            label=answer_text(_boxes_json(kind, r.obj_box[kept], r.obj_class[kept])),
            confidence=_finite(confidence),
            agreement=_finite(float(agreement.mean()))
            if agreement.size
            else (1.0 if n > 1 and not kept.any() else None),
            confident=math.isfinite(confidence) and confidence >= target,
            extra={
                "method": "bbox",
                "target_iou": target,
                "objects": [
                    {
                        **box,
                        "agreement": _finite(a),
                        "workers": int(w),
                    }
                    for box, a, w in zip(
                        _boxes_json(kind, r.obj_box[kept], r.obj_class[kept]),
                        r.obj_agreement[kept],
                        r.obj_workers[kept],
                        strict=True,
                    )
                ],
                "review_objects": _boxes_json(
                    kind, r.obj_box[r.obj_status == REVIEW], r.obj_class[r.obj_status == REVIEW]
                ),
            },
        )

    def job_results(self, *, kind, schema, tasks, workers, answers, n_tasks, n_workers, gold):
        r = kind.aggregate(
            tasks, workers, kind.encode(answers), n_tasks=n_tasks, n_workers=n_workers
        )
        kept = r.obj_status == KEPT
        out = []
        for i in range(n_tasks):
            mine = kept & (r.obj_task == i)
            label = answer_text(_boxes_json(kind, r.obj_box[mine], r.obj_class[mine]))
            out.append((label if r.n_answers[i] else None, _finite(r.confidence[i]), {}))
        return out

    def gold_score(self, *, kind, schema, answer, gold):
        score = float(kind.gold_score(kind.encode([answer]), kind.encode([gold]))[0])
        return score, score >= BOX_GOLD_PASS


ANSWER_KINDS: dict[str, AnswerKind] = {k.name: k() for k in (MultiChoice, Ordinal, Numeric, Bbox)}


@dataclass(frozen=True)
class JobKind:
    """A job's kind, ready to use: the kernel kind, its adapter and the stored schema."""

    kind: LabelKind
    adapter: AnswerKind
    schema: dict

    @property
    def name(self) -> str:
        return self.adapter.name


def job_kind(label_schema: dict | None) -> JobKind | None:
    """The job's kind with its adapter; None for single_choice."""
    kind = schema_kind(label_schema)
    if kind is None:
        return None
    return JobKind(kind=kind, adapter=ANSWER_KINDS[kind.name], schema=dict(label_schema or {}))


def kind_item_outcome(
    *,
    label_schema: dict,
    policy: Policy,
    answers: list[tuple[int, str, str]],
    accuracies: dict[int, float] | None = None,
) -> ItemOutcome:
    """One item's result from its (worker, stored answer text, tier) answers; a worker's
    accuracy is theirs on the job's gold (`kind_worker_accuracies`), else their tier's
    assumed one."""
    jk = job_kind(label_schema)
    assert jk is not None
    accuracies = accuracies or {}
    return jk.adapter.item_outcome(
        kind=jk.kind,
        schema=jk.schema,
        policy=policy,
        answers=[answer_value(v) for _, v, _ in answers],
        accuracy=[accuracies.get(w, _prior_accuracy(t, policy)) for w, _, t in answers],
    )


def kind_worker_accuracies(
    *, job: Job, workers: list[tuple[int, str]], policy: Policy
) -> dict[int, float]:
    """Each (worker, tier)'s accuracy on the job's gold in the kind's unit (a tag right, a
    level exact), shrunk towards the tier's assumed accuracy by `gold_min_answers` answers'
    worth: a worker's first gold answers move it little, a record moves it much. Kinds that
    weigh answers by their spread (numbers, boxes) answer {}."""
    jk = job_kind(job.label_schema)
    if jk is None or not workers:
        return {}
    rows = Label.objects.filter(
        job=job, worker_id__in=[w for w, _ in workers], is_gold=True
    ).values_list("worker_id", "value", "item__gold_label")
    by_worker: dict[int, tuple[list[Any], list[Any]]] = {}
    for worker_id, value, gold in rows:
        answered, expected = by_worker.setdefault(worker_id, ([], []))
        answered.append(answer_value(value))
        expected.append(answer_value(gold))
    out = {}
    for worker_id, tier in workers:
        answered, expected = by_worker.get(worker_id, ([], []))
        units = jk.adapter.gold_units(kind=jk.kind, answers=answered, golds=expected)
        if units is None:
            return {}
        n, right, per_answer = units
        strength = policy.gold_min_answers * per_answer
        out[worker_id] = (right + strength * _prior_accuracy(tier, policy)) / (n + strength)
    return out


def kind_gold_correct(*, label_schema: dict, answer: str, gold: str) -> bool:
    """Whether a stored answer passes against a stored gold answer, by the kind's score."""
    jk = job_kind(label_schema)
    assert jk is not None
    _, passed = jk.adapter.gold_score(
        kind=jk.kind, schema=jk.schema, answer=answer_value(answer), gold=answer_value(gold)
    )
    return passed


__all__ = [
    "ANSWER_KINDS",
    "AnswerKind",
    "ItemOutcome",
    "JobKind",
    "job_kind",
    "kind_gold_correct",
    "kind_item_outcome",
    "kind_worker_accuracies",
]
