"""A paid crowd label written straight to the tables (assignment, label, ledger credit), for
report tests that need labels at chosen times without driving the pipeline."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from django.utils import timezone

from apps.assignments.models import Assignment, Label
from apps.workforce.models import LedgerEntry


def paid_label(
    job,
    item,
    worker,
    value: str,
    *,
    at: datetime | None = None,
    duration_ms: int | None = 1000,
    amount: Decimal = Decimal("0.5"),
) -> Label:
    now = timezone.now()
    assignment = Assignment.objects.create(
        item=item,
        job=job,
        worker=worker,
        state="submitted",
        is_gold=item.is_gold,
        leased_at=now - timedelta(minutes=1),
        expires_at=now + timedelta(minutes=9),
    )
    label = Label.objects.create(
        assignment=assignment,
        item=item,
        job=job,
        worker=worker,
        value=value,
        tier="crowd",
        duration_ms=duration_ms,
        is_gold=item.is_gold,
        is_correct=(value == item.gold_label) if item.is_gold else None,
    )
    if at is not None:
        Label.objects.filter(pk=label.pk).update(created_at=at)
    LedgerEntry.objects.create(
        worker=worker,
        job=job,
        label=label,
        kind="label",
        amount=amount,
        idempotency_key=f"label:{label.pk}",
    )
    return label
