"""Tests for opentracy.tracing.redact.

The labelled corpus tests/data/pii_corpus.jsonl has one JSON object per
line: ``{"text": ..., "expected": {"EMAIL": 2, "PHONE": 1}}`` — the
placeholder types that must appear in the redacted text, with their
counts; ``"expected": {}`` marks a hard negative that must come back
byte-for-byte unchanged (an optional ``"note"`` says what it is).

Run ``pytest -s tests/test_redact.py`` to see the per-type table.
"""

from __future__ import annotations

import copy
import json
import time
from collections import Counter
from pathlib import Path

import pytest

from opentracy.tracing.redact import (
    ENV_VAR,
    PLACEHOLDERS,
    TYPES,
    Redactor,
    redaction_enabled,
)

CORPUS = Path(__file__).parent / "data" / "pii_corpus.jsonl"
MIN_RECALL = 0.95
MAX_FP_RATE = 0.01  # false-positive lines / negative lines


@pytest.fixture(scope="module")
def red() -> Redactor:
    return Redactor()


def _load_corpus() -> list[dict]:
    with CORPUS.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _placeholder_counts(text: str) -> Counter:
    return Counter({t: text.count(PLACEHOLDERS[t]) for t in TYPES if PLACEHOLDERS[t] in text})


# --------------------------------------------------------------------------
# Corpus: recall per type, false positives on hard negatives
# --------------------------------------------------------------------------


def test_corpus_shape():
    rows = _load_corpus()
    assert len(rows) >= 200
    positives = Counter()
    for row in rows:
        assert set(row) <= {"text", "expected", "note"}
        assert isinstance(row["text"], str) and row["text"]
        assert set(row["expected"]) <= set(TYPES), row
        positives.update(row["expected"])
    negatives = sum(1 for r in rows if not r["expected"])
    assert negatives >= 80
    for t in TYPES:
        assert positives[t] >= 15, f"too few {t} examples in the corpus"


def test_corpus_recall_and_false_positives(red: Redactor):
    rows = _load_corpus()
    expected_total: Counter = Counter()
    found: Counter = Counter()
    extra: Counter = Counter()  # placeholders beyond the expected ones
    neg_lines = neg_fp = 0
    failures: list[str] = []
    for row in rows:
        text, expected = row["text"], Counter(row["expected"])
        out, count = red.redact_text(text)
        got = _placeholder_counts(out)
        assert count == sum(got.values()), (text, out)
        if not expected:
            neg_lines += 1
            if out != text:
                neg_fp += 1
                failures.append(f"FP  {text!r}\n -> {out!r}")
            continue
        for t in TYPES:
            expected_total[t] += expected[t]
            found[t] += min(got[t], expected[t])
            extra[t] += max(0, got[t] - expected[t])
        if got != expected:
            failures.append(f"EXP {dict(expected)} GOT {dict(got)}\n    {text!r}\n -> {out!r}")

    recall = {t: found[t] / expected_total[t] for t in TYPES}
    print()
    print(f"{'type':<12} {'expected':>8} {'found':>6} {'recall':>7} {'extra':>6}")
    for t in TYPES:
        print(f"{t:<12} {expected_total[t]:>8} {found[t]:>6} {recall[t]:>7.3f} {extra[t]:>6}")
    print(
        f"negatives: {neg_lines} lines, {neg_fp} changed "
        f"(false-positive rate {neg_fp / neg_lines:.3%})"
    )
    for f in failures:
        print(f)

    for t in TYPES:
        assert recall[t] >= MIN_RECALL, f"{t} recall {recall[t]:.3f}"
    assert neg_fp <= MAX_FP_RATE * neg_lines, f"{neg_fp} false-positive lines"
    # Over-redaction on positive lines counts against precision too.
    assert sum(extra.values()) <= MAX_FP_RATE * sum(expected_total.values())


def test_corpus_idempotent(red: Redactor):
    for row in _load_corpus():
        once, _ = red.redact_text(row["text"])
        twice, n = red.redact_text(once)
        assert twice == once and n == 0, (row["text"], once, twice)


# --------------------------------------------------------------------------
# Validators decide
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "number",
    ["4111111111111111", "4111 1111 1111 1111", "4111-1111-1111-1111", "378282246310005",
     "3782 822463 10005", "5555555555554444", "6011000990139424", "2223003122003222",
     "36227206271667", "4111111111111111110"],
)
def test_luhn_valid_card_is_redacted(red: Redactor, number: str):
    assert red.redact_text(f"card {number} ok") == ("card [CREDIT_CARD] ok", 1)


