"""The routing policy (apps.routing.policy), pure: sizes, threshold memory, the model's vote
weight, and the bench that must drive this code rather than its own copy."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from apps.jobs.policy import Policy, Pricing, Routing
from apps.quality.algorithms.default import DEFAULTS
from apps.routing import algorithms
from apps.routing import policy as routing_policy
from apps.routing.policy import (
    ASK,
    Audits,
    RoutingLoop,
    crowd_weight,
    dynamic_actions,
    model_vote,
    reference_confidence,
    reference_max_labels,
    round_size,
    seed_size,
    threshold_with_memory,
    vote_weight,
)

BENCH = Path(__file__).resolve().parents[2] / "bench" / "routing.py"


@pytest.mark.parametrize(
    ("n_items", "expected"),
    [(150, 50), (178, 50), (569, 57), (1797, 180), (100_000, 250), (30, 30)],
    ids=["small-floor", "wine", "breast-cancer", "digits", "capped", "whole-tiny-job"],
)
def test_seed_set_is_a_share_of_the_job_with_bounds(n_items, expected):
    assert seed_size(n_items=n_items, cfg=Routing()) == expected


def test_round_size_is_a_share_with_a_floor():
    assert round_size(n_items=178, cfg=Routing()) == 20
    assert round_size(n_items=1797, cfg=Routing()) == 90


def _choice(threshold: float | None, lower: float = 0.96) -> algorithms.ThresholdChoice:
    return algorithms.ThresholdChoice(
        threshold=float("inf") if threshold is None else threshold,
        coverage=0.5,
        accuracy=0.98,
        lower_bound=lower,
        n_accepted=100,
        qualified=threshold is not None,
    )


def test_the_reason_names_the_best_cut_and_its_held_out_count():
    choice = dataclasses.replace(
        _choice(None, lower=0.9123), accuracy=0.97, best_cut=0.985, best_n=35, n_accepted=0
    )

    state = threshold_with_memory(
        choice=choice, previous=None, previous_claim=None, audits=Audits(), cfg=Routing()
    )

    assert state.threshold is None
    assert state.reason == (
        "no threshold qualifies yet: best lower bound 0.9123 (accuracy 0.9700 on 35 "
        "held-out items at confidence >= 0.9850) < 0.95"
    )


def test_a_failing_round_holds_the_last_qualifying_threshold_and_says_why():
    state = threshold_with_memory(
        choice=_choice(None, lower=0.93),
        previous=0.9,
        previous_claim=0.98,
        audits=Audits(n=5, correct=5),
        cfg=Routing(),
    )

    assert state.threshold == 0.9
    assert state.claimed == 0.98
    assert "held the last qualifying threshold 0.9000" in state.reason


def test_audits_that_fail_the_claim_raise_the_threshold_and_it_stays_raised():
    cfg = Routing(audit_min=20)
    raised = threshold_with_memory(
        choice=_choice(0.8),
        previous=0.9,
        previous_claim=0.98,
        audits=Audits(n=40, correct=30),
        cfg=cfg,
    )
    later = threshold_with_memory(
        choice=_choice(0.7),
        previous=raised.threshold,
        previous_claim=raised.claimed,
        audits=Audits(),
        cfg=cfg,
        floor=raised.floor,
    )

    assert raised.threshold == pytest.approx(0.95)
    assert raised.floor == pytest.approx(0.95)
    assert raised.reason.startswith("audits 30/40 (0.750")
    assert later.threshold == pytest.approx(0.95)


@pytest.mark.parametrize(
    ("claimed", "raised"),
    [(0.99, True), (0.95, False)],
    ids=["claim-refuted", "claim-within-the-audits"],
)
def test_audits_are_compared_with_the_claim_not_only_the_target(claimed, raised):
    # 37 of 40 (0.925): the Wilson upper bound at 0.9 is 0.963, above the target 0.95 but
    # below a claimed 0.99.
    state = threshold_with_memory(
        choice=_choice(None, lower=0.9),
        previous=0.9,
        previous_claim=claimed,
        audits=Audits(n=40, correct=37),
        cfg=Routing(audit_min=20),
    )

    assert (state.threshold == pytest.approx(0.95)) is raised
    assert state.reason.startswith("audits 37/40" if raised else "held the last")


def test_few_audits_do_not_overturn_a_threshold():
    state = threshold_with_memory(
        choice=_choice(0.85),
        previous=0.9,
        previous_claim=0.98,
        audits=Audits(n=3, correct=0),
        cfg=Routing(audit_min=20),
    )

    assert state.threshold == 0.85
    assert state.reason.startswith("qualified")


def test_no_threshold_before_one_qualifies():
    state = threshold_with_memory(
        choice=_choice(None, lower=0.5),
        previous=None,
        previous_claim=None,
        audits=Audits(),
        cfg=Routing(),
    )

    assert state.threshold is None
    assert "no threshold qualifies yet" in state.reason


def _voter_case(correlated: bool, n: int = 400, seed: int = 0):
    """A 3-class job: the model is 80% right with confidence 0.8; a worker 75% right whose
    errors either copy the model's wrong class (correlated) or fall at random."""
    rng = np.random.default_rng(seed)
    k = 3
    truth = rng.integers(k, size=n)
    model_label = np.where(rng.random(n) < 0.8, truth, (truth + rng.integers(1, k, n)) % k)
    probs = np.full((n, k), 0.1)
    probs[np.arange(n), model_label] = 0.8
    answer = np.where(rng.random(n) < 0.75, truth, (truth + rng.integers(1, k, n)) % k)
    if correlated:
        # Where the model errs, the worker errs the same way.
        answer = np.where(model_label != truth, model_label, answer)
    worker = algorithms.one_coin_confusions(np.array([0.75]), k)[0]
    return probs, np.eye(k)[truth], worker[:, answer].T


