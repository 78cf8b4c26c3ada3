"""Validation of a job's specification: label schema, policy, pricing and routing."""

from __future__ import annotations

import difflib
from typing import Any

from rest_framework import serializers

from apps.common.fields import FiniteFloatField, MoneyField, UniqueListField
from apps.quality.algorithms.methods import METHODS as AGGREGATORS
from apps.routing.algorithms.names import STRATEGIES

# The names the kernels know, so that a policy can only name a method that exists.
AGGREGATION_METHODS = tuple(AGGREGATORS)
ROUTING_STRATEGIES = STRATEGIES


class LabelSchemaSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=["single_choice"], default="single_choice")
    # A job without classes used to be accepted and then fail at launch.
    classes = UniqueListField(
        child=serializers.CharField(max_length=200),
        min_length=2,
        max_length=1000,
        error_messages={"not_unique": "Class names must be unique."},
        help_text="The answer classes: 2 to 1000 distinct names.",
    )


def _unknown_keys(
    serializer: serializers.Serializer, data: dict, stored: dict | None
) -> dict[str, list[str]]:
    """Errors for the keys of `data` this part of the job spec does not know, each with the
    nearest valid key. A key the job already holds with the same value is let through: a
    job stored before keys were checked still takes back what a client read from it."""
    known = list(serializer.fields)
    errors = {}
    for key in data:
        if key in serializer.fields or (stored is not None and stored.get(key) == data[key]):
            continue
        nearest = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
        hint = f" Did you mean {nearest[0]!r}?" if nearest else ""
        errors[str(key)] = [f"Unknown key {key!r}.{hint}"]
    return errors


class _SpecPart(serializers.Serializer):
    """A part of the job spec (policy, pricing, routing): known keys checked, unknown ones a
    400 naming the nearest valid key (a typo like `min_lables` no longer stored silently).

    The job being changed, if any, comes in the context as `job`."""

    def to_internal_value(self, data: Any) -> dict:
        if not isinstance(data, dict):
            raise serializers.ValidationError("Must be an object.")
        job = self.context.get("job")
        stored = getattr(job, self.field_name, None) if job is not None else None
        errors = _unknown_keys(self, data, stored if isinstance(stored, dict) else None)
        if errors:
            raise serializers.ValidationError(errors)
        return {**data, **super().to_internal_value(data)}


class PolicySerializer(_SpecPart):
    show_prelabel = serializers.BooleanField(
        required=False, help_text="Show the client's predicted class as a suggestion."
    )
    min_labels = serializers.IntegerField(min_value=1, max_value=100, required=False)
    max_labels = serializers.IntegerField(min_value=1, max_value=100, required=False)
    target_confidence = FiniteFloatField(min_value=0.5, max_value=0.99999, required=False)
    gold_rate = FiniteFloatField(min_value=0.0, max_value=1.0, required=False)
    lease_seconds = serializers.IntegerField(min_value=10, max_value=7 * 24 * 3600, required=False)
    max_items_per_worker = serializers.IntegerField(
        min_value=1, max_value=10_000_000, allow_null=True, required=False
    )
    aggregation = serializers.ChoiceField(choices=AGGREGATION_METHODS, required=False)
    audit_rate = FiniteFloatField(min_value=0.0, max_value=1.0, required=False)
    # Adaptive gold rate (apps.quality.services.gold_rate_for): new workers get more gold,
    # proven ones less, so the factors may only raise or only lower the job's gold_rate.
    gold_new_factor = FiniteFloatField(min_value=1.0, max_value=100.0, required=False)
    gold_proven_answers = serializers.IntegerField(min_value=1, max_value=100_000, required=False)
    gold_proven_accuracy = FiniteFloatField(min_value=0.0, max_value=1.0, required=False)
    gold_proven_factor = FiniteFloatField(min_value=0.0, max_value=1.0, required=False)

    # Quality engine (apps.quality.services.QUALITY_DEFAULTS).
    reaggregate_every = serializers.IntegerField(min_value=0, max_value=1_000_000, required=False)
    reaggregate_growth = FiniteFloatField(min_value=0.0, max_value=10.0, required=False)
    new_worker_accuracy = FiniteFloatField(min_value=0.0, max_value=1.0, required=False)
    new_expert_accuracy = FiniteFloatField(min_value=0.0, max_value=1.0, required=False)
    history_strength = FiniteFloatField(min_value=0.0, max_value=10_000.0, required=False)
    gold_min_accuracy = FiniteFloatField(min_value=0.0, max_value=1.0, required=False)
    gold_min_answers = serializers.IntegerField(min_value=1, max_value=100_000, required=False)
    gold_max_exposures = serializers.IntegerField(min_value=1, max_value=10_000_000, required=False)
    min_median_duration_ms = serializers.IntegerField(
        min_value=0, max_value=24 * 3600 * 1000, allow_null=True, required=False
    )
    speed_window = serializers.IntegerField(min_value=1, max_value=10_000, required=False)
    suspended_label_weight = FiniteFloatField(min_value=0.0, max_value=1.0, required=False)
    # QC review and expert escalation (apps.reviews).
    escalation = serializers.DictField(
        child=serializers.ChoiceField(choices=["expert", "qc", "auto"]),
        required=False,
        help_text='Where disputed items go first: {"disagreement"|"low_posterior": '
        '"expert"|"qc"|"auto"}.',
    )
    expert_weight = FiniteFloatField(min_value=0.0, max_value=100.0, required=False)
    expert_timeout_seconds = serializers.IntegerField(
        min_value=60, max_value=30 * 24 * 3600, required=False
    )

    def validate_escalation(self, value: dict) -> dict:
        unknown = sorted(set(value) - {"disagreement", "low_posterior", "low_confidence"})
        if unknown:
            raise serializers.ValidationError(f"Unknown reasons: {', '.join(unknown)}.")
        return value


