"""``TraceRecord``: the trace schema, defined once.

Every column of the ClickHouse table is a field of the dataclass below, and the field carries its
ClickHouse type and how Python values are encoded into it. The DDL (:data:`COLUMNS`,
:func:`column_definitions`), the insert row (:meth:`TraceRecord.to_row`) and the read path
(:meth:`TraceRecord.from_row`) are all derived from those fields, so they cannot drift apart.

A trace must never be lost because one of its fields is odd: a provider that sends a lone surrogate,
a NaN cost, bytes where text belongs, a 5 MB response or a metadata value ``json`` cannot encode.
:meth:`TraceRecord.to_row` therefore never raises: each offending field is replaced (truncated with a
marker, ``"<unencodable: TypeName>"``, the field default) and the fix is listed in the
``encoding_errors`` column, so the row is stored and the damage is visible.

Time convention: timestamps are stored in UTC. An aware ``datetime`` is converted; a naive one is
taken as *local* time (Python's own convention, and what litellm hands its callbacks); a number is
taken as Unix seconds. Read back, timestamps are aware UTC datetimes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from enum import Enum
from types import MappingProxyType
from typing import Any, Callable

DEFAULT_MAX_TEXT_BYTES = 1024 * 1024
"""Cap per text/JSON field. One trace row stays a few MB at worst; content beyond is truncated."""

# Request fields kept out of ``request_params``: stored in their own columns, or not request settings.
PARAMS_NOT_RECORDED = frozenset({"tools", "stream", "stream_options", "metadata", "user", "max_retries", "num_retries"})

LABEL_MAX_BYTES = 1024
"""Cap for LowCardinality labels (model, alias, ...): a longer value is a bug upstream, not a label."""

MAX_PROBLEMS_PER_FIELD = 5
TRACE_STATUSES = ("ok", "cancelled", "error")  # last = what an unknown status is stored as
TRACE_SOURCES = ("litellm_proxy", "gateway")
_TEXT_CODEC = "CODEC(ZSTD(3))"
_OK: Sequence[str] = ()  # "no problems" (shared and immutable)
_UINT_MAX: Mapping[str, int] = MappingProxyType({"UInt16": 0xFFFF, "UInt32": 0xFFFF_FFFF})
_SURROGATES = re.compile("[\ud800-\udfff]")
_MIN_TIME = datetime(1900, 1, 1, tzinfo=timezone.utc)  # DateTime64 range
_MAX_TIME = datetime(2299, 12, 31, tzinfo=timezone.utc)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)
MIN_SECONDS = (_MIN_TIME - _EPOCH).total_seconds()
MAX_SECONDS = (_MAX_TIME - _EPOCH).total_seconds()


def new_trace_id() -> str:
    """A uuid4 as 32 hex digits: what the gateway returns in ``x-opentracy-trace-id``."""
    return uuid.uuid4().hex


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _column(clickhouse_type: str, kind: str, *, default: Any = dataclasses.MISSING,
            factory: Callable[[], Any] | Any = dataclasses.MISSING, choices: tuple[str, ...] = ()) -> Any:
    """A dataclass field that also declares its ClickHouse column (type + encoding kind).

    ``choices``: the allowed values of a label; an unknown value is stored as the *last* choice.
    """
    metadata = {"clickhouse_type": clickhouse_type, "kind": kind, "choices": choices}
    return field(default=default, default_factory=factory, metadata=metadata)


def _label(default: str = "", choices: tuple[str, ...] = ()) -> Any:
    return _column("LowCardinality(String)", "label", default=default, choices=choices)


def _text(default: str = "") -> Any:
    return _column("String", "text", default=default)


def _json(factory: Callable[[], Any]) -> Any:
    # Plain String, not the JSON type: ClickHouse 23.8 servers have no stable JSON type.
    return _column("String", "json", factory=factory)


def _time() -> Any:
    return _column("DateTime64(6, 'UTC')", "time", factory=utc_now)


@dataclass(slots=True)
class TraceRecord:
    """One LLM call as stored in ``opentracy_traces``; field order is column order.

    JSON fields (``attempts``, ``messages``, ``tools``, ``tool_calls``, ``request_params``,
    ``metadata``) hold Python values (lists, dicts, pydantic models are dumped); they are serialised
    to JSON text on the way in and parsed on the way out.
    """

    trace_id: str = _column("String", "id", factory=new_trace_id)
    start_time: datetime = _time()
    end_time: datetime = _time()
    alias: str = _label()
    requested_model: str = _label()
    selected_model: str = _label()
    provider: str = _label()
    status: str = _label("ok", TRACE_STATUSES)
    error_type: str = _label()
    error_message: str = _text()
    http_status: int = _column("UInt16", "uint", default=200)
    stream: bool = _column("Bool", "bool", default=False)
    ttft_ms: float | None = _column("Nullable(Float64)", "nullable_float", default=None)
    latency_ms: float = _column("Float64", "float", default=0.0)
    prompt_tokens: int = _column("UInt32", "uint", default=0)
    completion_tokens: int = _column("UInt32", "uint", default=0)
    total_tokens: int = _column("UInt32", "uint", default=0)
    cost_usd: float = _column("Float64", "float", default=0.0)
    fallback_used: bool = _column("Bool", "bool", default=False)
    attempts: Any = _json(list)  # [{"model", "status", "error", "latency_ms"}, ...]
    messages: Any = _json(list)
    response: str = _text()
    tools: Any = _json(list)
    tool_calls: Any = _json(list)
    finish_reason: str = _label()
    request_params: Any = _json(dict)
    api_key_name: str = _label()  # the engine key's name, never the key
    user: str = _text()  # the OpenAI `user` field
    metadata: Any = _json(dict)
    redacted: bool = _column("Bool", "bool", default=False)
    content_stored: bool = _column("Bool", "bool", default=True)
    source: str = _label("gateway", TRACE_SOURCES)
    version: str = _label()
    shadow_of: str = _text()  # reserved: trace_id of the call this one shadows
    encoding_errors: list[str] = _column("Array(String)", "text_list", factory=list)

    def to_row(self, max_text_bytes: int = DEFAULT_MAX_TEXT_BYTES) -> list[Any]:
        """Values in column order, each one encodable (times as integer microseconds since the epoch).
        Never raises; fixes go to encoding_errors.

        Values of the expected type and size pass a quick check per column kind; only the others go
        through their column's encoder (see :func:`_compile_encode_fields`).
        """
        problems: list[str] = []
        row = _ENCODE_FIELDS(self, max_text_bytes, problems)
        if self.encoding_errors:  # fixes noted before (by whoever built the record)
            previous, _ = ENCODING_ERRORS.encode(self.encoding_errors, max_text_bytes)
            problems = previous + problems
        row.append(problems)
        return row

    @classmethod
    def from_row(cls, row: Sequence[Any] | Mapping[str, Any]) -> TraceRecord:
        """Build a record from a stored row (column order) or a mapping of column names."""
        if not isinstance(row, Mapping):
            row = dict(zip(COLUMN_NAMES, row))
        return cls(**decode_columns(row))

    def sanitize(self, max_text_bytes: int = DEFAULT_MAX_TEXT_BYTES) -> TraceRecord:
        """The record exactly as it will be stored (fixes applied and listed in encoding_errors)."""
        return TraceRecord.from_row(self.to_row(max_text_bytes))

    def to_dict(self) -> dict[str, Any]:
        """Field values by column name (Python values, not encoded)."""
        return {name: getattr(self, name) for name in COLUMN_NAMES}


@dataclass(frozen=True, slots=True)
class Column:
    """One table column: name, ClickHouse type, and how a Python value is encoded into it."""

    name: str
    clickhouse_type: str
    kind: str
    choices: tuple[str, ...]
    default: Any
    default_factory: Any
    encoder: Callable[[Column, Any, int], tuple[Any, Sequence[str]]]

    @property
    def ddl(self) -> str:
        codec = f" {_TEXT_CODEC}" if self.kind in ("text", "json") else ""
        return f"`{self.name}` {self.clickhouse_type}{codec}"

    def default_value(self) -> Any:
        value = self.default if self.default_factory is dataclasses.MISSING else self.default_factory()
        return self.encoder(self, value, DEFAULT_MAX_TEXT_BYTES)[0]

    def encode(self, value: Any, max_text_bytes: int = DEFAULT_MAX_TEXT_BYTES) -> tuple[Any, Sequence[str]]:
        """(encoded value, problems found); problems empty when the value was stored as given."""
        return self.encoder(self, value, max_text_bytes)

    def decode(self, value: Any) -> Any:
        if self.kind == "json" and isinstance(value, str):
            try:
                return json.loads(value) if value else None
            except ValueError:
                return value
        if self.kind == "time" and type(value) is int:  # an encoded row's microseconds
            return _EPOCH + value * _MICROSECOND
        if self.kind == "time" and isinstance(value, datetime):
            return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
        if self.kind == "time" and isinstance(value, str):  # spool rows carry ISO text
            return self.decode(datetime.fromisoformat(value))
        return value


def _columns() -> tuple[Column, ...]:
    return tuple(
        Column(f.name, f.metadata["clickhouse_type"], f.metadata["kind"], f.metadata["choices"], f.default,
               f.default_factory, _ENCODERS[f.metadata["kind"]])
        for f in fields(TraceRecord)
    )


def column_definitions() -> str:
    """The column list of ``CREATE TABLE``, derived from :class:`TraceRecord`."""
    return ",\n    ".join(c.ddl for c in COLUMNS)


def decode_columns(values: Mapping[str, Any]) -> dict[str, Any]:
    """Stored values (by column name) to Python values; unknown names are ignored."""
    return {name: COLUMNS_BY_NAME[name].decode(v) for name, v in values.items() if name in COLUMNS_BY_NAME}


def row_to_jsonable(row: Sequence[Any]) -> dict[str, Any]:
    """An encoded row as a JSON-safe dict keyed by column (for the disk spool).

    Keyed by name, not position, so a spool written before a schema migration replays after it.
    """
    return dict(zip(COLUMN_NAMES, row))


def row_from_jsonable(data: Mapping[str, Any]) -> list[Any]:
    """Inverse of :func:`row_to_jsonable`; columns the dict lacks get their defaults."""
    row = []
    for column in COLUMNS:
        if column.name not in data:
            row.append(column.default_value())
        elif column.kind == "time":  # microseconds; ISO text in spools of 0.1.0 builds
            value = data[column.name]
            row.append(value if type(value) is int else _micros(column.decode(value)))
        else:
            row.append(data[column.name])
    return row


# --- encoders: (column, value, max_text_bytes) -> (encoded value, problems) -----------------------


def _capped(problems: list[str]) -> list[str]:
    if len(problems) <= MAX_PROBLEMS_PER_FIELD:
        return problems
    return problems[:MAX_PROBLEMS_PER_FIELD] + [f"and {len(problems) - MAX_PROBLEMS_PER_FIELD} more"]


def _clean_unicode(text: str) -> tuple[str, Sequence[str]]:
    """Lone surrogates (from providers, or ``surrogateescape`` decoding) cannot be UTF-8: → U+FFFD."""
    try:
        text.encode("utf-8")
        return text, []
    except UnicodeEncodeError:
        return _SURROGATES.sub("\ufffd", text), ["invalid unicode (lone surrogates) replaced with U+FFFD"]


def _truncate(text: str, limit: int) -> tuple[str, Sequence[str]]:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text, []
    marker = f"…[truncated by opentracy: {len(data)} bytes]"
    keep = max(0, limit - len(marker.encode("utf-8")))
    return data[:keep].decode("utf-8", "ignore") + marker, [f"truncated from {len(data)} to {limit} bytes"]


def _clean_text(text: str, limit: int) -> tuple[str, Sequence[str]]:
    """Valid UTF-8 of at most ``limit`` bytes (lone surrogates → U+FFFD, excess → marker)."""
    text, problems = _clean_unicode(text)
    text, more = _truncate(text, limit)
    return text, problems + more


def _to_text(value: Any) -> tuple[str, Sequence[str]]:
    if isinstance(value, str):
        return value, []
    if value is None:
        return "", []
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace"), [f"{type(value).__name__} decoded as UTF-8"]
    if isinstance(value, (int, float, Enum)):
        return str(value.value if isinstance(value, Enum) else value), [f"{type(value).__name__} converted to str"]
    return f"<unencodable: {type(value).__name__}>", [f"unencodable {type(value).__name__}"]


def _encode_text(column: Column, value: Any, limit: int) -> tuple[str, Sequence[str]]:
    if type(value) is str and value.isascii() and len(value) <= limit:
        return value, _OK  # the common case, without encoding to UTF-8 to look
    text, problems = _to_text(value)
    text, more = _clean_text(text, limit)
    return text, problems + more


def _encode_id(column: Column, value: Any, limit: int) -> tuple[str, Sequence[str]]:
    text, problems = _encode_text(column, value, LABEL_MAX_BYTES)
    problems = list(problems)
    if not text:
        return new_trace_id(), ["missing; generated a new id"]
    return text, problems


def _encode_label(column: Column, value: Any, limit: int) -> tuple[str, Sequence[str]]:
    text, problems = _encode_text(column, value, min(limit, LABEL_MAX_BYTES))
    if not column.choices or text in column.choices:
        return text, problems
    problems = list(problems)
    problems.append(f"unknown value {text[:64]!r} replaced with {column.choices[-1]!r}")
    return column.choices[-1], problems


def _encode_text_list(column: Column, value: Any, limit: int) -> tuple[list[str], Sequence[str]]:
    items = value if isinstance(value, (list, tuple)) else ([] if value is None else [value])
    return [_encode_text(column, item, limit)[0] for item in items], []


# One encoder for every JSON column (json.dumps with options builds a new one per call), and its C
# core made once as well: JSONEncoder.encode builds that per call too, ~2 us of the ~5 us it takes
# for a chat's messages. Without circular-reference markers a cycle ends in RecursionError, which
# _encode_json handles like any unencodable value. Pure-Python json (no C core): plain encode().
_JSON = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_JSON_CORE = None if json.encoder.c_make_encoder is None else json.encoder.c_make_encoder(
    None, _JSON.default, json.encoder.encode_basestring, None, ":", ",", False, False, False)


def dump_json(value: Any) -> str:
    """JSON text as the JSON columns store it (compact, not ASCII-escaped); raises what ``json`` raises."""
    return _JSON.encode(value) if _JSON_CORE is None else "".join(_JSON_CORE(value, 0))


def _encode_json(column: Column, value: Any, limit: int) -> tuple[str, Sequence[str]]:
    if type(value) in (list, dict) and not value:
        return ("[]" if type(value) is list else "{}"), _OK
    problems: list[str] = []
    try:
        text = dump_json(value)
        if text.isascii() and len(text) <= limit:
            return text, _OK
    except (TypeError, ValueError, RecursionError):
        text = dump_json(_json_safe(value, "$", problems, set(), 0))
    text, more = _clean_unicode(text)
    problems += more
    size = len(text.encode("utf-8"))
    if size > limit:
        # Truncated JSON is not JSON: keep a valid document that says what happened, with the head.
        keep = max(0, limit - 200)
        while True:
            head = _truncate(text, keep)[0] if keep > 0 else ""
            wrapped = json.dumps({"_opentracy_truncated": True, "bytes": size, "head": head}, ensure_ascii=False)
            if len(wrapped.encode("utf-8")) <= limit or not head:
                break
            keep = keep * 3 // 4 if keep > 512 else 0  # escaping grew the head: shrink until it fits
        text = wrapped
        problems.append(f"truncated from {size} to {limit} bytes (kept as {{_opentracy_truncated, head}})")
    return text, problems


def json_safe(value: Any, problems: list[str]) -> Any:
    """A copy of ``value`` made of JSON's types only (tuples become lists); each fix is added to ``problems``."""
    return _json_safe(value, "$", problems, set(), 0)