@pytest.mark.parametrize(
    "number",
    ["4111111111111112", "4111 1111 1111 1112", "4111-1111-1111-1113", "378282246310006",
     "1234567890123456",
     "1705312200000",  # epoch millis: Luhn-valid? doesn't matter, prefix 1 is no card
     "7992739871300",  # Luhn-valid but 7 is not a card network prefix
     "411111111111",  # 12 digits: too short
     "41111111111111111111"],  # 20 digits: too long
)
def test_luhn_invalid_card_is_untouched(red: Redactor, number: str):
    text = f"card {number} ok"
    assert red.redact_text(text) == (text, 0)


def test_luhn_flip_one_digit(red: Redactor):
    good = "5105105105105100"
    assert red.redact_text(good)[1] == 1
    for i in range(len(good)):
        bad = good[:i] + str((int(good[i]) + 1) % 10) + good[i + 1:]
        if bad[0] in "23456":
            assert red.redact_text(bad) == (bad, 0), bad


@pytest.mark.parametrize(
    "iban",
    ["DE89 3704 0044 0532 0130 00", "DE89370400440532013000", "GB29 NWBK 6016 1331 9268 19",
     "FR14 2004 1010 0505 0001 3M02 606", "NO93 8601 1117 947", "BE68539007547034"],
)
def test_iban_valid_checksum_is_redacted(red: Redactor, iban: str):
    assert red.redact_text(f"pay to {iban}, thanks") == ("pay to [IBAN], thanks", 1)


@pytest.mark.parametrize(
    "iban",
    ["DE89 3704 0044 0532 0130 01",  # checksum
     "DE88 3704 0044 0532 0130 00",  # check digits
     "GB29NWBK60161331926818",  # checksum
     "DE89 3704 0044 0532 0130",  # too short for DE
     "ZZ89 3704 0044 0532 0130 00"],  # unknown country
)
def test_iban_bad_checksum_is_untouched(red: Redactor, iban: str):
    text = f"pay to {iban}, thanks"
    assert red.redact_text(text) == (text, 0)


def test_iban_trailing_group_is_not_swallowed(red: Redactor):
    assert red.redact_text("IBAN DE89 3704 0044 0532 0130 00 2024") == ("IBAN [IBAN] 2024", 1)


@pytest.mark.parametrize("ssn", ["000-12-3456", "666-12-3456", "912-34-5678", "123-00-4567", "123-45-0000"])
def test_invalid_ssn_ranges_untouched(red: Redactor, ssn: str):
    text = f"ssn {ssn}"
    assert red.redact_text(text) == (text, 0)


def test_valid_ssn(red: Redactor):
    assert red.redact_text("ssn 123-45-6789.") == ("ssn [SSN].", 1)


# --------------------------------------------------------------------------
# Secrets, PEM blocks, documented decisions
# --------------------------------------------------------------------------

_PEM_BODY = "\n".join(["MIIEowIBAAKCAQEAwX9z" + "A1b2C3d4" * 5] * 4 + ["Zm9vYmFy=="])
_PEM = f"-----BEGIN RSA PRIVATE KEY-----\n{_PEM_BODY}\n-----END RSA PRIVATE KEY-----"


def test_pem_block_multiline(red: Redactor):
    text = f"Here is the key:\n{_PEM}\nWhy does it fail?"
    assert red.redact_text(text) == ("Here is the key:\n[SECRET]\nWhy does it fail?", 1)


def test_pem_block_variants(red: Redactor):
    for kind in ("PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY", "ENCRYPTED PRIVATE KEY"):
        pem = _PEM.replace("RSA PRIVATE KEY", kind)
        assert red.redact_text(pem) == ("[SECRET]", 1), kind
    # JSON-escaped newlines (a service-account file pasted as one string).
    escaped = _PEM.replace("\n", "\\n")
    assert red.redact_text(f'"private_key": "{escaped}\\n"') == ('"private_key": "[SECRET]\\n"', 1)
    # Truncated block: header and the base64 lines after it are still removed.
    truncated = _PEM.split("-----END")[0].rstrip() + "\n(output truncated)"
    assert red.redact_text(truncated) == ("[SECRET]\n(output truncated)", 1)
    # Certificates and public keys are not secrets.
    cert = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----"
    assert red.redact_text(cert) == (cert, 0)


def test_two_pem_blocks_are_two_findings(red: Redactor):
    out, n = red.redact_text(f"{_PEM}\nand\n{_PEM}")
    assert (out, n) == ("[SECRET]\nand\n[SECRET]", 2)


