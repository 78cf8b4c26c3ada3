"""What of an item's payload each audience sees: client-only fields never reach annotators.

A client marks a payload field private by starting its key with an underscore
(`{"text": "...", "_source_row": 1812}`): QC, ops and the client see it, annotators and
experts do not, so nothing a client keeps for itself (a truth column, an internal id) can
tell a worker which items are gold. Only top-level keys are checked; nested objects are
passed whole.
"""

from __future__ import annotations

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
