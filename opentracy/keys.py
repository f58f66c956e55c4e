"""Engine keys as configured: a name, the key's SHA-256 digest, and whether it may use admin routes.

Keys may be written in plain text (``name:sk-...``) or already hashed (``name:sha256:<64 hex>``), so
a config file or environment need not hold a usable secret. Only digests are kept in memory after
parsing; the trace records the key's *name*.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

HASHED_PREFIX = "sha256:"
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


class KeyFormatError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class EngineKey:
    name: str
    digest: bytes
    admin: bool = False


def digest_of(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def hashed_form(key: str) -> str:
    """What to put in a config instead of the key itself: ``sha256:<hex>``."""
    return HASHED_PREFIX + digest_of(key).hex()


def parse_key(name: str, key: str, *, admin: bool, where: str) -> tuple[EngineKey, str | None]:
    """(the key, its plaintext or None when given hashed)."""
    key = key.strip()
    if not key:
        raise KeyFormatError(f"{where}: empty key; use `name:key`, `key` or `name:sha256:<hex>`")
    if key.startswith(HASHED_PREFIX):
        hex_digest = key[len(HASHED_PREFIX):]
        if not _HEX64.fullmatch(hex_digest):
            raise KeyFormatError(f"{where}: a hashed key is sha256: followed by 64 hex digits "
                                 f"(`opentracy hash-key` prints it)")
        return EngineKey(name, bytes.fromhex(hex_digest), admin), None
    return EngineKey(name, digest_of(key), admin), key


def parse_key_list(raw: Any, *, admin: bool, where: str) -> list[tuple[EngineKey, str | None]]:
    """``name:key,key2,name3:sha256:<hex>`` (env) or a list of strings / ``{name, key, admin}`` (file)."""
    items = raw.split(",") if isinstance(raw, str) else list(raw or [])
    keys = []
    for i, item in enumerate(items, start=1):
        label = f"{where} entry {i}"
        if isinstance(item, dict):
            name = str(item.get("name") or f"key-{i}")
            keys.append(parse_key(name, str(item.get("key") or ""), admin=bool(item.get("admin", admin)),
                                  where=label))
            continue
        text = str(item).strip()
        if not text:
            continue
        name, sep, key = text.partition(":")
        if not sep or name == "sha256" or name.startswith("sk-"):
            name, key = f"key-{i}", text
        keys.append(parse_key(name, key, admin=admin, where=label))
    return keys
