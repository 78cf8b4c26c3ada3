"""The one decision of a label (apps.pipeline.decide.decide_label), as a pure function: no
database, no cache — unsaved rows and numbers in, one Plan out."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime

import numpy as np
import pytest
from django.db import connection

from apps.jobs.models import Item, Job
from apps.jobs.policy import Policy, Routing
from apps.pipeline.decide import Evidence, Plan, decide_label, needs_evidence
from apps.quality.matrices import one_coin_confusion
from apps.routing import policy as routing_policy

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
CLASSES = ["cat", "dog", "bird"]


def _job(**policy) -> Job:
    return Job(pk=1, label_schema={"classes": CLASSES}, policy=policy, pricing={}, routing={})


def _item(**fields) -> Item:
    values = {
        "pk": 7,
        "state": Item.State.OPEN,
        "n_labels": 0,
        "labels_needed": 3,
        "vote_counts": {},
        "result_meta": {},
        "gold_label": None,
    }
    values.update(fields)
    return Item(**values)


def _evidence(answers, accuracy=0.9) -> Evidence:
    return Evidence(
        answers=answers,
        statuses={w: "active" for w, _, _ in answers},
        matrices={w: one_coin_confusion(accuracy, 3) for w, _, _ in answers},
        prior=np.full(3, 1 / 3),
    )


def _people_only(answers) -> Evidence:
    """A routed job's evidence on an item the model did not vote on (people settle it)."""
    return dataclasses.replace(_evidence(answers), routing=Routing(mode="model"), model_voted=False)


@pytest.fixture(autouse=True)
def _no_database(monkeypatch):
    """Any query would fail the test: the decision reads nothing."""

    def refuse(*args, **kwargs):
        raise AssertionError("the decision touched the database")

    monkeypatch.setattr(connection, "cursor", refuse)


def _decide(job, item, value, evidence=None, tier="crowd", experts=None) -> Plan:
    return decide_label(
        item=item,
        job=job,
        value=value,
        tier=tier,
        worker_id=3,
        now=NOW,
        evidence=evidence,
        experts_available=experts,
    )


def test_a_gold_answer_is_scored_and_decides_nothing():
    plan = _decide(_job(), _item(gold_label="cat"), "dog")

    assert plan.decision is None
    assert plan.gold_correct is False
    assert plan.updates == {"vote_counts": {"dog": 1}, "updated_at": NOW}
    assert plan.writes_beyond_the_item


def test_agreeing_confident_labels_settle_the_item():
    job = _job(min_labels=3, target_confidence=0.95)
    item = _item(n_labels=2, vote_counts={"cat": 2})
    answers = [(1, "cat", "crowd"), (2, "cat", "crowd"), (3, "cat", "crowd")]

    plan = _decide(job, item, "cat", _evidence(answers))

    assert plan.settles
    assert plan.updates["state"] == "settled"
    assert plan.updates["label"] == "cat"
    assert plan.updates["settled_at"] == NOW
    assert plan.updates["confidence"] > 0.95
    assert not plan.writes_beyond_the_item


def test_a_split_crowd_asks_for_one_more_label():
    job = _job(min_labels=2, max_labels=4, target_confidence=0.95)
    item = _item(n_labels=1, labels_needed=2, vote_counts={"cat": 1})
    answers = [(1, "cat", "crowd"), (3, "dog", "crowd")]

    plan = _decide(job, item, "dog", _evidence(answers))

    assert (plan.updates["state"], plan.updates["labels_needed"]) == ("open", 3)


def test_a_tie_at_max_labels_needs_to_know_whether_an_expert_is_available():
    job = _job(aggregation="mv", min_labels=2, max_labels=2)
    item = _item(n_labels=1, labels_needed=2, vote_counts={"cat": 1})

    unknown = _decide(job, item, "dog")
    expert = _decide(job, item, "dog", experts=True)
    qc = _decide(job, item, "dog", experts=False)

    assert unknown.needs_experts
    assert (expert.updates["state"], expert.expert_slot, expert.open_review) == (
        "expert",
        True,
        False,
    )
    assert "labels_needed" not in expert.updates  # set from the row as it is, by the writer
    assert (qc.updates["state"], qc.open_review) == ("review", True)
    assert qc.decision.extra["escalation"] == {"reason": "disagreement", "route": "qc"}


