"""Pure numeric kernels of model-confidence routing and active learning (numpy / torch only).

The torch-backed parts (calibration, model, strategies, replay) load on first use: the web
process serves every other request without paying torch's import time and memory.
"""

from __future__ import annotations

import importlib
from typing import Any

from apps.routing.algorithms.dependence import BAND_EDGES, Dependence, model_crowd_dependence
from apps.routing.algorithms.names import STRATEGIES
from apps.routing.algorithms.threshold import (
    ThresholdChoice,
    choose_threshold,
    clopper_pearson_lower_bound,
    wilson_lower_bound,
)
from apps.routing.algorithms.voting import (
    CROWD,
    EXPERT,
    STOP,
    LabelDecision,
    cost_aware_decision,
    crowd_log_likelihood,
    expected_error_after_labels,
    model_crowd_posterior,
    one_coin_confusions,
)

_LAZY = {
    "TemperatureFit": "calibration",
    "apply_temperature": "calibration",
    "calibrate_probabilities": "calibration",
    "expected_calibration_error": "calibration",
    "fit_temperature": "calibration",
    "fit_temperature_from_probabilities": "calibration",
    "log_softmax": "calibration",
    "negative_log_likelihood": "calibration",
    "RoutingModel": "model",
    "set_torch_threads": "model",
    "load_network": "model",
    "model_from_bytes": "model",
    "model_to_bytes": "model",
    "predict_logits": "model",
    "predict_proba": "model",
    "train_routing_model": "model",
    "LearningCurves": "replay",
    "query_scores": "replay",
    "replay_learning_curves": "replay",
    "StreamDecision": "strategies",
    "committee_probabilities": "strategies",
    "density_weighted_scores": "strategies",
    "entropy_scores": "strategies",
    "kl_disagreement_scores": "strategies",
    "least_confidence_scores": "strategies",
    "margin_scores": "strategies",
    "medium_confidence_order": "strategies",
    "order_to_scores": "strategies",
    "query_by_committee_scores": "strategies",
    "random_scores": "strategies",
    "select_batch": "strategies",
    "stream_decisions": "strategies",
    "vote_entropy_scores": "strategies",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "BAND_EDGES",
    "Dependence",
    "model_crowd_dependence",
    "ThresholdChoice",
    "choose_threshold",
    "clopper_pearson_lower_bound",
    "wilson_lower_bound",
    "CROWD",
    "EXPERT",
    "STOP",
    "LabelDecision",
    "cost_aware_decision",
    "crowd_log_likelihood",
    "expected_error_after_labels",
    "model_crowd_posterior",
    "one_coin_confusions",
    "TemperatureFit",
    "apply_temperature",
    "calibrate_probabilities",
    "expected_calibration_error",
    "fit_temperature",
    "fit_temperature_from_probabilities",
    "log_softmax",
    "negative_log_likelihood",
    "RoutingModel",
    "load_network",
    "model_from_bytes",
    "model_to_bytes",
    "predict_logits",
    "predict_proba",
    "train_routing_model",
    "STRATEGIES",
    "LearningCurves",
    "query_scores",
    "replay_learning_curves",
    "StreamDecision",
    "committee_probabilities",
    "density_weighted_scores",
    "entropy_scores",
    "kl_disagreement_scores",
    "least_confidence_scores",
    "margin_scores",
    "medium_confidence_order",
    "order_to_scores",
    "query_by_committee_scores",
    "random_scores",
    "select_batch",
    "stream_decisions",
    "vote_entropy_scores",
]
