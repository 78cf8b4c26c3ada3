"""Serializer fields for client input with the bounds the rest of Concord relies on."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.common.jsonlimits import INT64_MAX

# A database id as a client may send it: positive and within PostgreSQL's bigint.
ID_MAX = INT64_MAX


class FiniteFloatField(serializers.FloatField):
    """DRF's FloatField without NaN and infinities: `"NaN"` passes every min/max check (any
    comparison with NaN is false) and would be stored as invalid JSON."""

    default_error_messages = {"non_finite": "Must be a finite number."}

    def to_internal_value(self, data: Any) -> float:
        value = super().to_internal_value(data)
        if not math.isfinite(value):
            self.fail("non_finite")
        return value


PRICE_MAX = Decimal("10000")  # per label; what the ledger's DecimalField(12, 4) holds per entry


@extend_schema_field({"type": "number", "minimum": 0, "maximum": 10000})
class MoneyField(serializers.DecimalField):
    """A price per label: at most 10,000 with four decimal places (what the ledger's
    DecimalField(12, 4) holds per entry), returned as a float for the job's JSON spec."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_digits", 9)
        kwargs.setdefault("decimal_places", 4)
        kwargs.setdefault("min_value", Decimal("0"))
        kwargs.setdefault("max_value", PRICE_MAX)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> float:  # type: ignore[override]
        if isinstance(data, float) and not math.isfinite(data):
            self.fail("invalid")
        return float(super().to_internal_value(data))

    def to_representation(self, value: Any) -> float:  # type: ignore[override]
        return float(value)


class UniqueListField(serializers.ListField):
    """A list whose items must all differ (documented as `uniqueItems` in the schema)."""

    default_error_messages = {"not_unique": "Items must be unique."}

    def to_internal_value(self, data: Any) -> list:
        value = super().to_internal_value(data)
        try:
            unique = len(set(value)) == len(value)
        except TypeError:  # unhashable items: compare pairwise
            unique = all(a != b for i, a in enumerate(value) for b in value[i + 1 :])
        if not unique:
            self.fail("not_unique")
        return value


__all__ = ["ID_MAX", "FiniteFloatField", "MoneyField", "UniqueListField"]


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string"},
            {"type": "number"},
            {"type": "array", "items": {}},
        ],
        "description": "A class name, or the JSON answer of the job's kind.",
    }
)
class AnswerField(serializers.JSONField):
    """A label as a client sends it: a class name (single_choice) or the JSON answer of the
    job's kind (a tag list, a level, a number, a list of boxes). The service checks it
    against the job's label_schema (apps.jobs.kinds), which the field cannot see."""