def _json_safe(value: Any, path: str, problems: list[str], seen: set[int], depth: int) -> Any:
    """A copy of ``value`` that ``json.dumps(allow_nan=False)`` accepts; every fix is noted."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        problems.append(f"{path}: {value} replaced with null")
        return None
    if depth > 64:
        problems.append(f"{path}: nested deeper than 64 levels")
        return "<too deep>"
    if isinstance(value, (dict, list, tuple, set, frozenset)) or hasattr(value, "model_dump"):
        if id(value) in seen:
            problems.append(f"{path}: circular reference")
            return "<circular>"
        seen = seen | {id(value)}
    if isinstance(value, Mapping):
        return {_json_key(k, path, problems): _json_safe(v, f"{path}.{k}", problems, seen, depth + 1)
                for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        if isinstance(value, (set, frozenset)):
            problems.append(f"{path}: {type(value).__name__} stored as list")
        return [_json_safe(v, f"{path}[{i}]", problems, seen, depth + 1) for i, v in enumerate(value)]
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, (uuid.UUID, Decimal)):
        return _json_safe(float(value) if isinstance(value, Decimal) else str(value), path, problems, seen, depth)
    if isinstance(value, Enum):
        return _json_safe(value.value, path, problems, seen, depth + 1)
    if isinstance(value, (bytes, bytearray)):
        problems.append(f"{path}: bytes decoded as UTF-8")
        return bytes(value).decode("utf-8", "replace")
    dumped = _dump_object(value)
    if dumped is not None:
        return _json_safe(dumped, path, problems, seen, depth + 1)
    problems.append(f"{path}: unencodable {type(value).__name__}")
    return f"<unencodable: {type(value).__name__}>"


def _dump_object(value: Any) -> Any:
    """pydantic models (litellm's Message, ModelResponse) and dataclasses as plain data, else None."""
    try:
        if hasattr(value, "model_dump") and callable(value.model_dump):
            return value.model_dump()
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: getattr(value, f.name) for f in fields(value)}
    except Exception:
        return None
    return None


