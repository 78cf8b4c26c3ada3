"""Streaming parsers and per-row validation for item uploads (JSON list, JSONL, CSV).

Nothing here touches the database: rows come in from a byte stream one at a time, are
checked against the job's schema, and leave as plain dicts ready for a batched insert, or
as a per-row error naming the row and the reason.
"""

from __future__ import annotations

import csv
import io
import json
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any, NamedTuple

import ijson
import numpy as np
import orjson

from apps.common.jsonlimits import MAX_JSON_DEPTH, json_problem
from apps.jobs.kinds import SINGLE_CHOICE, gold_problem, schema_kind_name

FORMATS = ("json", "jsonl", "csv")
_CONTENT_TYPES = {
    "application/json": "json",
    "application/x-ndjson": "jsonl",
    "application/jsonl": "jsonl",
    "application/x-jsonlines": "jsonl",
    "application/jsonlines": "jsonl",
    "text/csv": "csv",
    "application/csv": "csv",
}
# One item's payload, as compact JSON: larger is a per-row error (README, "The API").
MAX_PAYLOAD_BYTES = 256 * 1024
KNOWN_FIELDS = ("external_id", "payload", "features", "prediction", "gold_label")
PROBABILITY_TOLERANCE = 1e-3
_KNOWN_FIELD_SET = frozenset(KNOWN_FIELDS)
# struct.Struct packers of little-endian float32 vectors, by length.
_PACKERS: dict[int, struct.Struct] = {}


class UploadFormatError(Exception):
    """The body as a whole cannot be read (not a per-row problem)."""


def format_from_content_type(content_type: str | None, explicit: str | None = None) -> str:
    if explicit:
        if explicit not in FORMATS:
            raise UploadFormatError(f"Unknown format {explicit!r}; one of {', '.join(FORMATS)}.")
        return explicit
    base = (content_type or "").split(";")[0].strip().lower()
    if base in _CONTENT_TYPES:
        return _CONTENT_TYPES[base]
    raise UploadFormatError(
        f"Unsupported content type {base or '(none)'!r}: send application/json (a list), "
        "application/x-ndjson (JSON lines) or text/csv, or pass ?format=json|jsonl|csv."
    )


@dataclass(frozen=True)
class RawRow:
    """One record as parsed, before validation; `error` is set when it could not be parsed."""

    number: int
    data: Any
    error: str | None = None


