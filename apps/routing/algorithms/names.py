"""Names the API validates against, kept free of torch so that importing them is cheap."""

# Query strategies ordering the crowd queue (apps.routing.algorithms.replay.query_scores).
STRATEGIES = (
    "fifo",
    "random",
    "least_confidence",
    "margin",
    "entropy",
    "medium_mix",
    "density",
    "committee",
)