def _json_key(key: Any, path: str, problems: list[str]) -> str | int | float | bool | None:
    if key is None or isinstance(key, (str, int, bool)) or (isinstance(key, float) and math.isfinite(key)):
        return key
    problems.append(f"{path}: key of type {type(key).__name__} stored as text")
    return _to_text(key)[0] if isinstance(key, (bytes, float)) else f"<unencodable: {type(key).__name__}>"


def _encode_float(column: Column, value: Any, limit: int) -> tuple[float | None, Sequence[str]]:
    if type(value) is float and math.isfinite(value):
        return value, _OK
    fallback = None if column.kind == "nullable_float" else column.default
    if value is None:
        return fallback, []
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            return fallback, [f"unencodable {type(value).__name__} replaced with {fallback}"]
        problem = [f"{type(value).__name__} converted to float"] if not isinstance(value, Decimal) else []
    else:
        number, problem = float(value), []
    if not math.isfinite(number):
        return fallback, [f"{number} replaced with {fallback}"]
    return number, problem


def _encode_uint(column: Column, value: Any, limit: int) -> tuple[int, Sequence[str]]:
    top = _UINT_MAX[column.clickhouse_type]
    if type(value) is int and 0 <= value <= top:
        return value, _OK
    if value is None:
        return column.default, []
    problems = []
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        try:
            number = int(float(value)) if not isinstance(value, (int, Decimal)) else int(value)
        except (TypeError, ValueError, OverflowError):
            return column.default, [f"unencodable {type(value).__name__} replaced with {column.default}"]
        if number != value:
            problems.append(f"{type(value).__name__} {str(value)[:32]} converted to {number}")
    if not 0 <= number <= top:
        problems.append(f"{number} out of range, clamped")
        number = min(max(number, 0), top)
    return number, problems