class _Prefixed:
    """A byte stream with some already-read bytes put back in front."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self._head = head
        self._rest = rest

    def read(self, size: int = -1) -> bytes:
        if size == 0:
            # ijson probes with read(0) to learn whether the stream gives bytes or text.
            return b""
        if self._head:
            chunk, self._head = self._head, b""
            return chunk
        return self._rest.read(size)


def _iter_json_list(stream: IO[bytes]) -> Iterator[RawRow]:
    head = stream.read(1 << 16)
    if not head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"["):
        raise UploadFormatError("A JSON upload must be a list of item objects.")
    try:
        items = ijson.items(_Prefixed(head, stream), "item", use_float=True)
        for number, obj in enumerate(items, start=1):
            yield RawRow(number, obj)
    except ijson.JSONError as exc:
        raise UploadFormatError(f"The body is not a valid JSON list: {exc}") from exc


def _iter_jsonl(stream: IO[bytes]) -> Iterator[RawRow]:
    number = 0
    for line in stream:
        if not line.strip():
            continue
        number += 1
        try:
            yield RawRow(number, orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            yield RawRow(number, None, f"line is not valid JSON: {exc}")


def _iter_csv(stream: IO[bytes]) -> Iterator[RawRow]:
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    number = 0
    try:
        # strict: a quote left open to the end of the file is an error, not one long field
        # that swallows every row after it.
        reader = csv.DictReader(text, strict=True)
        if not reader.fieldnames or "external_id" not in reader.fieldnames:
            raise UploadFormatError("The CSV header must name an external_id column.")
        seen: set[str] = set()
        for column, name in enumerate(reader.fieldnames, start=1):
            if name in seen:
                raise UploadFormatError(
                    f"The CSV header names column {name!r} twice (again in column {column})."
                )
            seen.add(name)
        extra = [name for name in reader.fieldnames if name not in KNOWN_FIELDS]
        for number, record in enumerate(reader, start=1):
            if None in record:
                yield RawRow(number, None, "row has more cells than the header")
                continue
            try:
                yield RawRow(number, _csv_record(record, extra))
            except ValueError as exc:
                yield RawRow(number, None, str(exc))
    except UnicodeDecodeError as exc:
        raise UploadFormatError(f"The CSV is not UTF-8: {exc}") from exc
    except csv.Error as exc:
        raise UploadFormatError(
            f"The CSV cannot be read at row {number + 1} (line {reader.line_num}): {exc}"
        ) from exc
    finally:
        text.detach()


def _csv_record(record: dict[str, str | None], extra: list[str]) -> dict[str, Any]:
    """Turn CSV cells into a row: JSON cells are decoded, other columns form the payload."""
    row: dict[str, Any] = {"external_id": record.get("external_id")}
    if "payload" in record:
        # An explicit payload column holds a JSON object; an empty cell means it is missing.
        if record["payload"]:
            try:
                row["payload"] = orjson.loads(record["payload"])
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"payload: not valid JSON: {exc}") from exc
    else:
        row["payload"] = {name: record[name] for name in extra}
    for name in ("features", "prediction"):
        cell = record.get(name)
        if cell:
            try:
                row[name] = orjson.loads(cell)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"{name}: not a JSON list: {exc}") from exc
    if record.get("gold_label"):
        # Text as it is: a kind whose answers are JSON reads it as JSON (apps.jobs.kinds).
        row["gold_label"] = record["gold_label"]
    return row


def iter_raw_rows(stream: IO[bytes], fmt: str) -> Iterator[RawRow]:
    if fmt == "json":
        return _iter_json_list(stream)
    if fmt == "jsonl":
        return _iter_jsonl(stream)
    if fmt == "csv":
        return _iter_csv(stream)
    raise UploadFormatError(f"Unknown format {fmt!r}.")


@dataclass
class RowSchema:
    """What a row is checked against: the job's classes (or, for another kind than
    single_choice, its label schema) and feature length."""

    classes: list[str]
    feature_dim: int | None = None
    label_schema: dict | None = None
    class_index: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.class_index = {name: i for i, name in enumerate(self.classes)}


class CleanRow(NamedTuple):
    """A validated row. A named tuple, not a dataclass: uploads make one per item."""

    external_id: str
    payload: dict
    features: bytes | None
    prediction: list[float] | None
    gold_label: str | None
    # The payload as compact JSON text, made once here for writers that send text.
    payload_json: str


def validate_row(data: Any, schema: RowSchema) -> tuple[CleanRow | None, dict[str, str]]:
    """Check one parsed record; return the clean row or the reasons it is rejected, by field.

    The first valid row with features fixes `schema.feature_dim` when the job has none yet.
    """
    if not isinstance(data, dict):
        return None, {"row": "must be an object with external_id and payload"}
    errors: dict[str, str] = {}
    if not _KNOWN_FIELD_SET.issuperset(data):
        unknown = [key for key in data if key not in _KNOWN_FIELD_SET]
        errors["row"] = f"unknown field(s): {', '.join(sorted(map(str, unknown)))}"

    external_id = data.get("external_id")
    if isinstance(external_id, int) and not isinstance(external_id, bool):
        external_id = str(external_id)
    if external_id is None or external_id == "":
        errors["external_id"] = "missing"
    elif not isinstance(external_id, str):
        errors["external_id"] = "must be a string"
    elif len(external_id) > 255:
        errors["external_id"] = "longer than 255 characters"
    elif "\x00" in external_id:
        errors["external_id"] = "contains a NUL character (\\u0000), which cannot be stored"

    payload = data.get("payload")
    if payload is None:
        errors["payload"] = "missing"
    elif not isinstance(payload, dict):
        errors["payload"] = "must be an object"
    else:
        problem = json_problem(payload, max_depth=MAX_JSON_DEPTH - 1)
        if problem is not None:
            where, what = problem
            errors["payload"] = what if where == "body" else f"{where}: {what}"

    features_bytes = None
    features = data.get("features")
    if features is not None:
        features_bytes, problem = _check_features(features, schema)
        if problem:
            errors["features"] = problem

    kind = schema_kind_name(schema.label_schema)
    prediction = data.get("prediction")
    if prediction is not None and kind != SINGLE_CHOICE:
        errors["prediction"] = f"class probabilities do not apply to kind {kind!r}"
    elif prediction is not None:
        prediction, problem = _check_prediction(prediction, schema)
        if problem:
            errors["prediction"] = problem

    gold_label = data.get("gold_label")
    if gold_label is not None and kind != SINGLE_CHOICE:
        gold_label, problem = gold_problem(label_schema=schema.label_schema or {}, value=gold_label)
        if problem:
            errors["gold_label"] = problem
    elif gold_label is not None:
        if not isinstance(gold_label, str) or gold_label not in schema.class_index:
            errors["gold_label"] = (
                f"{gold_label!r} is not one of the job's classes {schema.classes}"
            )

    payload_json = ""
    if not errors:
        payload_json = _payload_json(payload)
        if len(payload_json) > MAX_PAYLOAD_BYTES:
            errors["payload"] = (
                f"is {len(payload_json)} characters as JSON; at most {MAX_PAYLOAD_BYTES} per item"
            )

    if errors:
        return None, errors
    if features_bytes is not None and schema.feature_dim is None:
        schema.feature_dim = len(features_bytes) // 4
    return CleanRow(external_id, payload, features_bytes, prediction, gold_label, payload_json), {}


def _payload_json(payload: dict) -> str:
    try:
        return orjson.dumps(payload).decode()
    except TypeError:
        # orjson refuses integers beyond 64 bits, which the JSON parsers can produce.
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def _check_features(features: Any, schema: RowSchema) -> tuple[bytes | None, str | None]:
    if not isinstance(features, list) or not features:
        return None, "must be a non-empty list of numbers"
    if schema.feature_dim is not None and len(features) != schema.feature_dim:
        return None, f"has {len(features)} values; this job's features have {schema.feature_dim}"
    # Fast path for the usual list of plain numbers: struct packs it several times faster
    # than numpy converts it, rounding to float32 the same way (a value beyond float32's
    # range raises here and becomes inf, so rejected, below). The sum is finite exactly
    # when every value is. Anything else takes numpy's path.
    packer = _PACKERS.get(len(features))
    if packer is None:
        packer = struct.Struct(f"<{len(features)}f")
        if len(_PACKERS) < 64:
            _PACKERS[len(features)] = packer
    try:
        packed = packer.pack(*features)
        if math.isfinite(sum(features)):
            return packed, None
    except (struct.error, OverflowError, TypeError, ValueError):
        pass
    try:
        # A value beyond float32's range becomes inf here and is rejected just below.
        with np.errstate(over="ignore"):
            vector = np.asarray(features, dtype="<f4")
    except (TypeError, ValueError, OverflowError):
        return None, "must be a list of numbers"
    if vector.ndim != 1 or not np.isfinite(vector).all():
        return None, "must be a flat list of finite numbers"
    return vector.tobytes(), None


def _check_prediction(prediction: Any, schema: RowSchema) -> tuple[list[float] | None, str | None]:
    k = len(schema.classes)
    if isinstance(prediction, dict):
        unknown = [key for key in prediction if key not in schema.class_index]
        if unknown:
            return None, f"unknown class(es) {unknown}"
        prediction = [prediction.get(name, 0.0) for name in schema.classes]
    if not isinstance(prediction, list) or len(prediction) != k:
        return None, f"must be {k} probabilities, one per class in order {schema.classes}"
    values: list[float] = []
    for value in prediction:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None, "probabilities must be numbers"
        if not math.isfinite(value) or value < 0 or value > 1:
            return None, "probabilities must lie in [0, 1]"
        values.append(float(value))
    if abs(sum(values) - 1.0) > PROBABILITY_TOLERANCE:
        return None, f"probabilities sum to {sum(values):.4f}, not 1"
    return values, None
