"""`copy_compare_and_set` (COPY into a temporary table) and `bulk_compare_and_set` (unnest
arrays) apply one plan: on twin rows they write the same values and return the same keys.

Property-based (hypothesis): random values of every column type the aggregation write-back
sends (JSON with awkward text, nullable text, floats, timestamps) and random expectations,
some of which no longer hold.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.common.bulk import bulk_compare_and_set, copy_compare_and_set
from apps.jobs.models import Item
from tests.workforce.factories import JobFactory, make_items

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql", reason="COPY is PostgreSQL's")
EXAMPLES = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
FIELDS = ["posterior", "result_meta", "label", "confidence", "agreement", "updated_at"]
EXPECT = ["n_labels", "state", "source"]

# PostgreSQL text and jsonb hold no NUL character.
_text = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]), max_size=8)
_awkward = st.one_of(_text, st.sampled_from(["a\tb", "c\nd", "e\\f", "g\rh", '"q"', "\\N", "ü"]))
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(-(2**53), 2**53)
    | _awkward,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_awkward, inner, max_size=3),
    max_leaves=8,
)
_rows = st.lists(
    st.fixed_dictionaries(
        {
            "posterior": st.none() | st.lists(st.floats(0, 1), max_size=4) | _json,
            "result_meta": st.dictionaries(_awkward, _json, max_size=3),
            "label": st.none() | _awkward,
            "confidence": st.none() | st.floats(allow_nan=False, allow_infinity=False),
            "agreement": st.none() | st.floats(0, 1),
            "minutes": st.integers(-10_000, 10_000),
            "stale_labels": st.booleans(),  # the row gained a label since it was read
            "stale_state": st.booleans(),
        }
    ),
    min_size=1,
    max_size=8,
)


def _plan(items: list[Item], rows: list[dict], now) -> list[Item]:
    plan = []
    for item, row in zip(items, rows, strict=True):
        change = Item(
            pk=item.pk,
            posterior=row["posterior"],
            result_meta=row["result_meta"],
            label=row["label"],
            confidence=row["confidence"],
            agreement=row["agreement"],
            updated_at=now + timedelta(minutes=row["minutes"]),
            n_labels=item.n_labels + (1 if row["stale_labels"] else 0),
            state="expert" if row["stale_state"] else item.state,
            source=item.source,
        )
        plan.append(change)
    return plan


def _stored(items: list[Item]) -> list[tuple]:
    got = {i.pk: i for i in Item.objects.filter(pk__in=[i.pk for i in items])}
    return [
        tuple(getattr(got[i.pk], name) for name in (*FIELDS, *EXPECT, "external_id")) for i in items
    ]


@pytest.mark.django_db
@EXAMPLES
@given(rows=_rows, batch=st.integers(1, 4))
def test_copy_and_unnest_paths_leave_the_same_rows(rows, batch):
    # Given twin jobs with the same items
    twins = [make_items(JobFactory(), len(rows)) for _ in range(2)]
    before = [_stored(twin) for twin in twins]
    now = timezone.now()
    # When the same plan is applied through each path
    plain = bulk_compare_and_set(
        Item, _plan(twins[0], rows, now), FIELDS, expect=EXPECT, batch_size=batch
    )
    copied = copy_compare_and_set(
        Item, _plan(twins[1], rows, now), FIELDS, expect=EXPECT, batch_size=batch
    )
    # Then the same rows are written, with the same values
    position = [{item.pk: i for i, item in enumerate(twin)} for twin in twins]
    assert sorted(position[0][pk] for pk in plain) == sorted(position[1][pk] for pk in copied)
    expected = [i for i, row in enumerate(rows) if not (row["stale_labels"] or row["stale_state"])]
    assert sorted(position[0][pk] for pk in plain) == expected
    after = [_stored(twin) for twin in twins]
    for i in range(len(rows)):
        if i in expected:  # written: the same values through both paths
            assert after[0][i][:-1] == after[1][i][:-1]
        else:  # left alone by both
            assert (after[0][i], after[1][i]) == (before[0][i], before[1][i])


@pytest.mark.django_db(transaction=True)
def test_copy_compare_and_set_skips_rows_another_transaction_holds():
    # Given an item whose row another connection holds locked
    items = make_items(JobFactory(), 3)
    locked, release = threading.Event(), threading.Event()

    def hold():
        with transaction.atomic():
            Item.objects.select_for_update().get(pk=items[1].pk)
            locked.set()
            release.wait(10)
        connections.close_all()

    thread = threading.Thread(target=hold)
    thread.start()
    locked.wait(10)
    try:
        # When the COPY path writes all three
        plan = [Item(pk=i.pk, label="x", n_labels=i.n_labels, state=i.state) for i in items]
        written = copy_compare_and_set(Item, plan, ["label"], expect=["n_labels", "state"])
    finally:
        release.set()
        thread.join()
    # Then the held row is skipped, not waited for
    assert sorted(written) == sorted([items[0].pk, items[2].pk])