def test_the_vote_is_discounted_where_model_and_crowd_err_together():
    together = _voter_case(True)
    apart = _voter_case(False)

    correlated = vote_weight(
        probs=together[0],
        targets=together[1],
        first_likelihood=together[2],
        routed=np.ones(400, bool),
    )
    independent = vote_weight(
        probs=apart[0], targets=apart[1], first_likelihood=apart[2], routed=np.ones(400, bool)
    )

    assert correlated.weight < independent.weight
    assert independent.weight == 1.0


def _banded_voter_case(n: int = 400, seed: int = 0):
    """Two bands of model confidence, 0.85 and 0.97, each as accurate as it claims; a worker
    75% right whose errors copy the model's wrong class in the 0.85 band only."""
    rng = np.random.default_rng(seed)
    k = 3
    parts = []
    for confidence, together in ((0.85, True), (0.97, False)):
        truth = rng.integers(k, size=n)
        right = rng.random(n) < confidence
        model_label = np.where(right, truth, (truth + rng.integers(1, k, n)) % k)
        probs = np.full((n, k), (1.0 - confidence) / (k - 1))
        probs[np.arange(n), model_label] = confidence
        answer = np.where(rng.random(n) < 0.75, truth, (truth + rng.integers(1, k, n)) % k)
        if together:
            answer = np.where(model_label != truth, model_label, answer)
        parts.append((probs, np.eye(k)[truth], answer))
    worker = algorithms.one_coin_confusions(np.array([0.75]), k)[0]
    probs = np.concatenate([p[0] for p in parts])
    targets = np.concatenate([p[1] for p in parts])
    answers = np.concatenate([p[2] for p in parts])
    return probs, targets, worker[:, answers].T


