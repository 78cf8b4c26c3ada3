"""A job's policy, pricing and routing: one typed definition, with every knob's default,
bounds and meaning in one place.

The job stores them as JSON objects (Job.policy, Job.pricing, Job.routing) holding only
what the client set; `Job.spec` reads them into the frozen dataclasses below, defaults
filled in. The API's validation and its OpenAPI schema are generated from these
definitions (apps.jobs.specs), so a knob is added, documented and bounded here only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from apps.quality.algorithms.methods import METHODS
from apps.routing.algorithms.names import STRATEGIES

AGGREGATION_METHODS = tuple(METHODS)
ROUTES = ("expert", "qc", "auto")
# The review reasons escalation covers, with the alias the policy may use for each.
ESCALATION_KEYS = {
    "disagreement": ("disagreement",),
    "low_posterior": ("low_posterior", "low_confidence"),
}


def knob(
    default: Any,
    help: str,  # noqa: A002 - the OpenAPI word for it
    *,
    low: float | None = None,
    high: float | None = None,
    choices: tuple[str, ...] | None = None,
    nullable: bool = False,
    kind: str | None = None,
) -> Any:
    """A policy field: its default, its meaning and what values it takes (`kind`: "money",
    "targets" {class: confidence}, "routes" {reason: route}, else from the annotation)."""
    meta = {
        "help": help,
        "low": low,
        "high": high,
        "choices": choices,
        "nullable": nullable,
        "kind": kind,
    }
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Policy:
    """Redundancy, confidence, gold, quality rules, leases and escalation."""

    min_labels: int = knob(3, "Labels every item gets before it may settle.", low=1, high=100)
    max_labels: int = knob(
        5, "Most labels an item gets before an unsure one goes to review.", low=1, high=100
    )
    target_confidence: float = knob(
        0.95, "Posterior an item needs to settle.", low=0.5, high=0.99999
    )
    aggregation: str = knob(
        "default", "How a job's labels are aggregated.", choices=AGGREGATION_METHODS
    )
    gold_rate: float = knob(0.1, "Share of leases that are gold (control) items.", low=0, high=1)
    lease_seconds: int = knob(600, "How long a lease lasts.", low=10, high=7 * 24 * 3600)
    max_items_per_worker: int | None = knob(
        None,
        "Most tasks one worker may take in the job (null: no cap).",
        low=1,
        high=10_000_000,
        nullable=True,
    )
    audit_rate: float = knob(0.0, "Share of settled items drawn for a QC audit.", low=0, high=1)
    show_prelabel: bool = knob(False, "Show the client's predicted class as a suggestion.")
    # Adaptive gold rate (apps.quality.gold): new workers get more gold, proven ones less,
    # so the factors may only raise or only lower the job's gold_rate.
    gold_new_factor: float = knob(
        2.0,
        "gold_rate times this for a worker with few gold answers (capped at 1).",
        low=1,
        high=100,
    )
    gold_proven_answers: int = knob(
        20, "Gold answers after which a worker may count as proven.", low=1, high=100_000
    )
    gold_proven_accuracy: float = knob(
        0.8, "Lower Wilson bound of gold accuracy a proven worker reaches.", low=0, high=1
    )
    gold_proven_factor: float = knob(
        0.5, "gold_rate times this for a proven worker.", low=0, high=1
    )
    gold_max_exposures: int = knob(
        200, "A gold item shown this often is retired (it leaks).", low=1, high=10_000_000
    )
    # The quality engine (apps.quality).
    reaggregate_every: int = knob(
        200,
        "Re-aggregate the job after this many new labels (0: only the beat's runs).",
        low=0,
        high=1_000_000,
    )
    reaggregate_growth: float = knob(
        0.1,
        "... or after this share of the labels the last run read, if more: a run reads every "
        "label, so a proportional interval keeps a big job's total work linear.",
        low=0,
        high=10,
    )
    new_worker_accuracy: float = knob(
        0.7, "Accuracy assumed for a crowd worker with no record.", low=0, high=1
    )
    new_expert_accuracy: float = knob(
        0.95, "Accuracy assumed for an expert with no record.", low=0, high=1
    )
    history_strength: float = knob(
        10.0,
        "Pseudo-answers per class a matrix from an earlier job is worth as a prior.",
        low=0,
        high=10_000,
    )
    gold_min_accuracy: float = knob(
        0.6,
        "Suspend when the upper Wilson bound of gold accuracy falls below this ...",
        low=0,
        high=1,
    )
    gold_min_answers: int = knob(
        5, "... once the worker has answered this many gold items.", low=1, high=100_000
    )
    min_median_duration_ms: int | None = knob(
        None,
        "Suspend when the median time of the last answers is below this (null: off).",
        low=0,
        high=24 * 3600 * 1000,
        nullable=True,
    )
    speed_window: int = knob(20, "Answers the speed rule looks at.", low=1, high=10_000)
    suspended_label_weight: float = knob(
        0.0, "How a suspended worker's labels count (0 drops them).", low=0, high=1
    )
    # QC review and expert escalation (apps.reviews).
    escalation: dict = knob(
        {},
        'Where disputed items go first: {"disagreement"|"low_posterior": '
        '"expert"|"qc"|"auto"} ("auto": an expert if one is available, else QC).',
        kind="routes",
    )
    expert_weight: float = knob(
        1.0, "How many crowd votes an expert's label counts as.", low=0, high=100
    )
    expert_timeout_seconds: int = knob(
        24 * 3600,
        "How long an item waits for an expert before QC takes it.",
        low=60,
        high=30 * 24 * 3600,
    )

    def route_for(self, reason: str) -> str:
        """Where a disputed item goes first for a review `reason`: "expert", "qc" or "auto"
        (an expert if one is available, else QC). The policy covers "disagreement" and
        "low_posterior" (alias "low_confidence"); other reasons go to QC."""
        keys = ESCALATION_KEYS.get(reason)
        if not keys:
            return "qc"
        choice = next((self.escalation[k] for k in keys if k in self.escalation), "auto")
        return choice if choice in ROUTES else "auto"


@dataclass(frozen=True)
class Pricing:
    """What a label pays, by tier (in the vendor's currency)."""

    crowd_label: float = knob(0.05, "Price of a crowd label, 0 to 10000.", kind="money")
    expert_label: float = knob(0.5, "Price of an expert label, 0 to 10000.", kind="money")


@dataclass(frozen=True)
class Routing:
    """Model-confidence routing and active learning (apps.routing)."""

    mode: str = knob("off", "Route by a model's confidence.", choices=("off", "model"))
    target_accuracy: float = knob(
        0.95, "Accuracy auto-accepted items must reach (lower bound).", low=0.5, high=0.99999
    )
    strategy: str = knob("fifo", "Which items people label next.", choices=STRATEGIES)
    min_labels: int = knob(
        1, "Labels a routed item needs before the cost-aware rule may stop.", low=1, high=100
    )
    value_per_correct: float | None = knob(
        None,
        "Worth of one correct label (null: 25 crowd labels).",
        low=0,
        high=1_000_000,
        nullable=True,
    )
    class_targets: dict = knob({}, "Per-class target confidence, by class name.", kind="targets")
    retrain_every: int = knob(
        100, "Retrain after this many newly settled human items.", low=1, high=1_000_000
    )
    min_train: int = knob(50, "No model before this many settled items.", low=2, high=1_000_000)
    seed_share: float = knob(
        0.1,
        "Share of the job people settle alone before the first model (at least min_train).",
        low=0,
        high=1,
    )
    seed_max: int = knob(
        250, "Most items people settle alone before the first model.", low=2, high=1_000_000
    )
    round_share: float = knob(
        0.05, "Share of the job the query strategy sends to people per round.", low=0, high=1
    )
    round_min: int = knob(20, "Fewest items per active-learning round.", low=1, high=1_000_000)
    max_rounds: int = knob(
        6, "Active-learning rounds before every remaining item goes to people.", low=0, high=1000
    )
    reference_max_labels: int = knob(
        15,
        "Most crowd labels an item people settle alone (seed set, audits) gets before an "
        "unsure one goes to an expert (never fewer than the policy's max_labels).",
        low=1,
        high=100,
    )
    audit_min: int = knob(
        20,
        "Audits of a threshold needed before they can overturn it (raise it).",
        low=1,
        high=1_000_000,
    )
    audit_rate: float = knob(0.03, "Share of confident items still sent to people.", low=0, high=1)
    slice_field: str | None = knob(
        None, "A payload field whose values name slices of the model card.", nullable=True
    )
    prelabels: bool = knob(False, "Show the model's suggestion to annotators.")
    model_kind: str = knob("mlp", "The routing model.", choices=("mlp", "softmax"))
    epochs: int = knob(300, "Training epochs.", low=1, high=10_000)
    hidden: int = knob(64, "Hidden units of the MLP.", low=1, high=4096)
    folds: int = knob(5, "Folds of the out-of-fold calibration.", low=2, high=20)
    weight_decay: float = knob(1e-3, "L2 penalty of the model.", low=0, high=10)
    bound_level: float = knob(
        0.9,
        "One-sided confidence of the accuracy bound behind the threshold.",
        low=0.5,
        high=0.99999,
    )
    expert_below: float = knob(
        0.6,
        "Below this model confidence, with a split crowd, an item goes to an expert.",
        low=0,
        high=1,
    )
    max_expert_per_pass: int = knob(
        200, "Most items sent to experts per routing pass.", low=0, high=100_000
    )
    min_compare: int = knob(
        20, "Unseen settled items needed to compare a candidate model.", low=1, high=1_000_000
    )


@dataclass(frozen=True)
class JobSpec:
    """A job's policy, pricing and routing, defaults filled in."""

    policy: Policy
    pricing: Pricing
    routing: Routing


def _coerce(spec_field: dataclasses.Field, value: Any) -> Any:
    """A stored value as its knob's type (jobs stored before validation may hold "3" or 3.0
    for an integer); a value that cannot be read as one is the default."""
    annotation = str(spec_field.type)
    if value is None:
        return None if spec_field.metadata["nullable"] else _default(spec_field)
    try:
        if annotation.startswith("bool"):
            return value if isinstance(value, bool) else str(value).lower() in ("1", "true")
        if annotation.startswith("int"):
            number = float(value)
            return int(number) if number.is_integer() else _default(spec_field)
        if annotation.startswith("float"):
            return float(value)
    except (TypeError, ValueError, OverflowError):
        return _default(spec_field)
    if annotation == "dict":
        return dict(value) if isinstance(value, dict) else _default(spec_field)
    return value


def _default(spec_field: dataclasses.Field) -> Any:
    if spec_field.default_factory is not dataclasses.MISSING:
        return spec_field.default_factory()
    return spec_field.default


def normalized(cls: type, stored: dict | None) -> dict[str, Any]:
    """A stored spec part with its known keys read as their types and the escalation alias
    "low_confidence" renamed "low_posterior"; keys nobody knows are kept as they are (a
    client may send back what it read) and ignored when the job runs."""
    stored = dict(stored) if isinstance(stored, dict) else {}
    for spec_field in dataclasses.fields(cls):
        if spec_field.name in stored:
            stored[spec_field.name] = _coerce(spec_field, stored[spec_field.name])
    escalation = stored.get("escalation")
    if cls is Policy and isinstance(escalation, dict) and "low_confidence" in escalation:
        escalation = dict(escalation)
        escalation.setdefault("low_posterior", escalation.pop("low_confidence"))
        stored["escalation"] = escalation
    return stored


def _typed(cls: type, stored: dict | None) -> Any:
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in normalized(cls, stored).items() if k in known})


def routing_from_stored(routing: dict | None) -> Routing:
    """The typed routing part alone (a job read without its other spec columns)."""
    return _typed(Routing, routing)


def spec_from_stored(*, policy: dict | None, pricing: dict | None, routing: dict | None) -> JobSpec:
    """The typed spec of a job's stored JSON (read as `normalized` says; migration
    jobs.0003 stored every job's spec normalized)."""
    return JobSpec(
        policy=_typed(Policy, policy),
        pricing=_typed(Pricing, pricing),
        routing=_typed(Routing, routing),
    )
