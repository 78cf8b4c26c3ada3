"""The client's new-job form as the API's job body, and the API's errors back on the form: the
page keeps no rules of its own, the job serializer checks the body with its own words."""

from __future__ import annotations


def _error_pairs(errors, prefix: str = "") -> list[tuple[str, str]]:
    """A serializer's nested errors as (dotted field path, message) pairs; the path is empty
    for an error of the whole body."""
    pairs: list[tuple[str, str]] = []
    if isinstance(errors, dict):
        for key, value in errors.items():
            name = key if key != "non_field_errors" else ""
            pairs += _error_pairs(value, f"{prefix}{name}." if name else prefix)
    elif isinstance(errors, list):
        for value in errors:
            if isinstance(value, dict | list):
                pairs += _error_pairs(value, prefix)
            else:
                pairs.append((prefix.rstrip("."), str(value)))
    else:
        pairs.append((prefix.rstrip("."), str(errors)))
    return pairs


JOB_FORM_DEFAULTS = {
    "name": "",
    "instructions": "",
    "kind": "single_choice",
    "classes": "",
    "tags": "",
    "min_tags": "",
    "max_tags": "",
    "levels": "",
    "minimum": "",
    "maximum": "",
    "tolerance": "",
    "unit": "",
    "level": "",
    "width": "",
    "height": "",
    "target_iou": "",
    "min_labels": "3",
    "max_labels": "5",
    "target_confidence": "0.95",
    "gold_rate": "0.1",
    "lease_seconds": "600",
    "crowd_label": "0.05",
    "expert_label": "0.50",
    "routing_mode": "off",
    "target_accuracy": "0.95",
}


KIND_CHOICES = (
    ("single_choice", "one class per item"),
    ("multi_choice", "a set of tags per item"),
    ("ordinal", "one level of an ordered scale"),
    ("numeric", "a number in a range"),
    ("bbox", "boxes around objects in an image"),
)
# The form's fields of each answer kind: (field, is a list); a list is one name per line (or
# separated by commas), a blank optional field is left out (the kind's default).
KIND_FORM_FIELDS: dict[str, tuple[tuple[str, bool], ...]] = {
    "single_choice": (("classes", True),),
    "multi_choice": (("tags", True), ("min_tags", False), ("max_tags", False)),
    "ordinal": (("levels", True),),
    "numeric": (
        ("minimum", False),
        ("maximum", False),
        ("tolerance", False),
        ("unit", False),
        ("level", False),
    ),
    "bbox": (("classes", True), ("width", False), ("height", False), ("target_iou", False)),
}


def _names(text: str) -> list[str]:
    return [c.strip() for c in text.replace(",", "\n").splitlines() if c.strip()]


def _label_schema(form: dict[str, str]) -> dict:
    """The answer kind's part of the form as the API's `label_schema` (an unknown kind goes
    as it is, for the serializer to refuse by name)."""
    kind = form["kind"].strip() or "single_choice"
    schema: dict = {"kind": kind}
    for key, is_list in KIND_FORM_FIELDS.get(kind, ()):
        if is_list:
            schema[key] = _names(form[key])
        elif form[key].strip():
            schema[key] = form[key].strip()
    return schema


# The API body's paths whose form field has another name; every other path's last part is
# its field's name (label_schema.levels: levels, policy.min_labels: min_labels), or the
# last but one for a list's entry (label_schema.tags.2: tags).
JOB_FORM_PATHS = {"routing.mode": "routing_mode", "label_schema": "kind", "routing": "routing_mode"}


def _job_form_field(path: str) -> str | None:
    """The form field an error of the API body's `path` belongs beside (None: the form's
    summary only)."""
    if path in JOB_FORM_PATHS:
        return JOB_FORM_PATHS[path]
    parts = path.split(".")
    if parts[-1].isdigit():
        parts.pop()
    return parts[-1] if parts[-1] in JOB_FORM_DEFAULTS else None


def job_form_body(form: dict[str, str]) -> dict:
    """The form's fields as the body the API's job creation takes (validated by its
    serializer, so the page and the API refuse the same things with the same words)."""
    body = {
        "name": form["name"].strip(),
        "instructions": form["instructions"],
        "label_schema": _label_schema(form),
        "policy": {
            k: form[k]
            for k in ("min_labels", "max_labels", "target_confidence", "gold_rate", "lease_seconds")
        },
        "pricing": {"crowd_label": form["crowd_label"], "expert_label": form["expert_label"]},
        "routing": {"mode": form["routing_mode"]},
    }
    if form["routing_mode"] == "model":
        body["routing"]["target_accuracy"] = form["target_accuracy"]
    return body


def job_form_read(data) -> dict[str, str]:
    """The form's fields from a post (every field, the defaults for those not sent)."""
    return {k: data.get(k, v) for k, v in JOB_FORM_DEFAULTS.items()}


def job_form_errors(errors) -> tuple[list[str], dict[str, list[str]]]:
    """The job serializer's errors as the form shows them: every one listed at the top in the
    API's words with its path named, and again beside the field it is about."""
    lines: list[str] = []
    by_field: dict[str, list[str]] = {}
    for path, message in _error_pairs(errors):
        lines.append(f"{path}: {message}" if path else message)
        field = _job_form_field(path)
        if field is not None:
            by_field.setdefault(field, []).append(message)
    return lines, by_field
