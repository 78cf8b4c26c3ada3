"""What of an item's payload each audience sees: client-only fields never reach annotators.

A client marks a payload field private by starting its key with an underscore
(`{"text": "...", "_source_row": 1812}`): QC, ops and the client see it, annotators and
experts do not, so nothing a client keeps for itself (a truth column, an internal id) can
tell a worker which items are gold. Only top-level keys are checked; nested objects are
passed whole.
"""

from __future__ import annotations

import json
from typing import Any

PRIVATE_PREFIX = "_"


def payload_is_private_key(key: str) -> bool:
    return key.startswith(PRIVATE_PREFIX)


def payload_for_worker(payload: Any) -> Any:
    """The payload without its private (underscore) fields; other shapes pass unchanged.

    Returns the same object when nothing is private, so the common case costs one scan of
    the keys and no copy (this runs on every lease).
    """
    if not isinstance(payload, dict):
        return payload
    for key in payload:
        if key.startswith(PRIVATE_PREFIX):
            return {k: v for k, v in payload.items() if not k.startswith(PRIVATE_PREFIX)}
    return payload


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".svg", ".bmp", ".avif")
IMAGE_KEYS = ("image_url", "image", "img", "picture", "photo")


def _is_image_url(key: str, value: Any) -> bool:
    if isinstance(value, str) and value.startswith("data:image/"):
        return True
    if not isinstance(value, str) or not value.startswith(("https://", "http://")):
        return False
    path = value.split("?", 1)[0].lower()
    return key.lower() in IMAGE_KEYS or path.endswith(IMAGE_SUFFIXES)


def payload_display(payload: Any) -> dict[str, Any]:
    """A payload laid out for a page: its text, its image URLs and the other fields as
    readable text (nested values as indented JSON), never a Python repr.

    Returns {"text": str | None, "images": [url], "fields": [(key, text, is_private)],
    "json": the whole payload as indented JSON}. Pages for annotators pass the payload
    through payload_for_worker first.
    """
    text = None
    images: list[str] = []
    fields: list[tuple[str, str, bool]] = []
    if isinstance(payload, dict):
        for key, value in payload.items():
            if key == "text" and isinstance(value, str) and text is None:
                text = value
                continue
            if _is_image_url(key, value):
                images.append(value)
                continue
            shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            if isinstance(value, dict | list) and len(shown) > 60:
                shown = json.dumps(value, ensure_ascii=False, indent=2)
            fields.append((key, shown, payload_is_private_key(key)))
    elif isinstance(payload, str):
        text = payload
    elif payload is not None:
        fields.append(("value", json.dumps(payload, ensure_ascii=False), False))
    return {
        "text": text,
        "images": images,
        "fields": fields,
        "json": json.dumps(payload, ensure_ascii=False, indent=2),
    }
