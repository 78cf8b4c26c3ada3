"""Model instances for the hot path, built without running `Model.__init__`.

`Model.from_db` calls `__init__`, which walks every field and sends `pre_init` and
`post_init`; the annotator endpoints build about ten instances per label from rows they
already hold. These build the same thing (only the given columns loaded, every other
column deferred and read lazily if ever touched, never silently a default) for models
that nobody listens to at init; for one that has listeners they fall back to `from_db`.
"""

from __future__ import annotations

from functools import cache
from typing import Any, TypeVar

from django.db import models
from django.db.models.base import ModelState
from django.db.models.signals import post_init, pre_init

M = TypeVar("M", bound=models.Model)


def _fresh_state(db: str) -> ModelState:
    state = ModelState()
    state.adding = False
    state.db = db
    return state


@cache
def _field_names(model: type[models.Model], keys: tuple[str, ...]) -> tuple[str, ...]:
    """`keys` in the model's field order (what `from_db` expects), checked to be columns."""
    wanted = set(keys)
    names = tuple(f.attname for f in model._meta.concrete_fields if f.attname in wanted)
    unknown = wanted - set(names)
    if unknown:
        raise ValueError(f"{model.__name__} has no columns {sorted(unknown)}")
    return names


def _has_init_listeners(model: type[models.Model]) -> bool:
    # Most processes have no init receivers at all: two list checks, before the per-sender
    # lookups (this runs for each of the ~10 instances a label builds).
    if not pre_init.receivers and not post_init.receivers:
        return False
    return pre_init.has_listeners(model) or post_init.has_listeners(model)


def loaded(model: type[M], data: dict[str, Any], *, db: str = "default") -> M:
    """An instance as if loaded from `db` with only these columns (attribute names)."""
    names = _field_names(model, tuple(data))
    if _has_init_listeners(model):
        return model.from_db(db, names, [data[name] for name in names])
    instance = model.__new__(model)
    instance.__dict__.update(data)
    instance._state = _fresh_state(db)
    return instance


def copied(instance: M) -> M:
    """A copy with its own attributes and state (related-object cache emptied): what
    loading the same row again would give, for a model without init listeners."""
    model = type(instance)
    if _has_init_listeners(model):
        names = [f.attname for f in model._meta.concrete_fields if f.attname in instance.__dict__]
        return model.from_db(instance._state.db, names, [instance.__dict__[n] for n in names])
    clone = model.__new__(model)
    clone.__dict__.update(instance.__dict__)
    clone._state = _fresh_state(instance._state.db)
    return clone