def test_the_vote_is_discounted_in_the_band_where_model_and_crowd_err_together():
    # Given joint errors in the 0.8-0.9 band and independent ones in the 0.95-0.99 band.
    probs, targets, lik = _banded_voter_case()

    weight = vote_weight(
        probs=probs, targets=targets, first_likelihood=lik, routed=np.ones(len(probs), bool)
    )

    together, apart = 2, 4  # bands [0.8, 0.9) and [0.95, 0.99) of BAND_EDGES
    assert weight.edges == algorithms.BAND_EDGES
    assert weight.band_n[together] == weight.band_n[apart] == 400
    assert weight.by_band[together] < weight.by_band[apart]
    assert weight.by_band[apart] == 1.0
    assert weight.by_band[together] <= weight.weight
    # Each item votes at its band's weight.
    np.testing.assert_array_equal(
        weight.for_probs(probs[[0, 400]]), [weight.by_band[together], weight.by_band[apart]]
    )
    np.testing.assert_allclose(
        model_vote(probs[[0, 400]], weight.for_probs(probs[[0, 400]])),
        [model_vote(probs[0], weight.by_band[together]), model_vote(probs[400], 1.0)],
    )


def test_a_band_with_few_items_keeps_about_the_jobs_weight():
    probs, targets, lik = _voter_case(False)

    weight = vote_weight(
        probs=probs, targets=targets, first_likelihood=lik, routed=np.ones(400, bool)
    )

    # Every item sits in the [0.8, 0.9) band: the empty bands take the job's weight.
    assert weight.band_n[2] == 400
    assert set(weight.by_band) == {weight.weight}


def test_too_little_evidence_keeps_the_default_vote_weight():
    probs, targets, lik = _voter_case(False, n=10)

    weight = vote_weight(
        probs=probs, targets=targets, first_likelihood=lik, routed=np.ones(10, bool)
    )

    assert weight.weight == 0.5
    assert "only 10 items" in weight.reason


def test_model_vote_tempers_the_calibrated_probabilities():
    np.testing.assert_allclose(model_vote(np.array([0.8, 0.2]), 0.0), [0.5, 0.5])
    np.testing.assert_allclose(model_vote(np.array([0.8, 0.2]), 1.0), [0.8, 0.2])
    np.testing.assert_allclose(model_vote(np.array([0.8, 0.2]), 0.5), [2 / 3, 1 / 3])


class _PerfectCrowd:
    def __init__(self, truth: np.ndarray, n_workers: int = 6):
        self.truth = truth
        self.next = np.zeros(len(truth), int)
        self.n_workers = n_workers

    def ask(self, items):
        items = np.asarray(items, int)
        items = items[self.next[items] < self.n_workers]
        workers = self.next[items].copy()
        self.next[items] += 1
        return items, workers, self.truth[items]

    def ask_expert(self, items):
        return self.truth[np.asarray(items, int)]


@pytest.mark.parametrize(
    ("aggregation", "expected"),
    [("default", 1.0 / DEFAULTS.temperature), ("ds", 1.0), ("mv", 1.0)],
    ids=["default-calibrated", "ds-uncalibrated", "mv"],
)
def test_a_routed_job_counts_the_crowd_at_its_aggregations_calibration(aggregation, expected):
    assert crowd_weight(Policy(aggregation=aggregation)) == pytest.approx(expected)
    # The default's calibration softens: a crowd answer counts for less than one.
    assert crowd_weight(Policy()) < 1.0


@pytest.mark.parametrize(
    ("target_accuracy", "target_confidence", "expected"),
    [(0.95, 0.95, 0.975), (0.99, 0.95, 0.995), (0.9, 0.95, 0.95), (0.95, 0.99, 0.99)],
    ids=["defaults", "strict-target", "policy-above-half-budget", "policy-higher"],
)
def test_reference_items_spend_half_the_targets_error_budget(
    target_accuracy, target_confidence, expected
):
    routing = Routing(target_accuracy=target_accuracy)
    policy = Policy(target_confidence=target_confidence)

    assert reference_confidence(routing=routing, policy=policy) == pytest.approx(expected)


def test_people_only_actions_settle_at_the_target_given():
    post = np.array([[0.96, 0.04], [0.98, 0.02]])

    at_policy = dynamic_actions(posterior=post, n_labels=np.array([3, 3]), policy=Policy())
    at_reference = dynamic_actions(
        posterior=post, n_labels=np.array([3, 3]), policy=Policy(), target=0.975
    )

    assert at_policy.tolist() == ["settle", "settle"]
    assert at_reference.tolist() == ["ask", "settle"]