def test_bearer_keeps_the_scheme_word(red: Redactor):
    assert red.redact_text("Authorization: Bearer abcDEF123456ghiJKL789") == (
        "Authorization: Bearer [SECRET]",
        1,
    )
    for text in ("Use a Bearer token", "Authorization: Bearer YOUR_API_KEY", "Bearer <token>"):
        assert red.redact_text(text) == (text, 0)


def test_url_credentials_keep_user_and_host(red: Redactor):
    assert red.redact_text("postgres://app:S3cr3t@db.internal:5432/prod") == (
        "postgres://app:[SECRET]@db.internal:5432/prod",
        1,
    )


@pytest.mark.parametrize(
    "key",
    ["sk-abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKL",
     "sk-proj-abcDEF123_ghiJKL456-mnoPQR789stuVWX",
     "sk-ant-api03-abcDEF123ghiJKL456mnoPQR789stuVWX-yz_AA",
     "AKIAIOSFODNN7EXAMPLE", "ASIAY34FZKBOKMUTVV7A",
     "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
     "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
     "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q",
     "xoxb-123456789012-1234567890123-abcdefABCDEF123",
     "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"],
)
def test_api_keys(red: Redactor, key: str):
    assert red.redact_text(f"key={key};") == ("key=[SECRET];", 1)


@pytest.mark.parametrize(
    "text",
    ["skill-based routing", "risk-adjusted-score-for-enterprise-users", "sk-learn",
     "task_live_reload", "AKIA1234", "eyJhbGci", "sk-the-quick-brown-fox-jumps-over-it"],
)
def test_secret_lookalikes(red: Redactor, text: str):
    assert red.redact_text(text) == (text, 0)


def test_ipv4_vs_versions(red: Redactor):
    assert red.redact_text("server 1.2.3.4 down") == ("server [IP_ADDRESS] down", 1)
    for text in ("version 1.2.3.4", "v1.2.3.4", "pip install foo==1.2.3.4", "spec 1.2.3.4.5",
                 "ip 256.1.1.1", "build 10.0.19045.3803"):
        assert red.redact_text(text) == (text, 0), text


def test_ipv6(red: Redactor):
    assert red.redact_text("peer [2001:db8::1]:443 ok") == ("peer [[IP_ADDRESS]]:443 ok", 1)
    assert red.redact_text("fe80::1ff:fe23:4567:890a") == ("[IP_ADDRESS]", 1)
    for text in ("a[::2]", "std::vector", "12:30:45", "00:1a:2b:3c:4d:5e", "a::b"):
        assert red.redact_text(text) == (text, 0), text


@pytest.mark.parametrize(
    "text",
    ["2024-01-15", "15/01/2024", "01.12.2023 14:00", "10:30:45", "$1,299.99", "Order 1234567890",
     "ISBN 978-3-16-148410-0", "ZIP 94105", "555-0199", "256 512 1024", "+5 points", "UTC+05:30"],
)
def test_phone_lookalikes(red: Redactor, text: str):
    assert red.redact_text(text) == (text, 0)


def test_placeholders_at_text_edges(red: Redactor):
    assert red.redact_text("bob@example.com") == ("[EMAIL]", 1)
    assert red.redact_text("+44 20 7946 0958") == ("[PHONE]", 1)
    assert red.redact_text("x:10.0.0.1") == ("x:[IP_ADDRESS]", 1)


def test_json_escaped_text(red: Redactor):
    raw = '{"note": "call\\nbob@example.com\\n+44 20 7946 0958"}'
    out, n = red.redact_text(raw)
    assert n == 2
    assert out == '{"note": "call\\n[EMAIL]\\n[PHONE]"}'
    json.loads(out)


# --------------------------------------------------------------------------
# Structures, counts, idempotence, configuration
# --------------------------------------------------------------------------


def _trace_record() -> dict:
    return {
        "model": "gpt-4o",
        "temperature": 0.7,
        "max_tokens": 4111111111111111,  # a number: never redacted
        "messages": [
            {"role": "system", "content": "You are helpful."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "I'm Ana, ana@example.com, +34 612 345 678."},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {
                            "name": "refund",
                            "arguments": '{"card": "4111 1111 1111 1111", "amount": 12.5, '
                            '"notify": ["ana@example.com", "ops@example.com"]}',
                        },
                    }
                ],
            },
        ],
        "response": "Refund sent to DE89 3704 0044 0532 0130 00.",
        "error": "ConnectionError: 10.0.0.5:5432 refused",
        "metadata": {"user_email": "ana@example.com", "tags": ("vip", "bob@example.com")},
        "ana@example.com": "keys are left alone",
    }


