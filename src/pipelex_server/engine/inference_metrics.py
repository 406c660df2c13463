"""Each inference call the runtime reports, counted in the server's metrics by provider and model (calls, tokens,
cost). Dry runs' placeholder usage is not an inference call and is not counted."""

from __future__ import annotations

import logging
from typing import Any

from pipelex.cogt.content_generation.dry_mock import DRY_RUN_INFERENCE_MODEL_ID, MOCK_USAGE_MODEL_ID
from pipelex.cogt.usage.usage_cost import compute_tokens_usage_cost

from pipelex_server.observability import metrics

logger = logging.getLogger(__name__)
_NOT_CALLS = frozenset({DRY_RUN_INFERENCE_MODEL_ID, MOCK_USAGE_MODEL_ID})


def count_inference(usage: Any) -> None:
    """One inference call's usage (the runtime's tokens-usage record) into the metrics; never raises."""
    if not metrics.enabled():
        return
    try:
        if usage.inference_model_id in _NOT_CALLS:
            return
        tokens = {str(key): int(value) for key, value in dict(usage.nb_tokens_by_category).items()}
        metrics.llm_call(
            provider=getattr(usage, "backend_name", None) or usage.model_type,
            model=usage.inference_model_name,
            tokens=tokens,
            cost=compute_tokens_usage_cost(usage),
        )
    except Exception:
        logger.exception("counting an inference call failed")
