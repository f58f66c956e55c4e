"""PII / secret redaction for stored traces (the engine; the patterns are in :mod:`pii_patterns`).

Enabled by ``OPENTRACY_TRACE_REDACT=true`` (see :func:`redaction_enabled`).
When enabled, the tracer runs everything it is about to store (messages,
response, tool calls and their JSON arguments, error text, metadata)
through :meth:`Redactor.redact`, which replaces PII with typed placeholders
and returns how many it replaced::

    red = Redactor()                         # build once, share freely
    text, n = red.redact_text("mail bob@example.com")   # "mail [EMAIL]", 1
    record, n = red.redact({"messages": [...], "metadata": {...}})

=================  ==========================================================
placeholder        what is replaced
=================  ==========================================================
``[EMAIL]``        ``local@domain.tld`` (local part ASCII or Latin letters,
                   <= 64 chars; the ``git@host`` SSH form is left alone)
``[PHONE]``        see *Phone rule* below
``[CREDIT_CARD]``  13-19 digits, contiguous or grouped with spaces/dashes
                   (``4-4-4-4``, ``4-6-5``, ...), passing the Luhn check,
                   with the issuer prefix and length of a real network
                   (Visa, Mastercard, Amex, Discover, Diners, JCB,
                   UnionPay, Maestro, Mir, RuPay)
``[SSN]``          US ``ddd-dd-dddd``; area 000/666/9xx, group 00 and serial
                   0000 are not SSNs and are left alone
``[IBAN]``         ``CCkk`` + BBAN, contiguous or in space-separated groups
                   of 4; known country, that country's exact length and a
                   valid ISO 7064 mod-97 checksum
``[IP_ADDRESS]``   IPv4 / IPv6, validated with :mod:`ipaddress` (see below)
``[SECRET]``       API keys (OpenAI ``sk-``/``sk-proj-``, Anthropic
                   ``sk-ant-``, AWS ``AKIA``/``ASIA`` key ids, GitHub
                   ``ghp_``/``gho_``/``ghu_``/``ghs_``/``ghr_``/``github_pat_``,
                   Google ``AIza``, Slack ``xox[abeprs]-``, Stripe
                   ``sk_live_``/``rk_live_``/``sk_test_``, Groq ``gsk_``,
                   xAI ``xai-``, Hugging Face ``hf_``, Replicate ``r8_``,
                   Perplexity ``pplx-``), JWTs (``eyJ``.x.y), ``Bearer
                   <token>``, the password of ``scheme://user:password@host``
                   and PEM private-key blocks (multi-line, also with
                   JSON-escaped ``\\n``; a truncated block without its END
                   line is redacted through its last base64 line)
=================  ==========================================================

Decisions worth knowing
-----------------------
* **Bearer** keeps the scheme word: ``Authorization: Bearer abc...`` becomes
  ``Authorization: Bearer [SECRET]`` so a trace still shows *that* a bearer
  token was sent. The token must be >= 16 chars of ``[A-Za-z0-9._~+/-]``
  and contain a digit, so prose ("a Bearer token", ``Bearer YOUR_API_KEY``)
  is untouched. URL credentials likewise keep the user and host:
  ``postgres://app:[SECRET]@db.internal:5432``. ``Basic`` auth headers and
  free-form ``password=...`` assignments are *not* detected.
* **Phone rule.** 7-15 digits *and* a recognisable shape, never a bare
  digit run: a leading ``+`` country code (``+44 20 7946 0958``,
  ``+14155552671``, ``+49 (0)30 1234 5678``); ``00`` + country code with
  separators; North-American ``415-555-2671`` / ``415.555.2671`` (the same
  separator twice, area and exchange starting with 2-9; optional ``1-``
  prefix); a parenthesised area code (``(415) 555-2671``,
  ``(030) 1234 5678``; not a year such as ``(2019) 567-578``); national
  numbers starting with the trunk ``0`` and using separators
  (``020 7946 0958``, ``06 12 34 56 78``, ``030/1234-5678``; 9-13 digits).
  An extension (``x123``, ``ext. 45``) is included. Not redacted: digit
  runs without separators (``0612345678``, ``15526883641``), spaces-only
  numbers without ``+``/trunk 0/parens (``415 555 2671``, ``612 345 678``:
  indistinguishable from lists of numbers), 7-digit local numbers, and any
  candidate containing a calendar date (``2024-01-15``, ``15.01.2024``) or
  following a thousands comma (``$5,028.71``).
* **Credit cards**: 13-digit Visa numbers (no longer issued) only count
  when grouped, because contiguous 13-digit runs are mostly EAN-13 product
  codes, which pass the Luhn check one time in ten.
* **IPv4 vs versions.** A dotted quad with valid octets is an IP address,
  except when it is part of a longer dotted/numeric sequence
  (``1.2.3.4.5``, ``v1.2.3.4``), follows a version marker (``version``,
  ``ver``, ``v``, ``rv:``, ``release``, ``build``, ``firmware``, ``==``,
  ``>=``, ``~=``...) or a product token (``Firefox/1.2.3.4``, but not
  ``http://1.2.3.4``). So ``version 1.2.3.4`` stays and ``server 1.2.3.4``
  is redacted. Loopback/private addresses are redacted too.
* **IPv6** candidates must parse with :class:`ipaddress.IPv6Address` and
  have some substance (>= 2 non-empty groups, one of them >= 3 hex digits,
  or >= 3 groups): ``std::``, slices such as ``a[::2]``, times
  (``12:30:45``), MAC addresses and also the bare ``::1`` stay untouched.
* **Word boundaries** are ASCII: PII glued to CJK text
  (``电话+86 138 0013 8000``) is found; PII glued to ASCII letters or
  digits (``id4111111111111111``) is not.
* **JSON strings** (tool-call arguments) are parsed, redacted value by value
  and re-serialised with ``json.dumps(..., ensure_ascii=False)`` *only when
  something was redacted* (otherwise the original string is returned as
  is). Numbers are never redacted, in Python structures or in JSON, so a
  card number sent as a JSON *number* is not caught.
* Dict keys are never changed; values other than str/list/tuple/dict are
  returned as they are; the input is never mutated.
* Placeholders never match any pattern, so redaction is idempotent.

Implementation: a single pass of one combined regex. CPython's regex
engine only skips quickly through text to candidate positions when every
top-level alternative starts with a literal char, so the pattern has one
alternative per *trigger* char (digits, ``-``, ``_``, ``@``, ``:``, ``(``,
``+``, ``b``, ``A``, ``B``, ``J``), each holding the patterns that can
start there, in priority order (secrets and PEM blocks before phones,
cards before phones, IBANs at their check digits...). An empty named group
ends each pattern so ``match.lastgroup`` tells which one hit. Validators
(Luhn and issuer, mod-97, :mod:`ipaddress`, SSN ranges, digit counts,
dates) run on the few candidates; when one rejects a candidate the
lower-priority patterns are tried at the same position, then the scan
moves on by one char, so a failed validator leaves the text untouched.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from opentracy.tracing.pii_patterns import PLACEHOLDERS, SPECS, TYPES, build_pattern

__all__ = [
    "ENV_VAR",
    "PLACEHOLDERS",
    "TYPES",
    "Finding",
    "Redactor",
    "redaction_enabled",
]

ENV_VAR = "OPENTRACY_TRACE_REDACT"
_TRUTHY = frozenset({"1", "true", "yes", "on", "y", "t"})


def redaction_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """True when ``OPENTRACY_TRACE_REDACT`` is set to a truthy value."""
    env = os.environ if environ is None else environ
    return env.get(ENV_VAR, "").strip().lower() in _TRUTHY


@dataclass(frozen=True, slots=True)
class Finding:
    """One redacted span: ``text[start:end]`` is replaced by ``[type]``."""

    type: str
    start: int
    end: int
    pattern: str


class Redactor:
    """Replaces PII and secrets with typed placeholders.

    ``types`` restricts redaction to a subset of :data:`TYPES` (default:
    all). Instances hold only compiled patterns and are safe to share
    between threads.
    """

    __slots__ = ("types", "_combined", "_order", "_singles", "_info", "_validators")

    def __init__(self, types: Iterable[str] | None = None) -> None:
        wanted = set(TYPES if types is None else types)
        unknown = wanted - set(TYPES)
        if unknown:
            raise ValueError(f"unknown PII types: {sorted(unknown)}")
        self.types = frozenset(wanted)
        specs = [s for s in SPECS if s[1] in wanted]
        self._order = tuple(s[0] for s in specs)
        validators = {s[0]: (s[1], s[5]) for s in specs}
        self._validators = validators
        pattern, markers = build_pattern(specs) if specs else ("", {})
        self._combined = re.compile(pattern) if specs else None
        # marker group name -> (spec marker, placeholder type, validator)
        self._info = {
            name: (marker, typ, validators[marker][1])
            for name, (marker, typ) in markers.items()
        }
        # One pattern per spec, to retry the lower-priority specs at a
        # trigger where a validator said no.
        self._singles = tuple(
            re.compile(
                "[" + re.escape(chars) + "]" + "".join(guard) + f"(?:{rest})(?P<{marker}>)"
            )
            for marker, _, chars, guard, rest, _ in specs
        )

    # ------------------------------------------------------------------ scan
    def _retry(self, marker: str, text: str, s: int) -> tuple[str, int, int, str] | None:
        order = self._order
        for j in range(order.index(marker) + 1, len(order)):
            m = self._singles[j].match(text, s)
            if m is None:
                continue
            name = order[j]
            typ, validate = self._validators[name]
            span = validate(text, s, m.end(), m)
            if span is not None:
                return typ, span[0], span[1], name
        return None

    def _scan(self, text: str) -> list[tuple[str, int, int, str]]:
        """(type, start, end, marker) of each finding, left to right."""
        hits: list[tuple[str, int, int, str]] = []
        search = self._combined.search
        info = self._info
        pos = 0
        n = len(text)
        while pos < n:
            m = search(text, pos)
            if m is None:
                break
            s = m.start()  # the trigger char
            marker, typ, validate = info[m.lastgroup]
            span = validate(text, s, m.end(), m)
            if span is not None:
                hit = (typ, span[0], span[1], marker)
            else:
                hit = self._retry(marker, text, s)
                if hit is None:
                    pos = s + 1
                    continue
            start = hit[1]
            if hits and hits[-1][2] > start:
                # Only e-mail (local part left of the "@" trigger) and
                # prefixed keys start before their trigger. An e-mail never
                # takes back text an earlier finding replaced
                # (scheme://user:[SECRET]@host is not an e-mail address).
                if hit[3] == "email" and hits[-1][2] < s:
                    hit = (typ, hits[-1][2], hit[2], marker)
                else:
                    pos = s + 1
                    continue
            hits.append(hit)
            pos = max(hit[2], s + 1)
        return hits

    def scan(self, text: str) -> list[Finding]:
        """Non-overlapping findings in ``text``, left to right."""
        if self._combined is None or not text:
            return []
        return [Finding(*h) for h in self._scan(text)]

    # ---------------------------------------------------------------- redact
    def redact_text(self, text: str) -> tuple[str, int]:
        """Return ``(redacted_text, number_of_replacements)``."""
        if self._combined is None or not text:
            return text, 0
        hits = self._scan(text)
        if not hits:
            return text, 0
        parts: list[str] = []
        last = 0
        for typ, start, end, _ in hits:
            parts.append(text[last:start])
            parts.append(PLACEHOLDERS[typ])
            last = end
        parts.append(text[last:])
        return "".join(parts), len(hits)

    def redact(self, obj: Any) -> tuple[Any, int]:
        """Redact every string inside a JSON-like structure.

        dicts (values only; keys untouched), lists and tuples are walked
        and rebuilt (the input is never mutated; an unchanged container is
        returned as the same object); strings holding a JSON object/array
        (tool-call arguments) are redacted value by value and re-serialised
        only if something changed; anything else (numbers, bools, None,
        other objects) is returned as is.
        """
        if isinstance(obj, str):
            return self._redact_str(obj)
        if isinstance(obj, dict):
            total = 0
            out: dict[Any, Any] = {}
            for k, v in obj.items():
                nv, c = self.redact(v)
                out[k] = nv
                total += c
            return (out, total) if total else (obj, 0)
        if isinstance(obj, (list, tuple)):
            total = 0
            items = []
            for v in obj:
                nv, c = self.redact(v)
                items.append(nv)
                total += c
            if not total:
                return obj, 0
            if isinstance(obj, list):
                return items, total
            make = getattr(obj, "_make", None)  # namedtuple
            return (make(items) if make is not None else tuple(items)), total
        return obj, 0

    def _redact_str(self, s: str) -> tuple[str, int]:
        if s[:1] in ("{", "[") or s.lstrip()[:1] in ("{", "["):
            try:
                parsed = json.loads(s)
            except ValueError:
                parsed = None
            if isinstance(parsed, (dict, list)):
                new, count = self.redact(parsed)
                if not count:
                    return s, 0
                return json.dumps(new, ensure_ascii=False), count
        return self.redact_text(s)
