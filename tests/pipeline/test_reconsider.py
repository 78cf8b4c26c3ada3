"""A quality suspension decides the worker's items again by the one decision of a label:
in a routed job that is the routing rule (the model votes), not a crowd-only posterior."""

from __future__ import annotations

import pytest

from apps.jobs.models import Item, Job
from apps.pipeline.crowd import worker_ban, worker_quality_suspend, worker_suspend, worker_unban
from apps.quality.models import QualityDecision
from tests.quality.factories import crowd_job, crowd_label
from tests.routing.factories import score_item, voter_job
from tests.workforce.factories import make_pool, make_worker

pytestmark = pytest.mark.django_db


def test_a_routed_item_the_model_and_an_honest_worker_settle_stays_settled():
    # Two labels before the routing rule may stop.
    job = voter_job(policy={"min_labels": 1}, min_labels=2)
    item = Item.objects.create(job=job, external_id="x", labels_needed=1)
    score_item(item, [0.97, 0.02, 0.01])
    spammer, honest = make_worker(), make_worker()
    make_pool(jobs=[job], workers=[spammer, honest])
    # The spammer contradicts the model, the honest worker agrees with it.
    crowd_label(spammer, "dog", job_id=job.pk)
    item.refresh_from_db()
    assert item.state == "open"
    crowd_label(honest, "cat", job_id=job.pk)
    item.refresh_from_db()
    assert (item.state, item.label) == ("settled", "cat")
    before = item.confidence

    worker_quality_suspend(
        worker=spammer, job=job, reason=QualityDecision.Reason.GOLD_ACCURACY, details={}
    )

    item.refresh_from_db()
    # The routing rule on the model's vote and the honest label settles it (a crowd-only
    # posterior of that one label, 0.7, would have sent it back to the queue), and the
    # result says so: its route, its stop, the spammer's label weighed 0, a confidence
    # without the contradicting label higher than with it.
    assert (item.state, item.label, item.source) == ("settled", "cat", "crowd")
    assert item.result_meta["route"] == "crowd+model"
    assert item.result_meta["why"]["stopped"] == "confident"
    weights = {w["worker"]: w["weight"] for w in item.result_meta["workers"]}
    assert weights[spammer.pk] == 0.0
    assert weights[honest.pk] > 0
    assert item.confidence > before
    assert not QualityDecision.objects.filter(worker=spammer, action="reopen").exists()


def test_a_routed_item_only_the_suspended_worker_labeled_goes_back_to_the_queue():
    job = voter_job(policy={"min_labels": 1})
    item = Item.objects.create(job=job, external_id="x", labels_needed=1)
    score_item(item, [0.97, 0.02, 0.01])
    spammer, other = make_worker(), make_worker()
    make_pool(jobs=[job], workers=[spammer, other])
    crowd_label(spammer, "cat", job_id=job.pk)
    item.refresh_from_db()
    assert (item.state, item.label) == ("settled", "cat")

    worker_quality_suspend(
        worker=spammer, job=job, reason=QualityDecision.Reason.GOLD_ACCURACY, details={}
    )

    item.refresh_from_db()
    # No active worker's label is left: the model alone never settles a crowd item.
    assert (item.state, item.label, item.source, item.confidence) == ("open", None, None, None)
    assert item.labels_needed == item.n_labels + 1 == 2
    reopen = QualityDecision.objects.get(worker=spammer, action="reopen")
    assert reopen.details == {"items": [item.pk], "count": 1}
    assert Job.objects.get(pk=job.pk).status == Job.Status.RUNNING


def test_an_ops_ban_reopens_what_the_worker_settled_in_running_jobs_only(
    django_capture_on_commit_callbacks,
):
    # min 2 labels: the banned worker and an honest one settle "dog" in two jobs; the
    # second job is completed (its results delivered) before the ban.
    running, (item,), (banned, honest, _) = crowd_job(1, workers=3)
    done, (delivered,), _ = crowd_job(1, workers=0)
    make_pool(jobs=[done], workers=[banned, honest])
    for job in (running, done):
        crowd_label(banned, "dog", job_id=job.pk)
        crowd_label(honest, "dog", job_id=job.pk)
    Job.objects.filter(pk=done.pk).update(status=Job.Status.COMPLETED)

    with django_capture_on_commit_callbacks(execute=True):
        worker_ban(worker=banned, reason="spam")

    item.refresh_from_db()
    delivered.refresh_from_db()
    # One honest label alone (0.7) is below the target (0.9): back to the queue.
    assert (item.state, item.label) == ("open", None)
    assert item.labels_needed == 3
    assert (delivered.state, delivered.label) == ("settled", "dog")
    reopen = QualityDecision.objects.get(worker=banned, action="reopen")
    assert (reopen.job_id, reopen.reason) == (running.pk, "ops")
    assert reopen.details == {"items": [item.pk], "count": 1, "status": "banned"}


def test_a_worker_reinstated_before_the_task_runs_keeps_their_items(
    django_capture_on_commit_callbacks,
):
    job, (item,), (suspended, honest, _) = crowd_job(1, workers=3)
    crowd_label(suspended, "dog", job_id=job.pk)
    crowd_label(honest, "dog", job_id=job.pk)
    with django_capture_on_commit_callbacks(execute=False) as queued:
        worker_suspend(worker=suspended, reason="checking")
    worker_unban(worker=suspended)

    for callback in queued:
        callback()

    item.refresh_from_db()
    assert (item.state, item.label) == ("settled", "dog")
    assert not QualityDecision.objects.filter(worker=suspended).exists()
