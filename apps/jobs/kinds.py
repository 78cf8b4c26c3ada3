"""A job's answer kind: its `label_schema` read as a kernel kind, and answers checked against it.

`single_choice` (one class per item) keeps its own path everywhere: this module answers None
for it. The other kinds (`apps.quality.algorithms.kinds`: tag sets, ordered scales, numbers,
boxes) are stored the same way in the same columns: an answer, a gold answer and a result are
kept as canonical JSON text (`answer_text`), so that equal answers are equal strings and the
label writers, reviews and exports move them as they move a class name. The schema keys a
kind reads besides its kernel's parameters (when its items stop asking) are `STOP_KEYS`.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from apps.common.errors import ApplicationError
from apps.quality.algorithms.kinds import KINDS, AnswerError, LabelKind, kind_from_spec

SINGLE_CHOICE = "single_choice"
# One answer as stored (a few thousand boxes): a label is a row, not a document.
MAX_ANSWER_CHARS = 65_536
KIND_NAMES = (SINGLE_CHOICE, *KINDS)
# Each kind in a worker's words (the annotator's job list).
KIND_TITLES: dict[str, str] = {
    SINGLE_CHOICE: "single choice",
    "multi_choice": "tags",
    "ordinal": "scale",
    "numeric": "number",
    "bbox": "boxes",
}
# Schema keys that are not the kernel's parameters: how the job's items stop asking.
STOP_KEYS: dict[str, tuple[str, ...]] = {"numeric": ("tolerance",), "bbox": ("target_iou",)}
# The kernel's parameters a job may set, by kind (the rest keep the kernel's defaults).
PARAM_KEYS: dict[str, tuple[str, ...]] = {
    "multi_choice": ("tags", "min_tags", "max_tags"),
    "ordinal": ("levels",),
    "numeric": ("minimum", "maximum", "unit", "level"),
    "bbox": ("classes", "width", "height"),
}
REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    SINGLE_CHOICE: ("classes",),
    "multi_choice": ("tags",),
    "ordinal": ("levels",),
    "numeric": ("minimum", "maximum", "tolerance"),
    "bbox": ("classes", "width", "height"),
}


def schema_kind_name(label_schema: dict | None) -> str:
    kind = (label_schema or {}).get("kind") or SINGLE_CHOICE
    return kind if isinstance(kind, str) else SINGLE_CHOICE


def schema_kind(label_schema: dict | None) -> LabelKind | None:
    """The kernel kind of a stored schema; None for single_choice.

    Raises AnswerError when the schema does not build one (the API validated it at create,
    so only a hand-edited row can)."""
    name = schema_kind_name(label_schema)
    if name == SINGLE_CHOICE:
        return None
    schema = label_schema or {}
    params = {k: schema[k] for k in PARAM_KEYS.get(name, ()) if k in schema}
    return kind_from_spec(name, **params)


def schema_problems(label_schema: dict) -> dict[str, str]:
    """What is wrong with a schema, by key (empty when it is fine): missing or misplaced keys
    and what the kind's own constructor refuses."""
    name = schema_kind_name(label_schema)
    allowed = {"kind", *REQUIRED_KEYS.get(name, ()), *PARAM_KEYS.get(name, ())}
    allowed |= set(STOP_KEYS.get(name, ()))
    problems = {
        key: f"not a parameter of kind {name!r}" for key in label_schema if key not in allowed
    }
    for key in REQUIRED_KEYS.get(name, ()):
        if label_schema.get(key) is None:
            problems[key] = f"required for kind {name!r}"
    if problems or name == SINGLE_CHOICE:
        return problems
    if name == "multi_choice":
        low, high = label_schema.get("min_tags", 0), label_schema.get("max_tags")
        if high is not None and low > high:
            problems["min_tags"] = "must be at most max_tags"
        elif low > len(label_schema["tags"]):
            problems["min_tags"] = "must be at most the number of tags"
    if name == "numeric":
        tolerance = label_schema["tolerance"]
        if not (isinstance(tolerance, int | float) and math.isfinite(tolerance) and tolerance > 0):
            problems["tolerance"] = "must be a positive number (the half-width that settles)"
    try:
        schema_kind(label_schema)
    except AnswerError as exc:
        problems[_key_of(exc.code, name)] = exc.message
    return problems


