"""Pure numeric quality kernels (aggregation, agreement, gold scoring); numpy only, no Django."""

from .aggregation import (
    VERSION,
    Aggregation,
    dawid_skene,
    dedupe_last,
    glad,
    item_posterior,
    mace,
    majority_vote,
    one_coin_dawid_skene,
    weighted_majority_vote,
)
from .agreement import (
    Estimate,
    cohen_kappa,
    cohen_kappa_ci,
    count_matrix,
    fleiss_kappa,
    fleiss_kappa_ci,
    item_agreement,
    krippendorff_alpha,
    krippendorff_alpha_ci,
    worker_consensus_kappa,
    worker_pair_labels,
)
from .default import default_aggregation
from .gold import GoldScores, gold_scores, wilson_interval
from .methods import METHODS, aggregate

__all__ = [
    "METHODS",
    "VERSION",
    "Aggregation",
    "Estimate",
    "GoldScores",
    "aggregate",
    "cohen_kappa",
    "cohen_kappa_ci",
    "count_matrix",
    "dawid_skene",
    "dedupe_last",
    "default_aggregation",
    "fleiss_kappa",
    "fleiss_kappa_ci",
    "glad",
    "gold_scores",
    "item_agreement",
    "item_posterior",
    "krippendorff_alpha",
    "krippendorff_alpha_ci",
    "mace",
    "majority_vote",
    "one_coin_dawid_skene",
    "weighted_majority_vote",
    "wilson_interval",
    "worker_consensus_kappa",
    "worker_pair_labels",
]
