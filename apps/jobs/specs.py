"""Validation of a job's specification: label schema, policy, pricing and routing."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from apps.quality.algorithms.aggregation import METHODS as AGGREGATORS
from apps.routing.algorithms.names import STRATEGIES

# The names the kernels know, so that a policy can only name a method that exists.
AGGREGATION_METHODS = tuple(AGGREGATORS)
ROUTING_STRATEGIES = STRATEGIES


class LabelSchemaSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=["single_choice"], default="single_choice")
    classes = serializers.ListField(
        child=serializers.CharField(max_length=200), allow_empty=True, max_length=1000, default=list
    )

    def validate_classes(self, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise serializers.ValidationError("Class names must be unique.")
        if len(value) == 1:
            raise serializers.ValidationError("A single-choice schema needs at least two classes.")
        return value


class PolicySerializer(serializers.Serializer):
    min_labels = serializers.IntegerField(min_value=1, max_value=100, required=False)
    max_labels = serializers.IntegerField(min_value=1, max_value=100, required=False)
    target_confidence = serializers.FloatField(min_value=0.5, max_value=0.99999, required=False)
    gold_rate = serializers.FloatField(min_value=0.0, max_value=1.0, required=False)
    lease_seconds = serializers.IntegerField(min_value=10, max_value=7 * 24 * 3600, required=False)
    max_items_per_worker = serializers.IntegerField(min_value=1, allow_null=True, required=False)
    aggregation = serializers.ChoiceField(choices=AGGREGATION_METHODS, required=False)
    audit_rate = serializers.FloatField(min_value=0.0, max_value=1.0, required=False)
    # Adaptive gold rate (apps.quality.services.gold_rate_for): new workers get more gold,
    # proven ones less, so the factors may only raise or only lower the job's gold_rate.
    gold_new_factor = serializers.FloatField(min_value=1.0, max_value=100.0, required=False)
    gold_proven_answers = serializers.IntegerField(min_value=1, max_value=100_000, required=False)
    gold_proven_accuracy = serializers.FloatField(min_value=0.0, max_value=1.0, required=False)
    gold_proven_factor = serializers.FloatField(min_value=0.0, max_value=1.0, required=False)

    # Quality engine (apps.quality.services.QUALITY_DEFAULTS).
    reaggregate_every = serializers.IntegerField(min_value=0, max_value=1_000_000, required=False)
    reaggregate_growth = serializers.FloatField(min_value=0.0, max_value=10.0, required=False)
    new_worker_accuracy = serializers.FloatField(min_value=0.0, max_value=1.0, required=False)
    new_expert_accuracy = serializers.FloatField(min_value=0.0, max_value=1.0, required=False)
    history_strength = serializers.FloatField(min_value=0.0, max_value=10_000.0, required=False)
    gold_min_accuracy = serializers.FloatField(min_value=0.0, max_value=1.0, required=False)
    gold_min_answers = serializers.IntegerField(min_value=1, max_value=100_000, required=False)
    gold_max_exposures = serializers.IntegerField(min_value=1, required=False)
    min_median_duration_ms = serializers.IntegerField(min_value=0, allow_null=True, required=False)
    speed_window = serializers.IntegerField(min_value=1, max_value=10_000, required=False)
    suspended_label_weight = serializers.FloatField(min_value=0.0, max_value=1.0, required=False)
    # QC review and expert escalation (apps.reviews).
    escalation = serializers.DictField(
        child=serializers.ChoiceField(choices=["expert", "qc", "auto"]),
        required=False,
        help_text='Where disputed items go first: {"disagreement"|"low_posterior": '
        '"expert"|"qc"|"auto"}.',
    )
    expert_weight = serializers.FloatField(min_value=0.0, max_value=100.0, required=False)
    expert_timeout_seconds = serializers.IntegerField(min_value=60, required=False)

    def validate_escalation(self, value: dict) -> dict:
        unknown = sorted(set(value) - {"disagreement", "low_posterior", "low_confidence"})
        if unknown:
            raise serializers.ValidationError(f"Unknown reasons: {', '.join(unknown)}.")
        return value

    class Meta:
        # Later features add policy knobs; unknown keys are kept, known ones are checked.
        extra = "allow"

    def to_internal_value(self, data: Any) -> dict:
        if not isinstance(data, dict):
            raise serializers.ValidationError("Must be an object.")
        checked = super().to_internal_value(data)
        return {**data, **checked}


class PricingSerializer(serializers.Serializer):
    crowd_label = serializers.FloatField(min_value=0.0, required=False)
    expert_label = serializers.FloatField(min_value=0.0, required=False)


class RoutingSerializer(serializers.Serializer):
    mode = serializers.ChoiceField(choices=["off", "model"], required=False)
    target_accuracy = serializers.FloatField(min_value=0.5, max_value=0.99999, required=False)
    strategy = serializers.ChoiceField(choices=ROUTING_STRATEGIES, required=False)

    def to_internal_value(self, data: Any) -> dict:
        if not isinstance(data, dict):
            raise serializers.ValidationError("Must be an object.")
        return {**data, **super().to_internal_value(data)}


def check_policy_consistency(policy: dict) -> None:
    """Raise a ValidationError when the merged policy contradicts itself."""
    if policy["max_labels"] < policy["min_labels"]:
        raise serializers.ValidationError({"policy": {"max_labels": "must be at least min_labels"}})