def _encode_bool(column: Column, value: Any, limit: int) -> tuple[bool, Sequence[str]]:
    if type(value) is bool:
        return value, _OK
    if value is None:
        return column.default, _OK
    if isinstance(value, int) and value in (0, 1):
        return bool(value), []
    return column.default, [f"{type(value).__name__} {str(value)[:32]!r} is not a bool; stored {column.default}"]


def _micros(moment: datetime) -> int:
    """An aware datetime as the encoded row keeps it: integer microseconds since the Unix epoch (what
    DateTime64(6) stores, so the insert and the journal take it as it is)."""
    return (moment - _EPOCH) // _MICROSECOND


def _encode_time(column: Column, value: Any, limit: int) -> tuple[int, Sequence[str]]:
    """Datetimes (naive = local time, as in Python and litellm) or Unix seconds → microseconds."""
    if type(value) is datetime and value.tzinfo is timezone.utc and _MIN_TIME <= value <= _MAX_TIME:
        return _micros(value), _OK
    try:
        if isinstance(value, datetime):
            moment = value.astimezone(timezone.utc)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            moment = datetime.fromtimestamp(value, timezone.utc)
        else:
            return _micros(utc_now()), [f"{type(value).__name__} is not a time; stored the write time"]
    except (OverflowError, OSError, ValueError):
        return _micros(utc_now()), [f"{str(value)[:40]} out of range; stored the write time"]
    if not _MIN_TIME <= moment <= _MAX_TIME:
        return _micros(utc_now()), [f"{moment.isoformat()} out of range; stored the write time"]
    return _micros(moment), []


