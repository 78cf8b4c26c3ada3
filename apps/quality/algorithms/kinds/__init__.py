"""Label kinds beyond one class per item, one module each behind the `LabelKind` interface.

`kind_from_spec("ordinal", levels=[...])` builds a kind from a job's schema parameters; a
new kind is one module with a frozen dataclass implementing `LabelKind` and one line in
`KINDS`.
"""

from __future__ import annotations

from typing import Any

from .base import AnswerError, KindResult, LabelKind
from .bbox import Boxes, BoxKind, BoxResult, aggregate_boxes, iou, match_boxes
from .multi_choice import MultiChoiceKind, MultiChoiceResult, binary_relevance_em
from .numeric import NumericKind, NumericResult, gold_item_variance, numeric_em
from .ordinal import OrdinalKind, OrdinalResult, ordinal_em

KINDS: dict[str, type] = {
    "multi_choice": MultiChoiceKind,
    "ordinal": OrdinalKind,
    "numeric": NumericKind,
    "bbox": BoxKind,
}


def kind_from_spec(name: str, **params: Any) -> LabelKind:
    """The kind registered as `name`, built from its parameters; AnswerError if unknown."""
    try:
        cls = KINDS[name]
    except KeyError:
        raise AnswerError(
            "unknown_kind", f"unknown kind {name!r}; known: {sorted(KINDS)}"
        ) from None
    for key in ("tags", "levels", "classes"):
        if key in params and isinstance(params[key], list):
            params[key] = tuple(params[key])
    try:
        kind = cls(**params)
    except TypeError as exc:
        raise AnswerError("bad_parameters", f"{name}: {exc}") from None
    assert isinstance(kind, LabelKind)
    return kind


__all__ = [
    "KINDS",
    "AnswerError",
    "BoxKind",
    "BoxResult",
    "Boxes",
    "KindResult",
    "LabelKind",
    "MultiChoiceKind",
    "MultiChoiceResult",
    "NumericKind",
    "NumericResult",
    "OrdinalKind",
    "OrdinalResult",
    "aggregate_boxes",
    "binary_relevance_em",
    "gold_item_variance",
    "iou",
    "kind_from_spec",
    "match_boxes",
    "numeric_em",
    "ordinal_em",
]
