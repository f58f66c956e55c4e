"""Engine keys: who may call the engine. Never forwarded upstream, never traced (only the name)."""

from __future__ import annotations

import hmac

from opentracy.config import Settings
from opentracy.gateway.errors import APIError
from opentracy.keys import EngineKey, digest_of, parse_key


class KeyRing:
    """The configured engine keys; empty means the engine is open (loopback use only)."""

    def __init__(self, keys: list[EngineKey]) -> None:
        self._keys = tuple(keys)

    @classmethod
    def from_settings(cls, settings: Settings) -> "KeyRing":
        keys = list(settings.engine.api_keys)
        if settings.master_key:
            # litellm's master_key: full access, so admin here too.
            keys.append(parse_key("master", settings.master_key, admin=True, where="master_key")[0])
        return cls(keys)

    def authenticate(self, authorization: str | None, x_api_key: str | None, *, admin: bool = False) -> str | None:
        """The key's name (``None`` when auth is off); a 401/403 :class:`APIError` otherwise."""
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
        digest = digest_of(presented)
        match = None
        for key in self._keys:  # compare against every key: timing does not reveal which matched
            if hmac.compare_digest(key.digest, digest):
                match = key
        if match is None:
            raise APIError(401, "Incorrect engine API key provided.", type="authentication_error",
                           code="invalid_api_key")
        if admin and not match.admin:
            raise APIError(403, f"The engine key '{match.name}' is not an admin key; admin routes need a key "
                                "from OPENTRACY_ADMIN_KEYS or general_settings.master_key.",
                           type="permission_error", code="admin_required")
        return match.name
