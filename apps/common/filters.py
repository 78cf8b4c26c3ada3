"""Query filters that answer a value they do not understand with a 400, never ignore it."""

from __future__ import annotations

from typing import Any

import django_filters
from django import forms

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


class StrictNullBooleanField(forms.NullBooleanField):
    """Django's NullBooleanField reads any unknown word as "no filter"; this one accepts
    true/false (and 1/0, yes/no, on/off) or nothing, and rejects the rest."""

    def to_python(self, value: Any) -> bool | None:
        if value in (None, ""):
            return None
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise forms.ValidationError("Must be true or false.", code="invalid")

    def validate(self, value: Any) -> None:
        return None


class StrictBooleanFilter(django_filters.BooleanFilter):
    """A boolean query parameter: true/false, or a 400. The widget passes the raw text on
    (django-filter's boolean widgets map any unknown word to "no filter" before the field
    sees it)."""

    field_class = StrictNullBooleanField

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("widget", forms.TextInput)
        super().__init__(*args, **kwargs)
