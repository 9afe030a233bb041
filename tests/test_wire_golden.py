"""Our own request, byte for byte, against a golden copy (captures/htevents-logging-golden.json).

The golden copy was made by the package before the transport was redesigned; the same calls
must still put the same bytes on the wire (``sentAt`` aside, which is the time of sending).
Regenerate it on purpose only, when the wire form is meant to change::

    python tests/test_wire_golden.py > tests/captures/htevents-logging-golden.json
"""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

from htevents_logging import HtEvents, HtEventsHandler
from htevents_logging.collector import Collector

GOLDEN = Path(__file__).parent / "captures" / "htevents-logging-golden.json"
KEY = "golden-write-key"
STAMP = "2024-01-02T03:04:05.678Z"


def send_the_scenario() -> dict[str, Any]:
    """Each call once, in both spellings, through the client and the handler; fixed ids and
    times, so the body is the same every run."""
    with Collector(write_key=KEY) as collector:
        client = HtEvents(KEY, host=collector.url, flush_interval=60)
        client.identify(
            user_id="user-1",
            traits={"email": "a@example.com", "plan": "pro"},
            message_id="m-1",
            timestamp=STAMP,
        )
        client.track(
            {
                "userId": "user-1",
                "event": "Order Completed",
                "properties": {"revenue": 12.5, "n": 1, "tags": ("a", "b"), "nan": float("nan")},
            },
            context={"ip": "203.0.113.5"},
            message_id="m-2",
            timestamp="2024-01-02T03:04:05.678901+00:00",
        )
        client.page(
            anonymous_id="anon-1",
            name="Intro",
            category="Docs",
            properties={"url": "https://example.com/docs", "ü": "é"},
            message_id="m-3",
            timestamp=STAMP,
        )
        client.screen(user_id=42, name="Home", message_id="m-4", timestamp=STAMP)
        client.group(
            user_id="user-1",
            group_id="group-1",
            traits={"name": "Acme"},
            timestamp="2024-01-02T05:04:05.678+02:00",
            message_id="m-5",
        )
        client.alias(
            {"userId": "user-1", "previousId": "anon-1"},
            integrations={"All": False, "Mixpanel": True},
            message_id="m-6",
            timestamp=STAMP,
        )
        handler = HtEventsHandler(client=client)
        logger = logging.getLogger("golden")
        logger.addHandler(handler)
        logger.propagate = False
        try:
            logger.warning(
                "Checkout %s",
                "started",
                extra={"htevent": {"userId": "user-1", "messageId": "m-7", "timestamp": STAMP}},
            )
        finally:
            logger.removeHandler(handler)
        assert client.close(5)
        [request] = collector.requests
        headers = {name: value for name, value in request.headers if name != "Host"}
        body = re.sub(rb'"sentAt":"[^"]*"', b'"sentAt":"SENT_AT"', request.body)
        return {"headers": headers, "body": body.decode("utf-8")}


def test_the_same_calls_put_the_same_bytes_on_the_wire():
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    ours = send_the_scenario()
    assert ours["body"] == golden["body"]
    assert ours["headers"] == golden["headers"]


if __name__ == "__main__":
    sys.stdout.write(json.dumps(send_the_scenario(), indent=1, ensure_ascii=False) + "\n")
