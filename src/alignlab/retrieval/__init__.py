"""Image–text retrieval: exact R@K evaluation, named protocols, training and reproducibility.

>>> from alignlab.retrieval import evaluate_embeddings, evaluate_scores
"""

from alignlab.retrieval.metrics import (
    TIE_POLICIES,
    RetrievalReport,
    chance_metrics,
    evaluate_embeddings,
    evaluate_scores,
    metrics_from_ranks,
    oracle_report,
    sanity_check,
)
from alignlab.retrieval.protocols import (
    PROTOCOLS,
    Protocol,
    ProtocolReport,
    evaluate_protocol,
    evaluate_protocol_scores,
    get_protocol,
)

__all__ = [
    "PROTOCOLS",
    "TIE_POLICIES",
    "Protocol",
    "ProtocolReport",
    "RetrievalReport",
    "chance_metrics",
    "evaluate_embeddings",
    "evaluate_protocol",
    "evaluate_protocol_scores",
    "evaluate_scores",
    "get_protocol",
    "metrics_from_ranks",
    "oracle_report",
    "sanity_check",
]
