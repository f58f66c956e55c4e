"""Tracing: the trace schema (:class:`TraceRecord`) and the background writer that stores it."""

from opentracy.tracing.record import TraceRecord, new_trace_id
from opentracy.tracing.writer import TraceWriter

__all__ = ["TraceRecord", "TraceWriter", "new_trace_id"]
