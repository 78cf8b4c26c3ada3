"""Input serializers that refuse fields they do not take, instead of silently dropping them."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers


class StrictInputSerializer(serializers.Serializer):
    """A request body may only name this serializer's writable fields.

    DRF drops unknown keys, so `PATCH {"status": "running"}` answered 200 and changed
    nothing. Here each unknown key is a 400 naming it; `Meta.read_only_names` lists fields a
    client can see in the output but never set, which get a clearer message.
    """

    class Meta:
        read_only_names: tuple[str, ...] = ()

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            read_only = set(getattr(self.Meta, "read_only_names", ()))
            writable = {name for name, field in self.fields.items() if not field.read_only}
            errors = {
                str(key): ["This field is read-only." if key in read_only else "Unknown field."]
                for key in data
                if key not in writable
            }
            if errors:
                raise serializers.ValidationError(errors)
        # Anything but an object is refused by DRF's own check in the call below.
        return super().to_internal_value(data)