_ENCODERS: Mapping[str, Callable[[Column, Any, int], tuple[Any, Sequence[str]]]] = MappingProxyType({
    "text": _encode_text,
    "label": _encode_label,
    "json": _encode_json,
    "text_list": _encode_text_list,
    "float": _encode_float,
    "nullable_float": _encode_float,
    "uint": _encode_uint,
    "bool": _encode_bool,
    "time": _encode_time,
    "id": _encode_id,
})

COLUMNS: tuple[Column, ...] = _columns()
COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in COLUMNS)
COLUMNS_BY_NAME: Mapping[str, Column] = MappingProxyType({c.name: c for c in COLUMNS})
ENCODING_ERRORS = COLUMNS[-1]
assert ENCODING_ERRORS.name == "encoding_errors"

# to_row's quick checks, by column kind: True when the value ``v`` is stored as it is (no encoder
# needed), or as _QUICK_STORE says (times: a UTC datetime, or Unix seconds as a float). JSON columns
# are stored quickly when empty; others go through the encoder, which dumps them.
# ``{choices}`` and ``{uint_max}`` are filled in per column.
_QUICK_CHECK: Mapping[str, str] = MappingProxyType({
    "text": "type(v) is str and v.isascii() and len(v) <= limit",
    "label": "type(v) is str and v.isascii() and len(v) <= label_limit{choices}",
    "id": "type(v) is str and v.isascii() and 0 < len(v) <= LABEL_MAX_BYTES",
    "float": "type(v) is float and isfinite(v)",
    "nullable_float": "v is None or (type(v) is float and isfinite(v))",
    "uint": "type(v) is int and 0 <= v <= {uint_max}",
    "bool": "type(v) is bool",
    "time": "type(v) is datetime and v.tzinfo is utc and MIN_TIME <= v <= MAX_TIME",
    "seconds": "type(v) is float and MIN_SECONDS <= v <= MAX_SECONDS",
    "json": "type(v) in (list, dict) and not v",
})
_QUICK_STORE: Mapping[str, str] = MappingProxyType({"time": "micros(v)", "seconds": "round(v * 1000000)",
                                                    "json": '("[]" if type(v) is list else "{}")'})


