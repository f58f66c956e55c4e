"""Turn the ``model`` a client sends into an ordered list of concrete targets.

Resolution order (the contract): an alias from ``aliases:``; then a ``model_list`` name (directly or
through ``router_settings.model_group_alias``), followed by its ``router_settings.fallbacks``; then
a litellm model string passed through (``gpt-4o``, ``anthropic/claude-sonnet-4-6``) with the
engine's provider keys from the environment.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

import litellm

from opentracy.config import ROUTER_ONLY_PARAMS, ConfigError, Deployment, Settings

# Pricing keys litellm accepts as call kwargs: model_info prices are passed through as these.
PRICE_KEYS = ("input_cost_per_token", "output_cost_per_token", "input_cost_per_second", "output_cost_per_second")


class UnknownModelError(LookupError):
    """The requested name is neither served by the config nor a litellm model string."""


@dataclass(frozen=True, slots=True)
class Target:
    """One concrete thing to call: the litellm params for ``litellm.acompletion``."""

    name: str  # what the config called it: a model_list name or the model string
    params: Mapping[str, Any]
    provider: str

    @property
    def model(self) -> str:
        return str(self.params["model"])


@dataclass(frozen=True, slots=True)
class Route:
    """How one requested name is served: the alias (if any) and the targets in order."""

    requested_model: str
    alias: str | None
    targets: tuple[Target, ...]
    shadow: tuple[Target, ...] = ()  # mirrored after the answer (aliases.<name>.shadow)


class ModelResolver:
    """Resolves names against one immutable :class:`Settings`; a reload builds a new resolver."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def served_names(self) -> list[str]:
        """Names listed by ``GET /v1/models``: aliases, model_list names, model_group_alias names."""
        names = [*self._settings.aliases, *self._settings.model_names, *self._settings.model_group_alias]
        return list(dict.fromkeys(names))

    def resolve(self, requested: str, user: str | None = None) -> Route:
        """Targets for ``requested``; raises :class:`UnknownModelError` if nothing serves it.

        For a weighted split, ``user`` (OpenAI's ``user`` field) keeps a user on one target.
        """
        if requested in self._settings.aliases:
            shadow = tuple(t for spec in self._settings.aliases[requested].shadow
                           for t in self._expand_entry(spec, (requested,), user)[:1])
            return Route(requested, requested, tuple(self._expand_alias(requested, (), user)), shadow)
        group = self._settings.model_group_alias.get(requested, requested)
        if self._settings.deployments_for(group):
            return Route(requested, None, tuple(self._expand_group(group, ())))
        if not self._settings.engine.passthrough:
            raise UnknownModelError(f"model {requested!r} is not configured (pass-through is off)")
        return Route(requested, None, (self._passthrough(requested, {"model": requested}),))

    def validate(self) -> None:
        """Resolve every alias and group once so unknown targets and cycles fail at start."""
        for name, spec in self._settings.aliases.items():
            try:
                for entry in (*spec.targets, *spec.shadow):  # every split entry, not only one pick
                    self._expand_entry(entry, (name,), None)
                self.resolve(name)
            except UnknownModelError as exc:
                raise ConfigError(f"aliases.{name}: {exc}; use a model_list name, an alias, or a "
                                  f"litellm model string such as openai/gpt-4o") from None
        for alias, group in self._settings.model_group_alias.items():
            if not self._settings.deployments_for(group):
                raise ConfigError(f"router_settings.model_group_alias.{alias}: {group!r} is not a "
                                  f"model_name in model_list")
        for group, fallbacks in self._settings.router_fallbacks.items():
            for name in (group, *fallbacks):
                if name not in self._settings.aliases and not self._settings.deployments_for(name):
                    raise ConfigError(f"router_settings.fallbacks: {name!r} is not a model_name in "
                                      f"model_list; fallbacks name model groups")
            self._expand_group(group, ())

    def _expand_alias(self, name: str, seen: tuple[str, ...], user: str | None = None) -> list[Target]:
        if name in seen:
            raise ConfigError(f"fallback cycle: {' -> '.join((*seen, name))}; remove one of the links")
        spec = self._settings.aliases[name]
        pick = pick_weighted(spec.weights, user)
        split = [spec.split[pick], *(entry for i, entry in enumerate(spec.split) if i != pick)]
        targets: list[Target] = []
        for entry in (*split, *spec.fallbacks):
            targets += self._expand_entry(entry, (*seen, name), user)
        return _unique(targets)

    def _expand_entry(self, spec: Mapping[str, Any], seen: tuple[str, ...], user: str | None) -> list[Target]:
        model = str(spec["model"])
        if len(spec) == 1 and model in self._settings.aliases:
            return self._expand_alias(model, seen, user)
        if len(spec) == 1 and self._settings.deployments_for(model):
            return self._expand_group(model, seen)
        return [self._passthrough(model, dict(spec))]

    def _expand_group(self, group: str, seen: tuple[str, ...]) -> list[Target]:
        """A model_list group's deployments (load-balanced), then its router fallbacks.

        As in litellm's Router, only the requested group's fallbacks are followed, not the
        fallbacks' own, so mutual fallbacks (a -> b, b -> a) are valid and cannot loop.
        """
        targets = self._group_deployments(group)
        for fallback in self._settings.router_fallbacks.get(group, ()):
            if fallback in self._settings.aliases:
                targets += self._expand_alias(fallback, (*seen, group))
            else:
                targets += self._group_deployments(fallback)
        return _unique(targets)

    def _group_deployments(self, group: str) -> list[Target]:
        return [self._deployment_target(d) for d in _balanced(self._settings.deployments_for(group))]

    def _deployment_target(self, deployment: Deployment) -> Target:
        params = {k: v for k, v in deployment.litellm_params.items() if k not in ROUTER_ONLY_PARAMS}
        for key in PRICE_KEYS:
            if key in deployment.model_info and key not in params:
                params[key] = deployment.model_info[key]
        return Target(deployment.model_name, MappingProxyType(params), _provider_of(params))

    def _passthrough(self, name: str, params: dict[str, Any]) -> Target:
        try:
            provider = _provider_of(params)
        except ValueError:
            raise UnknownModelError(f"model {name!r} is not an alias, not a model_list name and not a "
                                    f"litellm model string") from None
        return Target(name, MappingProxyType(params), provider)