def test_nested_structure(red: Redactor):
    record = _trace_record()
    before = copy.deepcopy(record)
    out, n = red.redact(record)
    assert record == before, "input must not be mutated"
    assert n == 9
    assert out["model"] == "gpt-4o" and out["temperature"] == 0.7
    assert out["max_tokens"] == 4111111111111111
    assert out["messages"][0] is record["messages"][0]  # untouched parts are shared
    assert out["messages"][1]["content"][0]["text"] == "I'm Ana, [EMAIL], [PHONE]."
    assert out["messages"][1]["content"][1] == record["messages"][1]["content"][1]
    args = out["messages"][2]["tool_calls"][0]["function"]["arguments"]
    assert json.loads(args) == {
        "card": "[CREDIT_CARD]",
        "amount": 12.5,
        "notify": ["[EMAIL]", "[EMAIL]"],
    }
    assert out["response"] == "Refund sent to [IBAN]."
    assert out["error"] == "ConnectionError: [IP_ADDRESS]:5432 refused"
    assert out["metadata"] == {"user_email": "[EMAIL]", "tags": ("vip", "[EMAIL]")}
    assert out["ana@example.com"] == "keys are left alone"


def test_tuples_and_other_values(red: Redactor):
    from collections import namedtuple

    Pair = namedtuple("Pair", "label value")
    out, n = red.redact([Pair("mail", "bob@example.com"), ("x", 1), None, True, 3.5, b"bytes"])
    assert n == 1
    assert out == [Pair("mail", "[EMAIL]"), ("x", 1), None, True, 3.5, b"bytes"]
    assert isinstance(out[0], Pair)


def test_counts_match_placeholders(red: Redactor):
    out, n = red.redact(_trace_record())
    blob = json.dumps(out, ensure_ascii=False)
    # Placeholders inside the tool-call JSON string are escaped once more.
    assert n == sum(_placeholder_counts(blob).values())
    assert red.redact_text("a@b.co c@d.co 4111111111111111") == (
        "[EMAIL] [EMAIL] [CREDIT_CARD]",
        3,
    )
    assert red.redact_text("") == ("", 0)
    assert red.redact_text("nothing here") == ("nothing here", 0)


def test_idempotent_structure(red: Redactor):
    once, n1 = red.redact(_trace_record())
    twice, n2 = red.redact(once)
    assert n1 > 0 and n2 == 0 and twice == once


def test_json_string_untouched_when_clean(red: Redactor):
    args = '{"location":  "Boston",\n "unit": "celsius"}'
    out, n = red.redact(args)
    assert n == 0 and out is args


def test_non_json_braced_string_falls_back_to_text(red: Redactor):
    out, n = red.redact("{not json} mail bob@example.com")
    assert (out, n) == ("{not json} mail [EMAIL]", 1)


def test_scan_reports_spans(red: Redactor):
    text = "mail bob@example.com, key sk-abcdefghijklmnopqrstuvwxyz0123456789ABCD"
    findings = red.scan(text)
    assert [(f.type, text[f.start:f.end]) for f in findings] == [
        ("EMAIL", "bob@example.com"),
        ("SECRET", "sk-abcdefghijklmnopqrstuvwxyz0123456789ABCD"),
    ]


def test_type_subset():
    only_email = Redactor(types={"EMAIL"})
    assert only_email.redact_text("bob@example.com 4111111111111111") == (
        "[EMAIL] 4111111111111111",
        1,
    )
    assert Redactor(types=()).redact_text("bob@example.com") == ("bob@example.com", 0)
    with pytest.raises(ValueError):
        Redactor(types={"NAME"})


@pytest.mark.parametrize(
    ("value", "enabled"),
    [("true", True), ("TRUE", True), ("1", True), ("yes", True), ("on", True),
     ("false", False), ("0", False), ("", False), ("no", False)],
)
def test_redaction_enabled(value: str, enabled: bool):
    assert redaction_enabled({ENV_VAR: value}) is enabled
    assert redaction_enabled({}) is False


@pytest.mark.parametrize(
    "text",
    ["1:" * 20000, "+1 " * 50000, "a@" * 50000, "x@" + "a" * 200000, "sk-" + "a" * 200000,
     "-----BEGIN RSA PRIVATE KEY-----\n" * 3000, "1 " * 100000, "eyJ" + "a" * 200000,
     "a." * 100000 + "@x.com", "(0" * 50000, "Bearer " + "a1" * 100000,
     # every position a candidate that its validator rejects: linear, but
     # each rejection costs a few microseconds of Python
     "DE89 " * 10000, "4111 1111 " * 10000],
)
def test_no_catastrophic_backtracking(red: Redactor, text: str):
    t0 = time.perf_counter()
    red.redact_text(text)
    assert time.perf_counter() - t0 < 2.0
