"""``capture_trace_context``: the active OpenTelemetry span's ids on each message's ``context``.

With them, an analytics event can be joined to the trace of the request that made it. The ids
are read on the thread that makes the call or logs the event (the span is a ``contextvars``
value there), as ``context.traceId`` (32 hex digits) and ``context.spanId`` (16), under
whatever the caller set. OpenTelemetry is never imported here: an application that traces has
imported ``opentelemetry.trace`` already, and one that does not pays one dictionary lookup.
"""

from __future__ import annotations

import sys
from typing import Any, Optional

__all__ = ["trace_context"]

# The last span context seen and its ids: a request logs several events in one span, and
# formatting 128-bit ids costs more than everything else here. (A tuple: replaced whole, so
# threads never see one half of another's.)
_last: tuple[Any, Optional[dict[str, str]]] = (None, None)


def trace_context() -> Optional[dict[str, str]]:
    """``{"traceId": ..., "spanId": ...}`` of the span active here, or ``None`` when there
    is none (or OpenTelemetry is not in use). Never raises. The dict may be shared between
    calls in the same span: read it, never change it."""
    global _last
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    try:
        span = trace.get_current_span().get_span_context()
        seen, ids = _last
        if span is seen:
            return ids
        ids = None
        if span.is_valid:
            ids = {"traceId": format(span.trace_id, "032x"), "spanId": format(span.span_id, "016x")}
        _last = (span, ids)
        return ids
    except Exception:  # a broken tracer must not cost the event
        return None