def _key_of(code: str, kind: str) -> str:
    """The schema key an AnswerError of the kernel's constructor is about."""
    return {
        "no_tags": "tags",
        "duplicate_tags": "tags",
        "too_few_levels": "levels",
        "duplicate_levels": "levels",
        "bad_range": "maximum",
        "bad_level": "level",
        "no_classes": "classes",
        "bad_image_size": "width",
    }.get(code, "kind")


def answer_text(value: Any) -> str:
    """Canonical JSON text of an answer: keys sorted, no spaces."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def answer_value(text: str | None) -> Any:
    """An answer or result stored as canonical JSON text, decoded (None stays None)."""
    return None if text is None else orjson.loads(text)


def answer_canonical(*, label_schema: dict, value: Any, field: str = "label") -> str:
    """The answer as stored: checked against the kind, as canonical JSON text (tags in the
    kind's order). A 400 naming `field` and what is wrong when it does not fit."""
    kind = schema_kind(label_schema)
    if kind is None:
        raise ValueError("single_choice answers are class names, not JSON")
    try:
        kind.encode([value])
    except AnswerError as exc:
        raise ApplicationError(
            f"{field}: {exc.message}", details={field: [exc.message], "code": exc.code}
        ) from None
    if kind.name == "multi_choice":
        order = {t: i for i, t in enumerate(kind.tags)}  # type: ignore[attr-defined]
        value = sorted(value, key=order.__getitem__)
    elif kind.name == "bbox":
        value = [{"box": list(b["box"]), "class": b["class"]} for b in value]
    text = answer_text(value)
    if len(text) > MAX_ANSWER_CHARS:
        message = f"is {len(text)} characters as JSON; at most {MAX_ANSWER_CHARS}"
        raise ApplicationError(f"{field}: {message}", details={field: [message]})
    return text


def gold_problem(*, label_schema: dict, value: Any) -> tuple[str | None, str | None]:
    """An uploaded gold answer as stored (canonical text) or the reason it is refused.

    A CSV cell is text: for kinds whose answers are not strings it is read as JSON."""
    name = schema_kind_name(label_schema)
    if isinstance(value, str) and name != "ordinal":
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            return None, f"{value!r} is not a JSON {name} answer"
    try:
        return answer_canonical(label_schema=label_schema, value=value, field="gold_label"), None
    except ApplicationError as exc:
        return None, exc.message.removeprefix("gold_label: ")


def answer_shown(*, label_schema: dict | None, value: str | None) -> Any:
    """A stored answer or result as the API shows it: a class name as it is, another kind's
    canonical JSON text decoded."""
    if value is None or schema_kind_name(label_schema) == SINGLE_CHOICE:
        return value
    return answer_value(value)


def answer_stored(*, label_schema: dict, value: Any, field: str = "label") -> str:
    """An answer as it is stored, or the 400 naming what does not fit the job's kind.

    A class name is read as DRF's CharField reads it (a number becomes its text, whitespace
    is trimmed), which is what single_choice submits always did."""
    if schema_kind_name(label_schema) != SINGLE_CHOICE:
        return answer_canonical(label_schema=label_schema, value=value, field=field)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ApplicationError(
            f"{field}: not a valid string.", details={field: ["Not a valid string."]}
        )
    return str(value).strip()


# The names a page keys to digits, by kind: tags to toggle, levels to pick, box classes.
_KEYED = {"multi_choice": "tags", "ordinal": "levels", "bbox": "classes"}


def answer_widget(*, label_schema: dict, images: list[str]) -> dict[str, Any]:
    """The context of the answer widget (templates/_answer.html) of a job's kind; empty for
    single_choice, whose pages show one button per class."""
    kind = schema_kind_name(label_schema)
    if kind == SINGLE_CHOICE:
        return {}
    names = label_schema.get(_KEYED.get(kind, ""), []) or []
    # The boxes are drawn on the first image: the page shows it there, not twice.
    return {
        "answer_shown_images": images[1:] if kind == "bbox" else images,
        "answer_kind": kind,
        "answer_keyed": [(i + 1, name) for i, name in enumerate(names)],
        "answer_schema": label_schema,
        "answer_image": images[0] if images else "",
    }


def answer_from_form(*, label_schema: dict, text: str) -> Any:
    """A page's posted `label`: a class name as it is; another kind's answer is the JSON the
    answer widget wrote (a 400 naming `label` when it is not JSON)."""
    if schema_kind_name(label_schema) == SINGLE_CHOICE:
        return text
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ApplicationError(
            "label: no answer was given.", details={"label": ["Give an answer first."]}
        ) from None