def test_a_reference_item_at_max_labels_above_the_policy_target_settles_not_reviews():
    post = np.array([[0.96, 0.04], [0.94, 0.06], [0.98, 0.02]])

    actions = dynamic_actions(
        posterior=post, n_labels=np.array([5, 5, 5]), policy=Policy(), target=0.975
    )

    # 0.96 misses the reference but meets the policy's 0.95: the cap settles it; 0.94
    # meets neither: review (an expert), as without a reference target.
    assert actions.tolist() == ["settle", "review", "settle"]


def test_a_reference_item_takes_crowd_labels_up_to_its_own_cap_before_an_expert():
    post = np.array([[0.94, 0.06]] * 3)
    cap = reference_max_labels(routing=Routing(reference_max_labels=7), policy=Policy())

    actions = dynamic_actions(
        posterior=post,
        n_labels=np.array([5, 6, 7]),
        policy=Policy(),
        target=0.975,
        max_labels=cap,
    )

    assert cap == 7
    assert actions.tolist() == ["ask", "ask", "review"]
    # Never fewer than the policy's own cap; routing off (no cap given) keeps the policy's.
    assert reference_max_labels(routing=Routing(reference_max_labels=2), policy=Policy()) == 5
    assert dynamic_actions(
        posterior=post[:1], n_labels=np.array([5]), policy=Policy()
    ).tolist() == ["review"]


class _OneWorkerCrowd:
    """One worker (index 0) who answers the truth."""

    def __init__(self, truth):
        self.truth = np.asarray(truth)

    def ask(self, items):
        items = np.asarray(items, int)
        return items, np.zeros(len(items), int), self.truth[items]

    def ask_expert(self, items):
        return self.truth[np.asarray(items, int)]


def test_the_loops_posteriors_temper_crowd_answers_but_not_the_expert():
    # Given a loop with one item answered b by a crowd worker and b by an expert, the
    # worker's matrix at the new-worker accuracy (0.7: no answers on shared items yet)
    loop = RoutingLoop(x=np.zeros((1, 1)), classes=["a", "b"], crowd=_OneWorkerCrowd([1]))
    loop._ask(np.array([0]))
    loop.expert[0] = 1
    w = crowd_weight(loop.policy)

    # When the loop is routing (run() sets the weight) and when it is not
    plain, _ = loop._posteriors(np.array([0]))
    loop.crowd_weight = w
    tempered, _ = loop._posteriors(np.array([0]))

    # Then only the crowd answer's log-likelihood is scaled: odds (0.7/0.3)^w x (0.95/0.05)
    odds = (0.7 / 0.3) ** w * (0.95 / 0.05)
    assert tempered[0, 1] == pytest.approx(odds / (1 + odds))
    odds_plain = (0.7 / 0.3) * (0.95 / 0.05)
    assert plain[0, 1] == pytest.approx(odds_plain / (1 + odds_plain))


def test_the_loop_settles_every_item_and_names_each_route():
    rng = np.random.default_rng(0)
    truth = rng.integers(2, size=200)
    x = np.c_[truth * 4.0 + rng.normal(size=200), rng.normal(size=200)]
    loop = RoutingLoop(
        x=x,
        classes=["a", "b"],
        crowd=_PerfectCrowd(truth),
        routing=Routing(mode="model", epochs=50, max_rounds=2),
        seed=0,
    )

    out = loop.run()

    assert (out.label == truth).all()
    assert set(out.route) <= {"model", "crowd", "expert"}
    assert out.rounds[0]["trained_on"] == 50
    assert all("threshold_reason" in r for r in out.rounds)


# --------------------------------------------------------------------------- the bench

POLICY_KERNELS = {
    "train_routing_model",
    "fit_temperature",
    "choose_threshold",
    "model_crowd_posterior",
    "cost_aware_decision",
    "one_coin_confusions",
    "select_batch",
    "margin_scores",
    "predict_proba",
    "calibrate_probabilities",
}


