"""The engine: everything a request needs, built from one immutable :class:`Settings`.

A request takes the engine once at its start and uses only that object, so a reload (which builds
a new Engine and swaps it in) never changes the rules under a request in flight.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from opentracy.config import Settings
from opentracy.gateway.auth import KeyRing
from opentracy.gateway.errors import scrub
from opentracy.routing.aliases import ModelResolver
from opentracy.routing.direct import DirectOpenAI
from opentracy.routing.router import Router


@dataclass(frozen=True, slots=True)
class Engine:
    settings: Settings
    resolver: ModelResolver
    router: Router
    keys: KeyRing
    upstream_slots: asyncio.Semaphore  # max concurrent upstream calls (OPENTRACY_MAX_CONCURRENT_UPSTREAM)

    @classmethod
    def build(cls, settings: Settings, direct: DirectOpenAI | None = None) -> "Engine":
        """``direct`` is the app's HTTP client for OpenAI-format upstreams (it outlives reloads); it is
        used unless ``OPENTRACY_DIRECT=false``."""
        def remove_secrets(text: str) -> str:
            return scrub(text, settings.secrets)

        return cls(
            settings=settings,
            resolver=ModelResolver(settings),
            router=Router(num_retries=settings.num_retries, timeout=settings.timeout,
                          drop_params=settings.drop_params, connect_timeout=settings.engine.connect_timeout,
                          scrub=remove_secrets, direct=direct if settings.engine.direct else None),
            keys=KeyRing.from_settings(settings),
            upstream_slots=asyncio.Semaphore(settings.engine.max_concurrent_upstream or 1_000_000),
        )

    def scrub(self, text: str) -> str:
        """Remove every configured secret from text bound for a client, a log or a trace."""
        return scrub(text, self.settings.secrets)