class PricingSerializer(_SpecPart):
    crowd_label = MoneyField(required=False, help_text="Price of a crowd label, 0 to 10000.")
    expert_label = MoneyField(required=False, help_text="Price of an expert label, 0 to 10000.")


class RoutingSerializer(_SpecPart):
    mode = serializers.ChoiceField(choices=["off", "model"], required=False)
    target_accuracy = FiniteFloatField(min_value=0.5, max_value=0.99999, required=False)
    strategy = serializers.ChoiceField(choices=ROUTING_STRATEGIES, required=False)
    # Read by the cost-aware stopping rule (apps.quality.services).
    min_labels = serializers.IntegerField(min_value=1, max_value=100, required=False)
    value_per_correct = FiniteFloatField(min_value=0.0, max_value=1_000_000.0, required=False)
    class_targets = serializers.DictField(
        child=FiniteFloatField(min_value=0.5, max_value=0.99999),
        required=False,
        help_text="Per-class target confidence, by class name.",
    )
    # The routing model's knobs (apps.routing.selectors.ROUTING_DEFAULTS).
    retrain_every = serializers.IntegerField(min_value=1, max_value=1_000_000, required=False)
    min_train = serializers.IntegerField(min_value=2, max_value=1_000_000, required=False)
    audit_rate = FiniteFloatField(min_value=0.0, max_value=1.0, required=False)
    slice_field = serializers.CharField(max_length=200, allow_null=True, required=False)
    prelabels = serializers.BooleanField(required=False)
    model_kind = serializers.ChoiceField(choices=["mlp", "softmax"], required=False)
    epochs = serializers.IntegerField(min_value=1, max_value=10_000, required=False)
    hidden = serializers.IntegerField(min_value=1, max_value=4096, required=False)
    folds = serializers.IntegerField(min_value=2, max_value=20, required=False)
    bound_level = FiniteFloatField(min_value=0.5, max_value=0.99999, required=False)
    expert_below = FiniteFloatField(min_value=0.0, max_value=1.0, required=False)
    max_expert_per_pass = serializers.IntegerField(min_value=0, max_value=100_000, required=False)
    min_compare = serializers.IntegerField(min_value=1, max_value=1_000_000, required=False)
    weight_decay = FiniteFloatField(min_value=0.0, max_value=10.0, required=False)


def check_policy_consistency(policy: dict) -> None:
    """Raise a ValidationError when the merged policy contradicts itself."""
    if policy["max_labels"] < policy["min_labels"]:
        raise serializers.ValidationError({"policy": {"max_labels": "must be at least min_labels"}})