def _bench_tree() -> ast.Module:
    return ast.parse(BENCH.read_text())


def test_the_bench_drives_the_production_loop_with_the_job_defaults():
    tree = _bench_tree()
    imported = {
        (node.module, alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)]
    routing_calls = [c for c in calls if getattr(c.func, "id", None) == "Routing"]

    assert ("apps.routing.policy", "RoutingLoop") in imported
    assert any(getattr(c.func, "id", None) == "RoutingLoop" for c in calls)
    # The job defaults, with routing switched on: nothing else.
    assert routing_calls
    assert all(
        [(kw.arg, getattr(kw.value, "value", None)) for kw in c.keywords] == [("mode", "model")]
        and not c.args
        for c in routing_calls
    )
    assert not any(getattr(c.func, "id", None) in {"Policy", "Pricing"} and c.args for c in calls)


def test_the_bench_defines_no_em_loop_or_settings_of_its_own():
    tree = _bench_tree()
    names = {
        node.name.lower()
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.ClassDef)
    }
    called = {
        getattr(node.func, "attr", None) or getattr(node.func, "id", None)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
    }
    knobs = {f.name.upper() for cls in (Routing, Policy, Pricing) for f in dataclasses.fields(cls)}
    constants = {
        target.id
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }

    assert not {n for n in names if "em" in n.split("_") or "posterior" in n or "threshold" in n}
    assert not (called & POLICY_KERNELS)
    assert not (constants & knobs)
    assert not {c for c in constants if "TARGET" in c or "THRESHOLD" in c or "SEED_SET" in c}


def test_the_loop_stops_with_the_rule_the_pipeline_uses():
    # The stopping rule has one definition: decide imports it from the policy.
    source = (Path(__file__).resolve().parents[2] / "apps/pipeline/decide.py").read_text()

    assert "routing_policy.routed_actions(" in source
    assert "cost_aware_decision(" not in source
    assert ASK == "ask"


def test_production_counts_the_first_answer_at_the_crowds_weight_as_the_loop_does():
    # The vote weight is fitted on the first answer as a routed item's answers count: the
    # loop tempers it (RoutingLoop._first_likelihood), and so does the retrain service.
    services = (Path(__file__).resolve().parents[2] / "apps/routing/services.py").read_text()
    loop = RoutingLoop(x=np.zeros((1, 1)), classes=["a", "b"], crowd=_OneWorkerCrowd([1]))
    loop._ask(np.array([0]))
    loop.crowd_weight = crowd_weight(loop.policy)

    first = loop._first_likelihood(np.array([0]))

    assert "first_likelihood ** policy.crowd_weight(job.spec.policy)" in services
    np.testing.assert_allclose(first, [[0.3**loop.crowd_weight, 0.7**loop.crowd_weight]])


def test_the_loop_reports_the_undiscounted_posterior_where_the_model_voted():
    # Given two items answered b by one crowd worker (new-worker matrix: 0.7), the first
    # routed with the model's vote (probabilities 0.2, 0.8 at weight 0.5), the second an
    # audit item people settled alone
    loop = RoutingLoop(x=np.zeros((2, 1)), classes=["a", "b"], crowd=_OneWorkerCrowd([1, 1]))
    loop._ask(np.array([0, 1]))
    loop.crowd_weight = w = crowd_weight(loop.policy)
    probs = np.array([0.2, 0.8])
    loop.vote[0], loop.vote_probs[0], loop.voted[0] = model_vote(probs, 0.5), probs, True
    loop.people_only[1] = True

    post = loop._deliver(np.array([0, 1]))

    # Then the posterior returned (training target, stopping) is the discounted one: odds
    # (0.8/0.2)^0.5 x (0.7/0.3)^w; the first item reports 0.8 x 0.7 / (0.8 x 0.7 + 0.2 x 0.3)
    odds = 2.0 * (0.7 / 0.3) ** w
    assert post[0, 1] == pytest.approx(odds / (1 + odds))
    assert loop.out.confidence[0] == pytest.approx(0.56 / 0.62)
    assert loop.out.confidence[0] > post[0, 1]
    # ... the audit item its own posterior: (0.7/0.3)^w against the uniform class prior
    plain = (0.7 / 0.3) ** w
    assert loop.out.confidence[1] == pytest.approx(plain / (1 + plain))
    assert loop.out.label.tolist() == [1, 1]