def _provider_of(params: Mapping[str, Any]) -> str:
    try:
        _, provider, _, _ = litellm.get_llm_provider(
            model=str(params["model"]),
            custom_llm_provider=params.get("custom_llm_provider"),
            api_base=params.get("api_base"),
        )
    except Exception as exc:  # litellm raises BadRequestError for an unknown provider
        raise ValueError(str(exc)) from None
    return str(provider)


def _balanced(deployments: tuple[Deployment, ...]) -> list[Deployment]:
    """Order a group's deployments: by ``order`` when given, else a weighted shuffle.

    This mirrors litellm Router's simple-shuffle so load spreads the same way, while the others
    remain as fallbacks for the request.
    """
    if len(deployments) < 2:
        return list(deployments)
    if any("order" in d.litellm_params for d in deployments):
        return sorted(deployments, key=lambda d: int(d.litellm_params.get("order", 1_000_000)))
    pool = list(deployments)
    ordered = []
    while pool:
        weights = [float(d.litellm_params.get("weight", d.litellm_params.get("rpm", 1)) or 1) for d in pool]
        pick = random.choices(range(len(pool)), weights=weights)[0]
        ordered.append(pool.pop(pick))
    return ordered


def pick_weighted(weights: tuple[float, ...], user: str | None) -> int:
    """Index of the split entry serving this request: sticky per ``user`` (hashed), else random."""
    if len(weights) == 1:
        return 0
    total = sum(weights)
    if user:
        digest = hashlib.sha256(user.encode("utf-8", "surrogatepass")).digest()
        point = int.from_bytes(digest[:8], "big") / 2**64 * total
    else:
        point = random.random() * total
    for index, weight in enumerate(weights):
        if point < weight:
            return index
        point -= weight
    return max(i for i, w in enumerate(weights) if w > 0)


def _unique(targets: list[Target]) -> list[Target]:
    """Drop repeats: trying the same target twice in one request only doubles the failure."""
    seen: set[tuple[str, str]] = set()
    result = []
    for target in targets:
        key = (target.name, repr(sorted(target.params.items())))
        if key not in seen:
            seen.add(key)
            result.append(target)
    return result
