"""``_cost``'s fast path gives litellm's own price, to the last cent fraction, wherever it is taken.

The reference is ``litellm.cost_per_token`` with the whole usage block, as litellm's response_cost
computes it; the price map is litellm's bundled one (``LITELLM_LOCAL_MODEL_COST_MAP``).
"""

from __future__ import annotations

import random

import litellm
import pytest

from opentracy.gateway.pricing import _linear_prices, cost_usd
from opentracy.routing.aliases import Target

OPENAI_CHAT_MODELS = sorted(name for name, info in litellm.model_cost.items()
                            if info.get("litellm_provider") == "openai" and info.get("mode") == "chat")


def _target(model: str, **params: object) -> Target:
    return Target(name=model, params={"model": model, **params}, provider="openai")


def _litellm_price(model: str, usage: dict) -> float:
    prompt, completion = litellm.cost_per_token(
        model=model, custom_llm_provider="openai", prompt_tokens=usage["prompt_tokens"],
        completion_tokens=usage["completion_tokens"], usage_object=litellm.Usage(**usage))
    return prompt + completion


def _usages(rng: random.Random) -> list[dict]:
    usages = [{"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
              {"prompt_tokens": 40, "completion_tokens": 40, "total_tokens": 80},
              # OpenAI's own answers carry zeroed details
              {"prompt_tokens": 1234, "completion_tokens": 56, "total_tokens": 1290,
               "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
               "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                             "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}]
    for _ in range(4):  # up to past every token tier in the map (128k, 200k, 272k)
        prompt, completion = rng.randrange(0, 400_000), rng.randrange(0, 100_000)
        usages.append({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
    return usages


def test_fast_path_equals_litellm_for_every_openai_chat_model() -> None:
    rng = random.Random(7)
    fast = 0
    for name in OPENAI_CHAT_MODELS:
        for model in (name, f"openai/{name}"):
            try:
                litellm.cost_per_token(model=model, custom_llm_provider="openai", prompt_tokens=1, completion_tokens=1)
            except Exception:
                continue  # litellm cannot price it under this spelling: nothing to compare
            fast += _linear_prices(model, "openai") is not None
            for usage in _usages(rng):
                assert cost_usd(_target(model), usage) == pytest.approx(_litellm_price(model, usage), rel=1e-12, abs=1e-15), \
                    (model, usage)
    # The comparison means something only where the fast path is taken: most OpenAI chat models.
    assert fast >= 100, fast


def test_the_fast_path_covers_common_models_and_not_tiered_ones() -> None:
    assert _linear_prices("gpt-4o-mini", "openai") is not None
    assert _linear_prices("openai/gpt-4o", "openai") is not None
    tiered = [name for name in OPENAI_CHAT_MODELS
              if any("above_" in key and "12hr" not in key and value for key, value in litellm.model_cost[name].items()
                     if not key.startswith("cache"))]
    assert tiered, "no tiered OpenAI model in the price map any more: pick another exclusion to test"
    for name in tiered:
        assert _linear_prices(name, "openai") is None, name


def test_usage_with_cached_or_reasoning_tokens_is_priced_by_litellm() -> None:
    model = "gpt-4o-mini"  # has a cache-read price below its input price
    info = litellm.model_cost[model]
    assert info["cache_read_input_token_cost"] < info["input_cost_per_token"]
    usage = {"prompt_tokens": 10_000, "completion_tokens": 500, "total_tokens": 10_500,
             "prompt_tokens_details": {"cached_tokens": 8_000}}
    linear = 10_000 * info["input_cost_per_token"] + 500 * info["output_cost_per_token"]
    priced = cost_usd(_target(model), usage)
    assert priced == pytest.approx(_litellm_price(model, usage), rel=1e-12)
    assert priced < linear  # the cached tokens were priced as cached


def test_config_prices_and_unknown_models() -> None:
    usage = {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100}
    custom = _target("openai/my-student", input_cost_per_token=1e-6, output_cost_per_token=2e-6)
    assert cost_usd(custom, usage) == pytest.approx(1000 * 1e-6 + 100 * 2e-6)
    assert cost_usd(_target("openai/my-student"), usage) == 0.0  # not in the price map: unknown, reported as 0
    assert cost_usd(_target("gpt-4o-mini"), None) == 0.0