class _NoisyCrowd:
    """Ten workers, each right with probability 0.75, answering each item once at most."""

    def __init__(self, truth, seed=0):
        rng = np.random.default_rng(seed)
        self.truth = np.asarray(truth)
        n = len(self.truth)
        right = rng.random((n, 10)) < 0.75
        self.answers = np.where(right, self.truth[:, None], 1 - self.truth[:, None])
        self.asked = np.zeros(n, int)

    def ask(self, items):
        items = np.asarray(items, int)
        items = items[self.asked[items] < 10]
        workers = self.asked[items].copy()
        self.asked[items] += 1
        return items, workers, self.answers[items, workers]

    def ask_expert(self, items):
        return self.truth[np.asarray(items, int)]


def test_the_reported_confidence_changes_no_decision(monkeypatch):
    # The same job run twice, the second time reporting a constant 0.5 wherever the loop
    # reports the undiscounted posterior: every label bought, route, delivered label and
    # training target is the same; only the confidence of items the model voted on moves.
    rng = np.random.default_rng(1)
    truth = rng.integers(2, size=240)
    x = np.c_[truth * 1.5 + rng.normal(size=240), rng.normal(size=240)]

    def run():
        crowd = _NoisyCrowd(truth)
        loop = RoutingLoop(
            x=x,
            classes=["a", "b"],
            crowd=crowd,
            routing=Routing(mode="model", epochs=30, max_rounds=2),
            seed=0,
        )
        return loop, loop.run(), crowd.asked.copy()

    loop, out, asked = run()
    monkeypatch.setattr(
        routing_policy, "reported_confidence", lambda reported, label: np.full(len(label), 0.5)
    )
    loop2, out2, asked2 = run()

    voted = loop.voted & ~loop.people_only & (out.route == "crowd")
    assert voted.sum() > 20
    np.testing.assert_array_equal(asked, asked2)
    np.testing.assert_array_equal(out.label, out2.label)
    np.testing.assert_array_equal(out.route, out2.route)
    np.testing.assert_allclose(loop.targets, loop2.targets)
    np.testing.assert_allclose(out.confidence[~voted], out2.confidence[~voted])
    assert (out2.confidence[voted] == 0.5).all()
    assert (out.confidence[voted] != 0.5).all()


def test_an_item_the_model_does_not_vote_on_is_settled_by_people_alone_as_production_does():
    # Given two routed items answered b by one crowd worker, the first with the model's
    # vote, the second in a band whose vote weight is 0 (no vote: apps.routing.selectors
    # .item_model_vote gives None, and apps.pipeline.decide settles it people-only at the
    # reference confidence)
    loop = RoutingLoop(x=np.zeros((2, 1)), classes=["a", "b"], crowd=_OneWorkerCrowd([1, 1]))
    loop.crowd_weight = crowd_weight(loop.policy)
    loop.reference_target = reference_confidence(routing=loop.routing, policy=loop.policy)
    loop.reference_cap = reference_max_labels(routing=loop.routing, policy=loop.policy)
    probs = np.array([0.01, 0.99])
    loop.vote[0], loop.vote_probs[0], loop.voted[0] = model_vote(probs, 1.0), probs, True

    loop.settle(np.array([0, 1]))

    # Then the voted item stops on the model and one answer (the cost-aware rule), the other
    # asks on to the reference confidence, and only it counts as settled by people alone.
    n_labels = loop._n_labels()
    assert n_labels[0] == 1
    assert n_labels[1] > 1
    post, _ = loop._posteriors(np.array([1]))
    assert post[0, 1] >= loop.reference_target
    assert loop.people_only.tolist() == [False, True]