def test_a_policy_route_needs_no_expert_lookup():
    job = _job(aggregation="mv", min_labels=2, max_labels=2, escalation={"disagreement": "qc"})
    item = _item(n_labels=1, labels_needed=2, vote_counts={"cat": 1})

    plan = _decide(job, item, "dog")

    assert not plan.needs_experts
    assert plan.open_review


def test_an_expert_who_agrees_with_a_leader_settles_the_item():
    job = _job()
    item = _item(state=Item.State.EXPERT, n_labels=2, vote_counts={"cat": 1, "dog": 1})

    plan = _decide(job, item, "dog", tier="expert")

    assert plan.updates["state"] == "settled"
    assert plan.updates["source"] == "expert"


def test_every_settled_item_is_audited_at_rate_one_and_none_at_zero():
    answers = [(1, "cat", "crowd"), (2, "cat", "crowd"), (3, "cat", "crowd")]
    item = _item(n_labels=2, vote_counts={"cat": 2})

    audited = _decide(_job(audit_rate=1.0), item, "cat", _evidence(answers))
    not_audited = _decide(_job(audit_rate=0.0), item, "cat", _evidence(answers))

    assert audited.audit
    assert audited.writes_beyond_the_item
    assert not not_audited.audit


def test_a_posterior_decision_without_its_evidence_is_refused():
    job, item = _job(), _item()

    assert needs_evidence(job=job, item=item)
    with pytest.raises(ValueError, match="evidence"):
        _decide(job, item, "cat")


def test_a_routed_item_at_its_last_label_writes_valid_json():
    # No crowd label is left to buy: the look-ahead's value is -inf, which JSON cannot hold
    # (the ORM writer's JSON check refused it).
    job = _job(min_labels=1, max_labels=1)
    item = _item(n_labels=0, labels_needed=1)
    evidence = dataclasses.replace(
        _evidence([(3, "cat", "crowd")]), routing=Routing(mode="model"), model_voted=True
    )

    plan = _decide(job, item, "cat", evidence)

    assert plan.decision.extra["crowd_value"] is None
    json.dumps(plan.updates.get("result_meta"), allow_nan=False)


def test_a_routed_jobs_people_only_item_counts_the_crowd_tempered_and_settles_at_reference():
    # Given three 0.9 workers saying cat and a fourth saying dog (3 classes, uniform prior)
    answers = [(1, "cat", "crowd"), (2, "cat", "crowd"), (4, "cat", "crowd"), (3, "dog", "crowd")]
    item = _item(n_labels=3, labels_needed=4, vote_counts={"cat": 3})
    people_only = _people_only(answers)

    # When the job routes (the model did not vote on this item) and when it does not
    routed = _decide(_job(), item, "dog", people_only)
    plain = _decide(_job(), item, "dog", _evidence(answers))

    # Then without routing the odds are 18^2 (cat:dog) and 18^3 (cat:bird): settled at 0.997.
    assert plain.decision.state == "settled"
    assert plain.decision.confidence == pytest.approx(1 / (1 + 18**-2 + 18**-3), abs=1e-6)
    # Routed, each crowd label counts at 1/T (routing_policy.crowd_weight): cat at about
    # 0.966, above the policy's 0.95 but below the reference confidence (1 - 0.05 / 2):
    # one more label.
    w = routing_policy.crowd_weight(Policy())
    expected = 1 / (1 + 18 ** (-2 * w) + 18 ** (-3 * w))
    assert routing_policy.reference_confidence(routing=Routing(), policy=Policy()) == 0.975
    assert 0.95 < expected < 0.975
    assert routed.decision.posterior[0] == pytest.approx(expected, abs=1e-6)
    assert (routed.decision.state, routed.decision.labels_needed) == ("open", 5)
    assert routed.decision.extra["stopping"] == "people_only"


