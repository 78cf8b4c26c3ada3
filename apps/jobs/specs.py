"""Validation of a job's specification: label schema, policy, pricing and routing."""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from rest_framework import serializers

from apps.common.fields import FiniteFloatField, MoneyField, UniqueListField
from apps.jobs.kinds import KIND_NAMES, SINGLE_CHOICE, schema_problems
from apps.jobs.policy import ESCALATION_KEYS, ROUTES, Policy, Pricing, Routing


def _names(what: str, low: int) -> UniqueListField:
    return UniqueListField(
        child=serializers.CharField(max_length=200),
        min_length=low,
        max_length=1000,
        required=False,
        error_messages={"not_unique": f"{what.capitalize()} must be unique."},
        help_text=f"{what.capitalize()}: {low} to 1000 distinct names.",
    )


class LabelSchemaSerializer(serializers.Serializer):
    """The answer kind and its parameters; each kind takes only its own keys (a key of
    another kind, or a missing one, is a 400 naming it)."""

    kind = serializers.ChoiceField(
        choices=list(KIND_NAMES),
        default=SINGLE_CHOICE,
        help_text="single_choice (one class), multi_choice (a set of tags), ordinal (one "
        "level of an ordered scale), numeric (a number in a range) or bbox (boxes on an image).",
    )
    # A job without classes used to be accepted and then fail at launch.
    classes = _names("the answer classes (single_choice: at least 2; bbox: box classes)", 1)
    tags = _names("multi_choice: the tags", 1)
    levels = _names("ordinal: the levels, lowest first", 2)
    min_tags = serializers.IntegerField(
        required=False, min_value=0, max_value=1000, help_text="multi_choice: fewest tags."
    )
    max_tags = serializers.IntegerField(
        required=False, min_value=1, max_value=1000, help_text="multi_choice: most tags."
    )
    minimum = FiniteFloatField(
        required=False, min_value=-1e15, max_value=1e15, help_text="numeric: lowest value."
    )
    maximum = FiniteFloatField(
        required=False, min_value=-1e15, max_value=1e15, help_text="numeric: highest value."
    )
    unit = serializers.CharField(
        required=False, max_length=50, allow_blank=True, help_text="numeric: the unit shown."
    )
    level = FiniteFloatField(
        required=False,
        min_value=0.5,
        max_value=0.999,
        help_text="numeric: coverage of the result's interval (default 0.9).",
    )
    tolerance = FiniteFloatField(
        required=False,
        min_value=0,
        max_value=1e15,
        help_text="numeric: an item settles once its consensus is known within this "
        "(the interval's half-width without the crowd's shared error).",
    )
    width = FiniteFloatField(
        required=False, min_value=1, max_value=100_000, help_text="bbox: image width in pixels."
    )
    height = FiniteFloatField(
        required=False, min_value=1, max_value=100_000, help_text="bbox: image height in pixels."
    )
    target_iou = FiniteFloatField(
        required=False,
        min_value=0.5,
        max_value=0.99999,
        help_text="bbox: an item settles once every object's mean IoU reaches this (0.7).",
    )

    def to_internal_value(self, data: Any) -> dict:
        if isinstance(data, dict):
            errors = _unknown_keys(self, data, None)
            if errors:
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)

    def validate(self, attrs: dict) -> dict:
        problems = schema_problems(attrs)
        if attrs.get("kind", SINGLE_CHOICE) == SINGLE_CHOICE and not problems:
            if len(attrs["classes"]) < 2:
                problems["classes"] = "single_choice needs at least 2 classes"
        if problems:
            raise serializers.ValidationError({k: [v] for k, v in problems.items()})
        return attrs


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


def _spec_field(spec_field: dataclasses.Field) -> serializers.Field:
    """The DRF field of one knob of apps.jobs.policy: type, bounds, choices and help from
    its definition (the one place they are written)."""
    meta = spec_field.metadata
    common: dict[str, Any] = {"required": False, "help_text": meta["help"]}
    if meta["nullable"]:
        common["allow_null"] = True
    bounds = {
        k: v for k, v in (("min_value", meta["low"]), ("max_value", meta["high"])) if v is not None
    }
    kind = meta["kind"]
    annotation = str(spec_field.type)
    if kind == "money":
        return MoneyField(**common)
    if kind == "targets":
        return serializers.DictField(
            child=FiniteFloatField(min_value=0.5, max_value=0.99999), **common
        )
    if kind == "routes":
        return serializers.DictField(child=serializers.ChoiceField(choices=ROUTES), **common)
    if meta["choices"] is not None:
        return serializers.ChoiceField(choices=list(meta["choices"]), **common)
    if annotation.startswith("bool"):
        return serializers.BooleanField(**common)
    if annotation.startswith("int"):
        return serializers.IntegerField(**bounds, **common)
    if annotation.startswith("float"):
        return FiniteFloatField(**bounds, **common)
    return serializers.CharField(max_length=200, **common)


def _spec_serializer(spec: type, name: str, base: type[_SpecPart] = _SpecPart) -> type[_SpecPart]:
    """A serializer with one field per knob of the spec part (published in the schema)."""
    fields = {f.name: _spec_field(f) for f in dataclasses.fields(spec)}
    return type(name, (base,), {**fields, "__doc__": spec.__doc__, "__module__": __name__})


class _PolicyChecks(_SpecPart):
    def validate_escalation(self, value: dict) -> dict:
        known = {alias for aliases in ESCALATION_KEYS.values() for alias in aliases}
        unknown = sorted(set(value) - known)
        if unknown:
            raise serializers.ValidationError(f"Unknown reasons: {', '.join(unknown)}.")
        return value


PolicySerializer = _spec_serializer(Policy, "PolicySerializer", _PolicyChecks)
PricingSerializer = _spec_serializer(Pricing, "PricingSerializer")
RoutingSerializer = _spec_serializer(Routing, "RoutingSerializer")


def check_policy_consistency(policy: Policy) -> None:
    """Raise a ValidationError when the policy (defaults filled in) contradicts itself."""
    if policy.max_labels < policy.min_labels:
        raise serializers.ValidationError({"policy": {"max_labels": "must be at least min_labels"}})


def check_kind_consistency(*, label_schema: dict, routing: Routing) -> None:
    """Model routing votes on classes: another kind than single_choice cannot use it."""
    kind = label_schema.get("kind") or SINGLE_CHOICE
    if kind != SINGLE_CHOICE and routing.mode != "off":
        raise serializers.ValidationError(
            {"routing": {"mode": f"must be 'off' for kind {kind!r}: the model votes on classes"}}
        )
