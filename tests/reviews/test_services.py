"""Reviews through their services: each reason opens one review, escalation to experts,
claims, decisions and what they change."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.assignments.leasing import Task
from apps.assignments.models import Label
from apps.assignments.records import item_send_to_expert
from apps.common.errors import ApplicationError
from apps.jobs.models import Item, Job
from apps.pipeline.decide import decide_by_expert
from apps.pipeline.next import assignment_next
from apps.pipeline.submit import assignment_submit
from apps.reviews.models import Review, ReviewDecision, ReviewOutcome
from apps.reviews.selectors import review_metrics, worker_review_stats
from apps.reviews.services import (
    CLAIM_SECONDS,
    item_escalate,
    item_send_to_review,
    review_audit_maybe,
    review_claim,
    review_claim_next,
    review_client_dispute,
    review_expert_timeouts,
    review_gold_dispute,
    review_release,
    review_reopen,
    review_reprioritize,
    review_resolve,
)
from tests.reviews.factories import crowd, items, label, label_items, review_job
from tests.workforce.factories import make_items

pytestmark = pytest.mark.django_db


def _tied_review(**policy) -> tuple[Job, Item, Review, list]:
    """A job whose only item two crowd workers split on: it waits for QC."""
    job = review_job(**policy)
    workers = label_items(job, [["cat"], ["dog"]])
    (item,) = items(job)
    return job, item, Review.objects.get(item=item), workers


def _settled(job: Job, value: str = "cat") -> Item:
    label_items(job, [[value], [value]])
    item = items(job)[0]
    assert (item.state, item.label) == ("settled", value)
    return item


# --------------------------------------------------------------------------- opening


def test_a_tie_at_max_labels_opens_one_disagreement_review():
    job, item, review, _ = _tied_review()

    item_send_to_review(item_id=item.pk, reason="disagreement")

    item.refresh_from_db()
    assert item.state == "review"
    assert (review.job_id, review.reason, review.status) == (job.pk, "disagreement", "open")
    assert Review.objects.count() == 1


def _trigger_disagreement(user):
    job = review_job()
    (item,) = items(job)
    return lambda: item_send_to_review(item_id=item.pk, reason="disagreement")


def _trigger_low_posterior(user):
    job = review_job(escalation={"low_posterior": "qc"})
    (item,) = items(job)
    return lambda: item_escalate(item_id=item.pk, reason="low_posterior")


def _trigger_gold_dispute(user):
    job = review_job(gold_rate=1.0)
    make_items(job, 0, gold=["cat"])
    (worker,) = crowd(job, 1)
    task = assignment_next(worker=worker)
    assert isinstance(task, Task)
    assignment_submit(worker=worker, assignment_id=task.id, label="dog")
    return lambda: review_gold_dispute(worker=worker, assignment_id=task.id, note="It is a dog.")


def _trigger_audit(user):
    job = review_job(audit_rate=1.0)
    item = _settled(job)
    return lambda: review_audit_maybe(item=item, job=job, source="crowd")


def _trigger_client_dispute(user):
    job = review_job()
    item = _settled(job)
    return lambda: review_client_dispute(
        user=user, job=job, external_id=item.external_id, note="Wrong."
    )


@pytest.mark.parametrize(
    ("reason", "make_trigger"),
    [
        ("disagreement", _trigger_disagreement),
        ("low_posterior", _trigger_low_posterior),
        ("gold_dispute", _trigger_gold_dispute),
        ("audit", _trigger_audit),
        ("client_dispute", _trigger_client_dispute),
    ],
    ids=["disagreement", "low_posterior", "gold_dispute", "audit", "client_dispute"],
)
def test_every_reason_creates_its_review_exactly_once(reason, make_trigger, client_actor):
    trigger = make_trigger(client_actor.user)

    trigger()
    trigger()

    review = Review.objects.get()
    assert (review.reason, review.status) == (reason, "open")
    # Every call is kept as a trigger of the one review (the audit fires on settle, too).
    assert len(review.context["triggers"]) >= 2


def test_audits_sample_at_the_job_rate():
    job = review_job(n_items=200, audit_rate=0.25)
    label_items(job, [["cat"] * 200, ["cat"] * 200])

    audited = Review.objects.filter(reason="audit").count()

    # Hash draws at p=0.25 over 200 items: mean 50, sd 6.1; +-4 sd.
    assert 25 <= audited <= 75
    assert not Review.objects.exclude(reason="audit").exists()


def test_no_audits_without_an_audit_rate():
    job = review_job(n_items=20)

    label_items(job, [["cat"] * 20, ["cat"] * 20])

    assert not Review.objects.exists()


def test_a_client_dispute_needs_a_delivered_result(client_actor):
    job = review_job()
    (item,) = items(job)

    with pytest.raises(ApplicationError) as error:
        review_client_dispute(
            user=client_actor.user, job=job, external_id=item.external_id, note=""
        )

    assert error.value.status_code == 409
    assert not Review.objects.exists()


def test_reviews_are_ordered_by_reason_weight_then_item_value_then_age():
    job = review_job(n_items=3)
    first, second, third = items(job)
    Item.objects.filter(pk=third.pk).update(priority=5.0)
    for item in (first, second, third):
        item_send_to_review(item_id=item.pk, reason="disagreement")
    Item.objects.filter(pk=first.pk).update(state="settled", label="cat", source="crowd")
    review_audit_maybe(item=first, job=review_job(audit_rate=1.0), source="crowd")

    order = list(Review.objects.filter(status="open").values_list("item_id", "reason"))

    assert order == [
        (third.pk, "disagreement"),
        (first.pk, "disagreement"),
        (second.pk, "disagreement"),
        (first.pk, "audit"),
    ]


def test_waiting_reviews_rise_in_the_queue():
    job, item, review, _ = _tied_review()

    review_reprioritize(now=timezone.now() + timedelta(hours=5))

    review.refresh_from_db()
    assert review.priority == pytest.approx(review.base_priority + 10.0, abs=0.01)


# --------------------------------------------------------------------------- escalation


def test_with_an_expert_open_to_the_job_a_tie_goes_to_the_expert_first():
    job = review_job()
    (expert,) = crowd(job, 1, tier="expert")
    label_items(job, [["cat"], ["dog"]])
    (item,) = items(job)
    assert (item.state, item.labels_needed) == ("expert", 3)
    assert not Review.objects.exists()

    label(expert, "dog", job=job)

    item.refresh_from_db()
    assert (item.state, item.label, item.source) == ("settled", "dog", "expert")
    assert item.confidence == pytest.approx(2 / 3)
    assert Label.objects.get(worker=expert).tier == "expert"


def test_an_expert_who_cannot_settle_the_item_sends_it_to_qc():
    job = review_job()
    (expert,) = crowd(job, 1, tier="expert")
    label_items(job, [["cat"], ["dog"]])

    label(expert, "bird", job=job)

    (item,) = items(job)
    review = Review.objects.get()
    assert (item.state, review.reason, review.item_id) == ("review", "disagreement", item.pk)
    assert review.context["triggers"][0]["expert_label"] == "bird"


def test_the_policy_can_send_disputes_straight_to_qc():
    job = review_job(escalation={"disagreement": "qc"})
    crowd(job, 1, tier="expert")
    label_items(job, [["cat"], ["dog"]])

    (item,) = items(job)
    assert item.state == "review"
    assert Review.objects.get().reason == "disagreement"


def test_item_escalate_sends_low_posterior_items_to_an_expert_when_the_policy_says_so():
    job = review_job(escalation={"low_confidence": "expert"})
    (item,) = items(job)

    assert item_escalate(item_id=item.pk, reason="low_posterior") == "expert"

    item.refresh_from_db()
    assert (item.state, item.labels_needed, item.result_meta["escalation"]["reason"]) == (
        "expert",
        1,
        "low_posterior",
    )


@pytest.mark.parametrize(
    ("crowd_votes", "expert", "weight", "state", "label", "confidence"),
    [
        ({}, "cat", 1, "settled", "cat", 1.0),
        ({"cat": 1, "dog": 1}, "cat", 1, "settled", "cat", 2 / 3),
        ({"cat": 3, "dog": 1}, "dog", 1, "review", None, 3 / 5),
        ({"cat": 3, "dog": 1}, "dog", 3, "settled", "dog", 4 / 7),
        ({"cat": 3, "dog": 1}, "dog", 2, "review", None, 0.5),
    ],
    ids=["alone", "breaks_tie", "against_majority", "heavy_expert", "weighted_tie"],
)
def test_expert_label_weight(crowd_votes, expert, weight, state, label, confidence):
    job = Job(
        label_schema={"classes": ["cat", "dog", "bird"]},
        policy={"expert_weight": weight},
    )
    item = Item(labels_needed=5, result_meta={})
    votes = dict(crowd_votes)
    votes[expert] = votes.get(expert, 0) + 1

    decision = decide_by_expert(item=item, job=job, votes=votes, value=expert, worker_id=7)

    assert (decision.state, decision.label) == (state, label)
    assert decision.confidence == pytest.approx(confidence)


def test_items_that_wait_too_long_for_an_expert_fall_through_to_qc():
    job = review_job(expert_timeout_seconds=60)
    (item,) = items(job)
    item_send_to_expert(item_id=item.pk)

    assert review_expert_timeouts(now=timezone.now() + timedelta(seconds=30)) == 0
    assert review_expert_timeouts(now=timezone.now() + timedelta(seconds=61)) == 1

    item.refresh_from_db()
    assert item.state == "review"
    assert Review.objects.get().reason == "disagreement"


# --------------------------------------------------------------------------- claims


def test_a_claim_holds_until_it_expires(make_actor):
    first, second = make_actor("qc").user, make_actor("qc").user
    _, _, review, _ = _tied_review()
    now = timezone.now()
    review_claim(user=first, review_id=review.pk, now=now)
    before = now + timedelta(seconds=CLAIM_SECONDS - 1)

    with pytest.raises(ApplicationError) as error:
        review_claim(user=second, review_id=review.pk, now=before)
    assert error.value.status_code == 409
    assert review_claim_next(user=second, now=before) is None
    with pytest.raises(ApplicationError):
        review_resolve(user=second, review_id=review.pk, label="cat", now=before)

    after = now + timedelta(seconds=CLAIM_SECONDS + 1)
    claimed = review_claim_next(user=second, now=after)

    assert (claimed.pk, claimed.claimed_by_id) == (review.pk, second.pk)
    with pytest.raises(ApplicationError):
        review_claim(user=first, review_id=review.pk, now=after)


def test_two_qc_people_get_different_reviews_and_release_returns_one(make_actor):
    first, second = make_actor("qc").user, make_actor("qc").user
    job = review_job(n_items=2)
    label_items(job, [["cat", "cat"], ["dog", "dog"]])

    a = review_claim_next(user=first)
    b = review_claim_next(user=second)
    assert a.pk != b.pk
    assert review_claim_next(user=first).pk == a.pk  # resumes its own claim

    review_release(user=first, review_id=a.pk)

    assert review_claim_next(user=second, exclude_ids=[b.pk]).pk == a.pk


def test_only_qc_may_claim_or_resolve(ops_actor):
    _, _, review, _ = _tied_review()

    for call in (review_claim, review_claim_next):
        with pytest.raises(ApplicationError) as error:
            call(user=ops_actor.user, **({"review_id": review.pk} if call is review_claim else {}))
        assert error.value.status_code == 403
    with pytest.raises(ApplicationError) as error:
        review_resolve(user=ops_actor.user, review_id=review.pk, label="cat")
    assert error.value.status_code == 403


# --------------------------------------------------------------------------- decisions


def test_resolve_settles_the_item_and_judges_every_label(
    qc_actor, django_capture_on_commit_callbacks
):
    job, item, review, (cat_worker, dog_worker) = _tied_review()
    review_claim(user=qc_actor.user, review_id=review.pk)

    with django_capture_on_commit_callbacks(execute=True):
        decision = review_resolve(
            user=qc_actor.user,
            review_id=review.pk,
            label="dog",
            note="It barks.",
            tags=["guideline_gap"],
        )

    item.refresh_from_db()
    review.refresh_from_db()
    job.refresh_from_db()
    assert (item.state, item.label, item.source, item.confidence) == ("settled", "dog", "qc", 1.0)
    assert item.posterior == [0.0, 1.0, 0.0]
    assert item.settled_at is not None
    assert item.result_meta["qc_decision"] == decision.pk
    assert (review.status, review.claimed_by_id, review.resolved_at is not None) == (
        "resolved",
        None,
        True,
    )
    assert (decision.label, decision.previous_label, decision.tags) == (
        "dog",
        None,
        ["guideline_gap"],
    )
    outcomes = {o.worker_id: (o.value, o.correct, o.note) for o in ReviewOutcome.objects.all()}
    assert outcomes == {
        cat_worker.pk: ("cat", False, "It barks."),
        dog_worker.pk: ("dog", True, "It barks."),
    }
    stats = worker_review_stats(worker_ids=[cat_worker.pk, dog_worker.pk])
    assert (stats[cat_worker.pk]["overturned_rate"], stats[dog_worker.pk]["overturned_rate"]) == (
        1.0,
        0.0,
    )
    assert job.status == "completed"


def test_resolve_closes_the_items_other_open_reviews(qc_actor, client_actor):
    job = review_job(audit_rate=1.0)
    item = _settled(job)
    dispute, _ = review_client_dispute(
        user=client_actor.user, job=job, external_id=item.external_id, note="Not a cat."
    )

    review_resolve(user=qc_actor.user, review_id=dispute.pk, label="cat")

    assert dict(Review.objects.values_list("reason", "status")) == {
        "audit": "closed",
        "client_dispute": "resolved",
    }


def test_a_decision_is_final_until_the_review_is_reopened(qc_actor):
    _, item, review, _ = _tied_review()
    review_resolve(user=qc_actor.user, review_id=review.pk, label="dog")

    with pytest.raises(ApplicationError) as raised:
        review_resolve(user=qc_actor.user, review_id=review.pk, label="cat")

    assert (raised.value.status_code, raised.value.code) == (409, "invalid_state")
    assert "reopen" in raised.value.message
    item.refresh_from_db()
    assert item.label == "dog"
    assert ReviewDecision.objects.count() == 1


def test_a_later_decision_supersedes_the_earlier_and_keeps_history(qc_actor):
    job, item, review, (cat_worker, _) = _tied_review()
    first = review_resolve(user=qc_actor.user, review_id=review.pk, label="dog")

    review_reopen(user=qc_actor.user, review_id=review.pk)
    second = review_resolve(user=qc_actor.user, review_id=review.pk, label="cat", note="Whiskers.")

    item.refresh_from_db()
    assert (item.label, item.source) == ("cat", "qc")
    decisions = list(ReviewDecision.objects.order_by("id").values_list("id", "label", "is_current"))
    assert decisions == [(first.pk, "dog", False), (second.pk, "cat", True)]
    assert (second.supersedes_id, second.previous_label, second.previous_source) == (
        first.pk,
        "dog",
        "qc",
    )
    current = ReviewOutcome.objects.filter(is_current=True)
    assert (ReviewOutcome.objects.count(), current.count()) == (4, 2)
    assert current.get(worker=cat_worker).correct is True


def test_a_resolved_review_can_be_reopened_and_decided_again(qc_actor):
    _, item, review, _ = _tied_review()
    review_resolve(user=qc_actor.user, review_id=review.pk, label="dog")

    reopened = review_reopen(user=qc_actor.user, review_id=review.pk, note="Second look.")
    assert (reopened.status, reopened.claimed_by_id) == ("open", qc_actor.user.pk)
    review_resolve(user=qc_actor.user, review_id=review.pk, label="bird")

    item.refresh_from_db()
    assert item.label == "bird"
    assert ReviewDecision.objects.filter(is_current=True).get().label == "bird"


def test_a_decision_can_make_the_item_gold(qc_actor):
    _, item, review, _ = _tied_review()

    review_resolve(user=qc_actor.user, review_id=review.pk, label="dog", make_gold=True)

    item.refresh_from_db()
    assert (item.gold_label, item.is_gold) == ("dog", True)


def test_upholding_a_gold_dispute_corrects_the_gold_answer_and_rescores(qc_actor):
    job = review_job(gold_rate=1.0)
    make_items(job, 0, gold=["cat"])
    workers = crowd(job, 2)
    tasks = [assignment_next(worker=w) for w in workers]
    for worker, task, value in zip(workers, tasks, ["dog", "cat"], strict=True):
        assignment_submit(worker=worker, assignment_id=task.id, label=value)
    review, _ = review_gold_dispute(worker=workers[0], assignment_id=tasks[0].id, note="Dog!")

    review_resolve(user=qc_actor.user, review_id=review.pk, label="dog", tags=["gold_error"])

    gold = Item.objects.get(gold_label__isnull=False)
    assert (gold.gold_label, gold.state, gold.source) == ("dog", "open", "qc")
    assert dict(Label.objects.values_list("worker_id", "is_correct")) == {
        workers[0].pk: True,
        workers[1].pk: False,
    }


def test_review_metrics_count_overrides_audits_and_overturned_workers(qc_actor, client_actor):
    job = review_job(n_items=2, audit_rate=0.0)
    disputed, audited = items(job)
    cat_workers = label_items(job, [["cat"], ["cat"]])
    Item.objects.filter(pk=audited.pk).update(
        state="settled", label="bird", source="model", confidence=0.99
    )
    Job.objects.filter(pk=job.pk).update(policy={**job.policy, "audit_rate": 1.0})
    job.refresh_from_db()
    audit = review_audit_maybe(item=audited, job=job, source="model")
    dispute, _ = review_client_dispute(
        user=client_actor.user, job=job, external_id=disputed.external_id, note="A dog."
    )

    review_resolve(user=qc_actor.user, review_id=dispute.pk, label="dog")
    review_resolve(user=qc_actor.user, review_id=audit.pk, label="bird")

    metrics = review_metrics(job=job, worker_vendor_ids=[cat_workers[0].organization_id])
    assert (metrics["decisions"], metrics["qc_overrides"], metrics["qc_override_rate"]) == (
        2,
        1,
        0.5,
    )
    assert metrics["audit_accuracy"] == {"model": {"audited": 1, "correct": 1, "accuracy": 1.0}}
    assert metrics["audit_accuracy_model"] == 1.0
    assert [(w["worker"], w["overturned_rate"]) for w in metrics["workers"]] == [
        (cat_workers[0].pk, 1.0),
        (cat_workers[1].pk, 1.0),
    ]
    assert metrics["open_reviews"]["client_dispute"] == 0


def test_the_quality_engines_review_decision_opens_its_review_with_its_reason():
    job = review_job(aggregation="default")
    label_items(job, [["cat"], ["dog"]])

    (item,) = items(job)
    review = Review.objects.get()
    assert item.state == "review"
    assert (review.item_id, review.reason) == (item.pk, "disagreement")