def test_a_routed_item_the_model_voted_on_reports_the_undiscounted_posterior():
    # Given a routed job, the model's calibrated probabilities (0.6, 0.3, 0.1) voting at
    # weight 0.5, and two 0.9 workers (off-diagonal 0.05) saying cat
    probs = np.array([0.6, 0.3, 0.1])
    answers = [(1, "cat", "crowd"), (3, "cat", "crowd")]
    item = _item(n_labels=1, labels_needed=2, vote_counts={"cat": 1})
    voted = dataclasses.replace(
        _evidence(answers),
        prior=routing_policy.model_vote(probs, 0.5),
        routing=Routing(mode="model"),
        model_voted=True,
    )

    # When the evidence carries the model's probabilities and when it does not (as before)
    plan = _decide(_job(), item, "cat", dataclasses.replace(voted, model_probs=probs))
    before = _decide(_job(), item, "cat", voted)

    # Then the stopping posterior is the discounted one: vote sqrt(p), crowd odds 18^(2/T)
    w = routing_policy.crowd_weight(Policy())
    stop = np.sqrt(probs) * np.array([0.9, 0.05, 0.05]) ** (2 * w)
    stop /= stop.sum()
    assert plan.decision.posterior[0] == pytest.approx(stop[0], abs=1e-6)
    assert plan.decision.extra["why"]["posterior_confidence"] == pytest.approx(stop[0], abs=1e-6)
    # ... while the reported confidence is 0.6 x 0.9^2 / (0.6 x 0.81 + 0.3 x 0.0025 + 0.1 x
    # 0.0025) = 0.486 / 0.487 = 0.997947
    reported = 0.6 * 0.81 / (0.6 * 0.81 + 0.4 * 0.0025)
    assert reported == pytest.approx(0.997947, abs=1e-6)
    assert plan.decision.confidence == pytest.approx(reported, abs=1e-6)
    assert plan.updates["confidence"] == pytest.approx(reported, abs=1e-6)
    assert plan.decision.extra["why"]["reported_confidence"] == pytest.approx(reported, abs=1e-6)
    assert stop[0] < reported
    # ... and the decision is the same as without it: only the confidence differs.
    assert before.decision.confidence == pytest.approx(stop[0], abs=1e-6)
    for field_name in ("state", "labels_needed", "label", "posterior", "source"):
        assert getattr(plan.decision, field_name) == getattr(before.decision, field_name)
    assert plan.decision.state == "settled"
    assert {k: v for k, v in plan.updates.items() if k not in ("confidence", "result_meta")} == {
        k: v for k, v in before.updates.items() if k not in ("confidence", "result_meta")
    }


def test_a_people_only_item_of_a_routed_job_reports_its_stopping_posterior():
    # The model did not vote (an audit item): nothing to undo, the confidence is the posterior's.
    answers = [(1, "cat", "crowd"), (2, "cat", "crowd"), (4, "cat", "crowd"), (3, "cat", "crowd")]
    item = _item(n_labels=3, labels_needed=4, vote_counts={"cat": 3})
    people_only = _people_only(answers)

    plan = _decide(_job(), item, "cat", people_only)

    assert plan.decision.state == "settled"
    assert plan.decision.confidence == pytest.approx(plan.decision.posterior[0], abs=1e-6)


def test_a_decision_replaces_an_earlier_runs_provenance_and_keeps_the_rest():
    # An aggregation run read the item's first answer and wrote its provenance; the item's
    # last label is decided by votes: the run's id and answers must not stand beside it.
    job = _job(aggregation="mv", min_labels=2, max_labels=2)
    meta = {
        "method": "ds",
        "version": "2.1.0",
        "run": 41,
        "job_method": "ds",
        "workers": [{"worker": 1, "label": "cat"}],
        # An earlier decision's reasons (a routed stop, a kind's interval) are provenance too.
        "why": {"stopped": "confident", "posterior_confidence": 0.97},
        "route": "crowd+model",
        "interval": [1.0, 2.0],
        # What happened to the item stays: its escalation and its drawing for a model audit.
        "escalation": {"reason": "disagreement", "route": "qc"},
        "audit": True,
        "model_version": 3,
        "model_label": "dog",
    }
    item = _item(n_labels=1, labels_needed=2, vote_counts={"cat": 1}, result_meta=meta)

    plan = _decide(job, item, "cat")

    assert plan.updates["state"] == "settled"
    assert plan.updates["result_meta"] == {
        "method": "majority_vote",
        "escalation": {"reason": "disagreement", "route": "qc"},
        "audit": True,
        "model_version": 3,
        "model_label": "dog",
    }