def _encode_field(column: Column, value: Any, limit: int, problems: list[str]) -> Any:
    """The column's encoder for a value that failed its quick check; what it fixed goes to ``problems``."""
    try:
        value, found = column.encoder(column, value, limit)
    except Exception as exc:  # a bug in an encoder must not cost the trace
        value, found = column.default_value(), [f"encoder failed: {type(exc).__name__}"]
    if found:
        problems.extend(f"{column.name}: {p}" for p in _capped(list(found)))
    return value


def _compile_encode_fields() -> Callable[[TraceRecord, int, list[str]], list[Any]]:
    """``(record, limit, problems) -> row`` without encoding_errors: straight-line code, one quick
    check inline per column, written out from :data:`_QUICK_CHECK` and :data:`COLUMNS`.

    Why generated (as ``dataclasses`` generates ``__init__``): the trace writer encodes every record
    of every request, and a loop calling one check function per column cost ~27 us for a chat record
    (16.5 us for an empty one) where the same checks inline cost ~19 us (8 us); the rest is JSON.
    """
    lines = ["def encode_fields(record, limit, problems):",
             "    label_limit = min(limit, LABEL_MAX_BYTES)",
             "    row = []",
             "    append = row.append"]
    scope: dict[str, Any] = {"LABEL_MAX_BYTES": LABEL_MAX_BYTES, "isfinite": math.isfinite, "datetime": datetime,
                             "utc": timezone.utc, "MIN_TIME": _MIN_TIME, "MAX_TIME": _MAX_TIME,
                             "encode_field": _encode_field, "COLUMNS": COLUMNS, "micros": _micros,
                             "MIN_SECONDS": MIN_SECONDS, "MAX_SECONDS": MAX_SECONDS}
    for i, column in enumerate(COLUMNS[:-1]):
        lines.append(f"    v = record.{column.name}")
        quick = [column.kind, "seconds"] if column.kind == "time" else [column.kind]
        stored = " else ".join(
            f"{_QUICK_STORE.get(kind, 'v')} if " + _QUICK_CHECK[kind].format(
                choices=f" and v in {column.choices!r}" if column.choices else "",
                uint_max=_UINT_MAX.get(column.clickhouse_type))
            for kind in quick)
        lines.append(f"    append({stored} else encode_field(COLUMNS[{i}], v, limit, problems))")
    lines.append("    return row")
    exec("\n".join(lines), scope)  # noqa: S102 - the source is built above from our own column table
    return scope["encode_fields"]


_ENCODE_FIELDS = _compile_encode_fields()
