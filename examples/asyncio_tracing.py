"""asyncio code and OpenTelemetry traces: ``aflush``/``aclose``, and ``capture_trace_context``.

``flush()`` and ``close()`` wait on the network; awaited from a coroutine they would stall every
other task of the event loop. ``await client.aflush()`` and ``await client.aclose()`` (or
``async with``) wait in a worker thread instead. With ``capture_trace_context=True`` each
message made inside an OpenTelemetry span carries its ``context.traceId`` and
``context.spanId``, so an analytics event can be joined to the trace of its request.

Try it without a write key or network:

    htevents-logging collect --port 8787                                   # one terminal
    HT_WRITE_KEY=dev HT_HOST=http://127.0.0.1:8787 python examples/asyncio_tracing.py

Requires ``pip install opentelemetry-sdk``.
"""

from __future__ import annotations

import asyncio

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from htevents_logging import HtEvents

trace.set_tracer_provider(TracerProvider())
tracer = trace.get_tracer("shop")


async def checkout(events: HtEvents, user: str, total: float) -> None:
    """One request: its span's ids go on the event's context."""
    with tracer.start_as_current_span("checkout"):
        await asyncio.sleep(0)  # the request's own work
        events.track(user_id=user, event="Order completed", properties={"total": total})


async def main() -> None:
    async with HtEvents(capture_trace_context=True) as events:  # aclose() at the end
        await asyncio.gather(checkout(events, "123", 29.99), checkout(events, "456", 5.0))
        delivered = await events.aflush(timeout=5)  # the loop keeps serving meanwhile
        print("delivered:", delivered, events.stats()["sent"])


if __name__ == "__main__":
    asyncio.run(main())
