"""Engine keys: who may call the engine. Never forwarded upstream, never traced (only the name)."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from opentracy.config import Settings
from opentracy.gateway.errors import APIError


@dataclass(frozen=True, slots=True)
class EngineKey:
    name: str
    digest: bytes  # sha256 of the key: comparisons never touch the plaintext twice


class KeyRing:
    """The configured engine keys; empty means the engine is open (loopback use)."""

    def __init__(self, keys: list[tuple[str, str]]) -> None:
        self._keys = tuple(EngineKey(name, _digest(key)) for name, key in keys)

    @classmethod
    def from_settings(cls, settings: Settings) -> "KeyRing":
        keys = list(settings.engine.api_keys)
        if settings.master_key:
            keys.append(("master", settings.master_key))
        return cls(keys)

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def authenticate(self, authorization: str | None, x_api_key: str | None) -> str | None:
        """The key's name, ``None`` when auth is off; raises a 401 :class:`APIError` otherwise."""
        if not self._keys:
            return None
        presented = x_api_key
        if authorization:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                presented = token.strip()
        if not presented:
            raise APIError(401, "Missing engine API key. Send it as 'Authorization: Bearer <key>' or "
                                "'x-api-key: <key>'.", type="authentication_error", code="missing_api_key")
        digest = _digest(presented)
        match = None
        for key in self._keys:  # compare against every key: timing does not reveal which matched
            if hmac.compare_digest(key.digest, digest):
                match = key
        if match is None:
            raise APIError(401, "Incorrect engine API key provided.", type="authentication_error",
                           code="invalid_api_key")
        return match.name


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
