"""``_cost``: what a call cost in USD, exactly as litellm prices it, without litellm's cost on every call.

``litellm.cost_per_token`` costs ~0.1 ms per call hot (~0.2 ms in the server: 15 % of the event
loop's time on a direct-path request, bench/README.md), most of it dispatch that does not depend on
the tokens. For the common case the price is linear: an OpenAI model whose price-map entry has no
token tiers and no request fees, and usage with nothing but prompt and completion tokens (no cached,
audio or reasoning tokens, no provider bill). Then the cost is ``prompt × input + completion ×
output`` from the same price-map entry. Everything else goes to litellm. ``tests/test_pricing.py``
holds the fast path to litellm's own answer for every OpenAI chat model in the price map.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

import litellm

from opentracy.routing.aliases import PRICE_KEYS, Target

# Price-map keys that do not change the cost of plain usage: prices of cached, audio or searched
# tokens (plain usage has none), and of the batch / priority / flex tiers (chosen by a request's
# service_tier, which the cost is never asked for). Any other priced key (token tiers such as
# ``input_cost_per_token_above_272k_tokens``, per-request or per-second fees) means: ask litellm.
_PLAIN_USAGE_KEYS = frozenset({"prompt_tokens", "completion_tokens", "total_tokens",
                               "prompt_tokens_details", "completion_tokens_details"})
_LINEAR_KEYS = ("input_cost_per_token", "output_cost_per_token")
_IGNORED_PREFIXES = ("cache_read_input_token_cost", "cache_creation_input_token_cost")
_IGNORED_SUFFIXES = ("_batches", "_priority", "_flex", "_ultrafast", "_decisions")
_IGNORED_KEYS = frozenset({"input_cost_per_audio_token", "output_cost_per_audio_token",
                           "search_context_cost_per_query", "code_interpreter_cost_per_session"})


def cost_usd(target: Target, usage: Mapping[str, Any] | None) -> float:
    """USD for ``usage`` at ``target``'s price: config prices first, then litellm's price map."""
    if not usage:
        return 0.0
    custom = {k: float(target.params[k]) for k in PRICE_KEYS[:2] if k in target.params}
    if not custom and _is_plain(usage):
        prices = _linear_prices(target.model, target.provider)
        if prices is not None:
            return usage.get("prompt_tokens", 0) * prices[0] + usage.get("completion_tokens", 0) * prices[1]
    try:
        prompt, completion = litellm.cost_per_token(
            model=target.model,
            custom_llm_provider=target.provider,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            custom_cost_per_token=custom or None,  # type: ignore[arg-type]
            # The whole usage block, as litellm's own response_cost does: a provider's own bill (Perplexity's
            # usage.cost.total_cost with its request fee), cached and reasoning tokens.
            usage_object=None if custom else litellm.Usage(**usage),
        )
    except Exception:  # a model missing from the price map costs "unknown", reported as 0
        return 0.0
    return float(prompt + completion)


def _is_plain(usage: Mapping[str, Any]) -> bool:
    """Only prompt and completion tokens: no other key, no non-zero detail (cached, audio, reasoning)."""
    if not _PLAIN_USAGE_KEYS.issuperset(usage):
        return False
    for key in ("prompt_tokens_details", "completion_tokens_details"):
        details = usage.get(key)
        if details and (not isinstance(details, Mapping) or any(details.values())):
            return False
    return all(type(usage.get(k, 0)) is int for k in ("prompt_tokens", "completion_tokens"))


@functools.lru_cache(maxsize=1024)
def _linear_prices(model: str, provider: str) -> tuple[float, float] | None:
    """(input, output) USD per token when this model's price is linear in plain tokens, else None.

    Cached per process: the price map is litellm's bundled one (``LITELLM_LOCAL_MODEL_COST_MAP``) and
    does not change while the engine runs.
    """
    if provider != "openai":  # other providers' prices go through their own cost functions in litellm
        return None
    try:
        info = litellm.get_model_info(model, custom_llm_provider=provider)
    except Exception:
        return None
    for key, value in info.items():
        if not value or ("cost" not in key and "pric" not in key) or key in _LINEAR_KEYS or key in _IGNORED_KEYS:
            continue
        if key.startswith(_IGNORED_PREFIXES) or key.endswith(_IGNORED_SUFFIXES):
            continue
        return None  # a tier, a fee, a per-second price: litellm knows how
    prices = info.get("input_cost_per_token"), info.get("output_cost_per_token")
    if not all(isinstance(p, (int, float)) and not isinstance(p, bool) for p in prices):
        return None
    return float(prices[0]), float(prices[1])
