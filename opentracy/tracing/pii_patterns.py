"""The PII and secret patterns behind :class:`opentracy.tracing.redact.Redactor`: one spec per
pattern (marker, type, trigger chars, guards, regex, validator), the validators that confirm a
candidate (Luhn and issuer, mod-97, :mod:`ipaddress`, SSN ranges, digit counts, dates), and
:func:`build_pattern`, which folds every spec into one regex. What each type covers, and why the
regex is shaped by trigger chars, is in redact.py's docstring and the comments below.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Callable, Iterable

TYPES = (
    "SECRET",
    "EMAIL",
    "IBAN",
    "CREDIT_CARD",
    "SSN",
    "IP_ADDRESS",
    "PHONE",
)
PLACEHOLDERS = {t: f"[{t}]" for t in TYPES}
_PLACEHOLDER_VALUES = frozenset(PLACEHOLDERS.values())

# --------------------------------------------------------------------------
# Validators. Signature: (text, s, e, m) -> (start, end) of the span to
# replace, or None to reject the candidate. ``s`` is the position of the
# trigger char (see "Patterns" below), ``e`` the end of the match ``m``;
# for most patterns ``text[s:e]`` is the candidate.
# --------------------------------------------------------------------------

_Span = tuple[int, int] | None
_Validator = Callable[[str, int, int, "re.Match[str]"], _Span]


def _luhn_ok(digits: str) -> bool:
    total = 0
    parity = len(digits) % 2
    for i, ch in enumerate(digits):
        d = ord(ch) - 48
        if i % 2 == parity:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _whole(text: str, s: int, e: int, m: re.Match[str]) -> _Span:
    return s, e


def _prefixed(k: int, need_digit: bool = False) -> _Validator:
    """Secret found at the separator after a k-char prefix ("sk-": k=2)."""

    def validate(text: str, s: int, e: int, m: re.Match[str]) -> _Span:
        # Real keys are random base62; requiring a digit keeps slugs such
        # as "sk-the-quick-brown-fox-jumps-over" untouched.
        if need_digit and not any(c.isdigit() for c in text[s + 1 : e]):
            return None
        return s - k, e

    return validate


def _value_group(name: str, need_digit: bool = False) -> _Validator:
    def validate(text: str, s: int, e: int, m: re.Match[str]) -> _Span:
        v = m.group(name)
        if need_digit and not any(c.isdigit() for c in v):
            return None
        if v in _PLACEHOLDER_VALUES:  # already redacted (idempotence)
            return None
        return m.span(name)

    return validate


def _left_boundary_ok(text: str, i: int) -> bool:
    """True if a candidate may start at ``text[i]`` (word start)."""
    if i == 0:
        return True
    c = text[i - 1]
    if not (c.isascii() and (c.isalnum() or c == "_")):
        return True
    # "\nfe80::1" in JSON-escaped text: the "n" belongs to the escape.
    return c in "nrt" and text[i - 2] == "\\"


_LATIN = "\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f"
_LOCAL_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-"
)


def _is_local_char(c: str) -> bool:
    return c in _LOCAL_CHARS or (
        "\u00c0" <= c <= "\u024f" and c not in "\u00d7\u00f7"
    )


def _email(text: str, s: int, e: int, m: re.Match[str]) -> _Span:
    # The match starts at "@" (text[s]) and covers the domain; walk left
    # over the local part (at most 64 chars, RFC 5321).
    i = s
    floor = max(0, s - 64)
    while i > floor and _is_local_char(text[i - 1]):
        i -= 1
    if i == floor and floor > 0 and _is_local_char(text[i - 1]):
        return None  # local part longer than 64 chars: not an address
    # "\nbob@x.com" inside JSON-escaped text: the "n" belongs to the escape.
    if i > 0 and text[i - 1] == "\\" and text[i] in "nrt":
        i += 1
    while i < s and text[i] in ".%+-":
        i += 1
    local = text[i:s]
    if not local or local == "git" or local.endswith(".") or ".." in local:
        return None
    return i, e


_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16,
    "BG": 22, "BH": 22, "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22,
    "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20,
    "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22,
    "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21,
    "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30,
    "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20,
    "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22,
    "RU": 33, "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24,
    "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26,
    "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}


def _iban_ok(compact: str) -> bool:
    if _IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    rearranged = compact[4:] + compact[:4]
    # int(c, 36) maps 0-9 -> 0-9 and A-Z -> 10-35, as ISO 13616 requires.
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _iban(text: str, s: int, e: int, m: re.Match[str]) -> _Span:
    # Triggered at the first check digit: the country code is text[s-2:s].
    # The candidate regex is greedy; a trailing group that belongs to the
    # following text would break the checksum, so also try shorter
    # prefixes ending at group boundaries.
    s -= 2
    cand = text[s:e]
    while True:
        compact = cand.replace(" ", "")
        if len(compact) < 15:
            return None
        if _iban_ok(compact):
            return s, s + len(cand)
        cut = cand.rfind(" ")
        if cut <= 4:
            return None
        cand = cand[:cut]


def _card_network_ok(d: str, grouped: bool) -> bool:
    """Issuer prefix (IIN) and length of a known card network.

    Cuts down the 1-in-10 Luhn collisions of arbitrary digit runs (EAN
    codes, account numbers, ids) that no network would issue.
    """
    n = len(d)
    p2, p3, p4 = int(d[:2]), int(d[:3]), int(d[:4])
    if d[0] == "4":  # Visa (13 digits only in the old grouped form)
        return n in (16, 19) or (n == 13 and grouped)
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:  # Mastercard
        return n == 16
    if 2200 <= p4 <= 2204:  # Mir
        return 16 <= n <= 19
    if p2 in (34, 37):  # American Express
        return n == 15
    if 300 <= p3 <= 305 or p4 == 3095 or p2 in (36, 38, 39):  # Diners
        return 14 <= n <= 19
    if 3528 <= p4 <= 3589:  # JCB
        return 16 <= n <= 19
    if p4 in (5018, 5020, 5038, 5893, 6304, 6759, 6761, 6762, 6763):  # Maestro
        return 13 <= n <= 19
    if p2 in (50, 56, 57, 58, 60, 62, 63, 65, 67) or 644 <= p3 <= 649 or p4 == 6011:
        return 16 <= n <= 19  # Maestro, RuPay, UnionPay, Discover
    return False


def _card(text: str, s: int, e: int, m: re.Match[str]) -> _Span:
    cand = text[s:e]
    while True:
        digits = cand.replace(" ", "").replace("-", "")
        n = len(digits)
        if n < 13:
            return None
        if n <= 19 and _luhn_ok(digits) and _card_network_ok(digits, n != len(cand)):
            return s, s + len(cand)
        cut = max(cand.rfind(" "), cand.rfind("-"))
        if cut <= 0:
            return None
        cand = cand[:cut]


def _ssn(text: str, s: int, e: int, m: re.Match[str]) -> _Span:
    area, group, serial = text[s : s + 3], text[s + 4 : s + 6], text[s + 7 : s + 11]
    if area == "000" or area == "666" or area[0] == "9":
        return None
    if group == "00" or serial == "0000":
        return None
    return s, e


# Text right before a dotted quad that marks it as a version, not an address.
_VERSION_CONTEXT = re.compile(
    r"(?:\b(?:version|ver|release|rel|build|firmware|fw|rev|revision|rv|v)\.?:?[ \t]*"
    r"|(?:[=<>~!]=|\^|~)[ \t]*"
    r"|[A-Za-z]/)$",  # product token: Firefox/1.2.3.4 (but not http://1.2.3.4)
    re.IGNORECASE,
)


def _ipv4(text: str, s: int, e: int, m: re.Match[str]) -> _Span:
    try:
        ipaddress.IPv4Address(text[s:e])
    except ValueError:
        return None
    if _VERSION_CONTEXT.search(text[max(0, s - 12) : s]):
        return None
    return s, e


_HEX_GROUPS = re.compile(r"[0-9A-Fa-f.]+")
_HEX_CHARS = frozenset("0123456789abcdefABCDEF")


def _ipv6(text: str, s: int, e: int, m: re.Match[str]) -> _Span:
    # The match starts at the first ":" (text[s]); the first group (0-4 hex
    # digits) lies left of it.
    i = s
    while i > 0 and i > s - 4 and text[i - 1] in _HEX_CHARS:
        i -= 1
    if (i > 0 and text[i - 1] in ":.") or not _left_boundary_ok(text, i):
        return None
    cand = text[i:e]
    while cand.endswith(":") and not cand.endswith("::"):
        cand = cand[:-1]
    e = i + len(cand)
    nxt = text[e : e + 2]
    if nxt[:1].isalnum() or nxt[:1] == "_" or (nxt[:1] == "." and nxt[1:2].isdigit()):
        return None
    # Require some substance: "::", "::2" (slices), "ab::cd" are not
    # addresses anyone redacts for; "fe80::1", "2001:db8::1" are.
    groups = _HEX_GROUPS.findall(cand)
    if len(groups) < 2:
        return None
    if len(groups) < 3 and max(len(g) for g in groups) < 3:
        return None
    try:
        ipaddress.IPv6Address(cand)
    except ValueError:
        return None
    return i, e


_DATE_IN_NUMBER = re.compile(
    r"(?:19|20)\d\d[-./ ](?:0?[1-9]|1[0-2])[-./ ](?:0?[1-9]|[12]\d|3[01])(?!\d)"
    r"|(?<!\d)(?:0?[1-9]|[12]\d|3[01])[-./ ](?:0?[1-9]|1[0-2])[-./ ](?:19|20)\d\d"
    r"|(?<!\d)(?:0?[1-9]|1[0-2])[-./ ](?:0?[1-9]|[12]\d|3[01])[-./ ](?:19|20)\d\d"
)
_PHONE_LAST_SEP = re.compile(r"[ .\-/](?=[\d(][^ .\-/]*$)")
_PHONE_EXT = re.compile(r"[ ]?(?:x|ext\.?|#)[ ]?\d{1,6}$", re.IGNORECASE)


def _digit_count(s: str) -> int:
    return sum(1 for c in s if c.isdigit())


def _phone(lo: int, hi: int, hi_00: int | None = None) -> _Validator:
    """Digit count in [lo, hi] ("(0)" trunk marker and an extension such as
    "x123" not counted); no calendar dates inside.

    The candidate regexes are greedy; when a number is followed by another
    group of digits ("020 7946 0958 24h") the trailing groups are dropped
    one by one until the count fits.
    """

    def validate(text: str, s: int, e: int, m: re.Match[str]) -> _Span:
        cand = text[s:e]
        ext = _PHONE_EXT.search(cand)
        if ext is not None:
            main = cand[: ext.start()]
            n = _digit_count(main.replace("(0)", ""))
            if lo <= n <= (hi_00 if hi_00 and main.startswith("00") else hi):
                if not _DATE_IN_NUMBER.search(main):
                    return s, e
            cand = main
        top = hi_00 if hi_00 is not None and cand.startswith("00") else hi
        while True:
            n = _digit_count(cand.replace("(0)", ""))
            if n < lo:
                return None
            if n <= top:
                if _DATE_IN_NUMBER.search(cand):
                    return None
                return s, s + len(cand)
            cut = _PHONE_LAST_SEP.search(cand)
            if cut is None:
                return None
            cand = cand[: cut.start()]

    return validate


# --------------------------------------------------------------------------
# Patterns.
#
# Speed: CPython's regex engine can skip at C speed to the next position
# whose char is in a set, but only if every top-level alternative of the
# pattern starts with a literal char. So the combined regex is one
# alternative per "trigger" char (each digit, "-", "_", "@", ":", "(", "+",
# "b", "A", "B", "J"), each holding the specs that can start at that char,
# in priority order. Ordinary prose is skipped without ever entering the
# alternatives (a few per cent of the chars of prose are triggers), and at
# a trigger the engine rejects the other alternatives by their first char.
# Digits are the expensive triggers: digit-dense text (logs, ids) is the
# slow case.
# Every candidate is found at its trigger char:
#
# * digits / "A"(KIA, Iza) / "B"(earer) / "b"(earer) / "(" / "+": the
#   candidate's first char, which must sit at a word start (after a char
#   that is not an ASCII word char, or right after a "\n"-style escape in
#   JSON-escaped text);
# * "-" / "_" / "J": the char after a key prefix (sk-, ghp_, xoxb-, eyJ...);
#   the prefix is checked with a lookbehind and added back by the validator;
# * a digit after two upper-case letters: an IBAN's first check digit;
# * "@": e-mail; the local part is found by walking left in the validator;
# * ":": IPv6 (its first colon; the first hex group is found by walking
#   left) and scheme://user:password@ URLs.
#
# Each spec: (marker, type, triggers, guard, rest, validator).
# ``triggers`` lists the trigger chars; ``guard`` (a tuple of checks) and
# then ``rest`` are matched after the trigger (their lookbehinds see the
# trigger char); consecutive specs share their common leading guards
# (_WS: the trigger sits at a word start). Priority = order in SPECS: the
# first spec that matches at a trigger wins; if its validator rejects the
# candidate, the following specs are tried at the same trigger, then the
# scan moves on by one char.
# --------------------------------------------------------------------------

_WORD = "A-Za-z0-9_"
# After the first char: it sits at a word start (not after an ASCII word
# char, unless that is the letter of a "\n"/"\r"/"\t" escape).
# (One lookbehind settles the common case: after a word char other than
# n/r/t the candidate is rejected right away.)
_WORD_START = r"(?<![A-Za-mo-qsu-z0-9_].)(?:(?<![nrt].)|(?<=\\..))"
_DIGITS = "0123456789"


def _not_after(excluded: str) -> str:
    """After the first char: the char before it is not in ``excluded``."""
    return rf"(?<![{excluded}].)"


def _after_prefix(prefix: str, k: int | None = None) -> str:
    """At the trigger (the last char of ``prefix``): ``prefix`` is right
    there and starts at a word start (not after a word char or "-").

    ``prefix`` is a regex without the trigger char, of fixed width ``k``
    (default: its length as a literal) plus the trigger."""
    k = (len(prefix) if k is None else k) + 1
    return rf"(?<={prefix}.)(?:(?<![{_WORD}\-].{{{k}}})|(?<=\\[nrt].{{{k}}}))"


_LABEL = f"A-Za-z0-9{_LATIN}"
_PEM_END = r"-----END[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"
_NL = r"(?:[ \t]*(?:\r?\n|\\r\\n|\\n))"
_NOT_AFTER = r"(?![A-Za-z0-9_]|[.\-/]\d)"  # end of a number-like candidate
_EXT = r"(?:[ ]?(?:x|ext\.?|#)[ ]?\d{1,6})?"  # phone extension: x123, ext. 45
_KEY = r"[A-Za-z0-9]"
# Left of the first colon of an IPv6 address: 0-4 hex digits at a word
# start (not after a word char, ":" or "."). With fewer than 2 of them, the
# rest must hold a run of >= 2 hex digits (so "[::2]", "[1::3]" slices are
# dropped here already; see _ipv6 for the full rule).
_IPV6_LEFT = (
    rf"(?:(?:(?<=[^{_WORD}:.]:)|(?<=\\[nrt]:)|(?<=\A:)"
    rf"|(?<=[^{_WORD}:.][0-9A-Fa-f]:)|(?<=\\[nrt][0-9A-Fa-f]:)|(?<=\A[0-9A-Fa-f]:))"
    rf"(?=[0-9A-Fa-f:]{{0,40}}[0-9A-Fa-f]{{2}})"
    + "".join(
        rf"|(?<=[^{_WORD}:.][0-9A-Fa-f]{{{k}}}:)|(?<=\\[nrt][0-9A-Fa-f]{{{k}}}:)"
        rf"|(?<=\A[0-9A-Fa-f]{{{k}}}:)"
        for k in range(2, 5)
    )
    + ")"
)

_Spec = tuple[str, str, str, tuple[str, ...], str, _Validator]
_WS = (_WORD_START,)
# Word start, and not after "." / "-" / a thousands comma ("$5,028.71"):
# shared by the digit-led specs except IPv4 (10.0.0.1-10.0.0.9 is a range).
_WS_NUM = (_WORD_START, r"(?<![.\-].)(?<!\d,.)")
# Cheap shared pre-checks for the keys found at their "-" / "_" separator:
# the char before the separator is the last char of one of the prefixes.
_DASH_KEY = (r"(?<=[kixabeprs].)",)
_UNDERSCORE_KEY = (r"(?<=[kpousrbf8].)",)
SPECS: tuple[_Spec, ...] = (
    # ---- digits
    (
        "card",
        "CREDIT_CARD",
        _DIGITS,
        _WS_NUM,
        _not_after("+")
        # not the tail of a longer grouped number ("DE89 3704 0044 ...")
        + r"(?<![A-Z0-9]{2}\d\d[ \-].)"
        + r"(?:\d{12,18}(?![A-Za-z0-9_]|[.,]\d)"
        + r"|\d{3}(?P<card_sep>[ \-])\d{4,6}(?:(?P=card_sep)\d{2,5}){1,3}(?![A-Za-z0-9_]|[.,]\d))",
        _card,
    ),
    (
        "ssn",
        "SSN",
        _DIGITS,
        _WS_NUM,
        r"\d\d-\d\d-\d{4}(?![A-Za-z0-9_]|-\d)",
        _ssn,
    ),
    (
        "phone_na",
        "PHONE",
        "23456789",
        _WS_NUM,
        # 415-555-2671, 415.555.2671 (same separator twice)
        _not_after("+/")
        + r"\d\d(?P<na_sep>[.\-])[2-9]\d\d(?P=na_sep)\d{4}"
        + _EXT
        + _NOT_AFTER,
        _whole,
    ),
    (
        "phone_na1",
        "PHONE",
        "1",
        _WS_NUM,
        # 1-800-555-0199, 1 800 555 0199, 1.800.555.0199
        _not_after("+/")
        + r"(?<!\d[ .].)"  # not the tail of a longer group of numbers
        + r"(?P<na1_sep>[ .\-])[2-9]\d\d(?P=na1_sep)[2-9]\d\d(?P=na1_sep)\d{4}"
        + _EXT
        + _NOT_AFTER,
        _whole,
    ),
    (
        "phone_national",
        "PHONE",
        "0",
        _WS_NUM,
        # Trunk-0 national numbers with separators (UK/DE/FR/NL/...), and
        # 00<cc> international prefix: 020 7946 0958, 06 12 34 56 78,
        # 030/1234-5678, 0044 20 7946 0958.
        _not_after("+/")
        + r"(?<!\d[ .].)"  # not the tail of a longer group of numbers
        + r"(?:0[1-9]\d{0,2}|[1-9]\d{0,3})[ ./\-]\d{2,8}+(?:[ .\-]\d{2,8}+){0,5}"
        + _EXT
        + _NOT_AFTER,
        _phone(9, 13, hi_00=17),
    ),
    (
        "ipv4",
        "IP_ADDRESS",
        _DIGITS,
        _WS,
        _not_after(".") + r"\d{0,2}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?![A-Za-z0-9_]|\.\d)",
        _ipv4,
    ),
    (
        # Found at its first check digit (so that upper-case letters need
        # not be triggers); the country code is checked by lookbehind.
        "iban",
        "IBAN",
        _DIGITS,
        (_after_prefix("[A-Z][A-Z]", 2),),
        r"\d(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![A-Za-z0-9])",
        _iban,
    ),
    # ---- upper case
    (
        "aws_google",
        "SECRET",
        "A",
        _WS,
        _not_after("-") + r"(?:(?:KIA|SIA)[A-Z0-9]{16}(?![A-Za-z0-9])|Iza[A-Za-z0-9_\-]{35})",
        _whole,
    ),
    (
        "bearer",
        "SECRET",
        "B",
        _WS,
        # Keeps the word: "Bearer [SECRET]".
        r"(?:earer|EARER)[ \t]+(?P<bearer_v>[A-Za-z0-9._~+/\-]{16,}=*)",
        _value_group("bearer_v", need_digit=True),
    ),
    (
        "jwt",
        "SECRET",
        "J",
        (),
        _after_prefix("ey") + r"[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]*",
        _prefixed(2),
    ),
    # ---- "-" and "_": PEM and prefixed keys
    (
        "pem",
        "SECRET",
        "-",
        (),
        # Whole block when the END line is there (within 16 KiB); otherwise
        # the header plus every following base64-ish line (truncated key).
        r"----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"
        + r"(?:[\s\S]{0,16384}?" + _PEM_END
        + r"|(?:" + _NL + r"+[A-Za-z0-9+/=:, -]{8,})*)",
        _whole,
    ),
    (
        # OpenAI sk-/sk-proj-/sk-svcacct-, Anthropic sk-ant-, OpenRouter
        # sk-or-, DeepSeek sk-...
        "sk",
        "SECRET",
        "-",
        _DASH_KEY,
        _after_prefix("sk") + r"[A-Za-z0-9_\-]{20,}",
        _prefixed(2, need_digit=True),
    ),
    ("xai", "SECRET", "-", _DASH_KEY, _after_prefix("xai") + _KEY + "{20,}", _prefixed(3)),
    ("pplx", "SECRET", "-", _DASH_KEY, _after_prefix("pplx") + _KEY + "{30,}", _prefixed(4)),
    (
        "slack",
        "SECRET",
        "-",
        _DASH_KEY,
        _after_prefix("xox[abeprs]", 4)
        + r"[A-Za-z0-9\-]{10,}",
        _prefixed(4, need_digit=True),
    ),
    (
        # Stripe secret / restricted keys: sk_live_, rk_test_, ...
        "stripe",
        "SECRET",
        "_",
        _UNDERSCORE_KEY,
        _after_prefix("[sr]k", 2)
        + r"(?:live|test)_" + _KEY + "{16,}",
        _prefixed(2),
    ),
    (
        "github",
        "SECRET",
        "_",
        _UNDERSCORE_KEY,
        _after_prefix("gh[pousr]", 3) + _KEY + "{30,}",
        _prefixed(3),
    ),
    (
        "github_pat",
        "SECRET",
        "_",
        _UNDERSCORE_KEY,
        _after_prefix("github") + r"pat_[A-Za-z0-9_]{22,}",
        _prefixed(6),
    ),
    ("groq", "SECRET", "_", _UNDERSCORE_KEY, _after_prefix("gsk") + _KEY + "{20,}", _prefixed(3)),
    (
        "hf_r8",
        "SECRET",
        "_",
        _UNDERSCORE_KEY,
        _after_prefix("(?:hf|r8)", 2) + _KEY + "{30,}",
        _prefixed(2),
    ),
    # ---- lower-case "bearer"
    (
        "bearer_lower",
        "SECRET",
        "b",
        _WS,
        r"earer[ \t]+(?P<bearer_lower_v>[A-Za-z0-9._~+/\-]{16,}=*)",
        _value_group("bearer_lower_v", need_digit=True),
    ),
    # ---- "@", ":", "(", "+"
    (
        "email",
        "EMAIL",
        "@",
        (),
        f"[{_LABEL}](?:[{_LABEL}\\-]*[{_LABEL}])?"
        + f"(?:\\.[{_LABEL}](?:[{_LABEL}\\-]*[{_LABEL}])?)*\\.[A-Za-z]{{2,24}}(?![A-Za-z0-9_\\-])",
        _email,
    ),
    (
        "urlcred",
        "SECRET",
        ":",
        (),
        # scheme://user:PASSWORD@host -> only the password is replaced.
        r"(?<=[A-Za-z0-9+.\-]:)//[^\s/:@\"'<>]{1,128}:(?P<urlcred_v>[^\s/@\"'<>]{1,256})@",
        _value_group("urlcred_v"),
    ),
    (
        "ipv6",
        "IP_ADDRESS",
        ":",
        (),
        # From the first colon. Needs "::" or 7 colons (6 with an embedded
        # IPv4), which already rules out times and MAC addresses. Bounded
        # quantifiers: an address has at most 45 chars.
        _IPV6_LEFT
        + r"(?=:|[0-9A-Fa-f:]{0,40}::|(?:[0-9A-Fa-f]{1,4}:){5})"
        + r"(?:[0-9A-Fa-f:]{0,40}:)?(?:\d{1,3}(?:\.\d{1,3}){3}(?![\d.])|[0-9A-Fa-f]{0,4})",
        _ipv6,
    ),
    (
        "phone_paren",
        "PHONE",
        "(",
        _WS,
        # (415) 555-2671, (030) 1234 5678, (351) 919 953 314, (08).7118.7442;
        # not a year: "Nature (2019) 567-578".
        r"(?!(?:19|20)\d\d\))\d{2,5}\)[ .\-]?\d{2,10}+(?:[ .\-]\d{2,8}+){0,4}"
        + _EXT
        + _NOT_AFTER,
        _phone(9, 13),
    ),
    (
        "phone_intl",
        "PHONE",
        "+",
        _WS,
        # +<cc> then up to 7 groups, one optional separator between groups.
        # Atomic group: no exponential re-splitting of long digit runs.
        _not_after("+")
        + r"(?>\d{1,3}(?:[ .\-]?(?:\(\d{1,4}\)|\d{1,6}+)){1,7})"
        + _EXT
        + _NOT_AFTER,
        _phone(7, 15),
    ),
)

_GROUP_NAME = re.compile(r"\(\?P([<=])([A-Za-z_][A-Za-z0-9_]*)")


def _nest(items: list[tuple[tuple[str, ...], str]]) -> str:
    """Alternation of ``items`` (guards, alternative); consecutive items
    whose first guard is the same share one copy of it, recursively."""
    parts: list[str] = []
    i = 0
    while i < len(items):
        guard, alt = items[i]
        if not guard:
            parts.append(alt)
            i += 1
            continue
        j = i
        while j < len(items) and items[j][0][:1] == guard[:1]:
            j += 1
        inner = _nest([(g[1:], a) for g, a in items[i:j]])
        parts.append(f"{guard[0]}(?:{inner})")
        i = j
    return "|".join(parts)


def build_pattern(specs: Iterable[_Spec]) -> tuple[str, dict[str, tuple[str, str]]]:
    """The combined pattern, and marker group name -> (spec marker, type).

    One top-level alternative per trigger char, holding that char's specs
    in priority order; consecutive specs with the same guards (e.g. the
    word-start check) share one copy of them. Specs used under several
    trigger chars get their group names suffixed per copy (group names
    must be unique).
    """
    specs = list(specs)
    triggers: list[str] = []
    for spec in specs:
        for ch in spec[2]:
            if ch not in triggers:
                triggers.append(ch)
    # The engine compares the trigger with each top-level alternative in
    # turn: put the frequent ones first (digits, punctuation), letters last.
    triggers.sort(key=lambda c: (c.isalpha() and c.isupper(), c.isalpha()))
    markers: dict[str, tuple[str, str]] = {}
    branches: list[str] = []
    for ti, ch in enumerate(triggers):
        items: list[tuple[tuple[str, ...], str]] = []
        for marker, typ, chars, guard, rest, _ in specs:
            if ch not in chars:
                continue
            name = marker
            if len(chars) > 1:
                name = f"{marker}__{ti}"
                rest = _GROUP_NAME.sub(lambda g: f"(?P{g[1]}{g[2]}__{ti}", rest)
            markers[name] = (marker, typ)
            items.append((guard, f"{rest}(?P<{name}>)"))
        branches.append(re.escape(ch) + "(?:" + _nest(items) + ")")
    return "|".join(branches), markers
