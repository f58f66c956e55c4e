"""AWS event stream framing (application/vnd.amazon.eventstream), as Bedrock's converse-stream sends it.

One message = prelude (total length u32, headers length u32, CRC32 of those 8 bytes) + headers +
payload + CRC32 of everything before it; all integers big-endian. A header = name length u8, name,
value type u8 (7 = string), value length u16, value. `decode` is the inverse, for tests.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator, Mapping

STRING = 7


def crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def encode_headers(headers: Mapping[str, str]) -> bytes:
    out = b""
    for name, value in headers.items():
        raw_name, raw_value = name.encode(), value.encode()
        out += struct.pack(">B", len(raw_name)) + raw_name + struct.pack(">BH", STRING, len(raw_value)) + raw_value
    return out


def encode(headers: Mapping[str, str], payload: bytes) -> bytes:
    head = encode_headers(headers)
    total = 12 + len(head) + len(payload) + 4
    prelude = struct.pack(">II", total, len(head))
    prelude += struct.pack(">I", crc32(prelude))
    body = prelude + head + payload
    return body + struct.pack(">I", crc32(body))


def event(event_type: str, payload: bytes) -> bytes:
    """A Bedrock stream event (`:message-type` event, JSON payload)."""
    headers = {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"}
    return encode(headers, payload)


def exception(exception_type: str, payload: bytes) -> bytes:
    """An in-stream error (`:message-type` exception), e.g. throttlingException."""
    headers = {":exception-type": exception_type, ":content-type": "application/json", ":message-type": "exception"}
    return encode(headers, payload)


def decode(data: bytes) -> Iterator[tuple[dict[str, str], bytes]]:
    """Split a byte string of messages into (headers, payload), checking lengths and both CRCs."""
    offset = 0
    while offset < len(data):
        total, head_len, prelude_crc = struct.unpack_from(">III", data, offset)
        if crc32(data[offset : offset + 8]) != prelude_crc:
            raise ValueError(f"prelude CRC mismatch at {offset}")
        message = data[offset : offset + total]
        if len(message) != total or crc32(message[:-4]) != struct.unpack(">I", message[-4:])[0]:
            raise ValueError(f"message CRC or length mismatch at {offset}")
        headers: dict[str, str] = {}
        pos = 12
        while pos < 12 + head_len:
            (name_len,) = struct.unpack_from(">B", message, pos)
            name = message[pos + 1 : pos + 1 + name_len].decode()
            pos += 1 + name_len
            kind, value_len = struct.unpack_from(">BH", message, pos)
            if kind != STRING:
                raise ValueError(f"header {name}: only string values are emulated (type {kind})")
            headers[name] = message[pos + 3 : pos + 3 + value_len].decode()
            pos += 3 + value_len
        yield headers, message[12 + head_len : -4]
        offset += total
