"""Our request, field by field, against one Hightouch's own Node SDK sent (captures/)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from htevents_logging import HtEvents

NODE = json.loads((Path(__file__).parent / "captures" / "ht-node-basic-000.json").read_text())
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
# What only the Node SDK adds (its runtime metadata) or only we add.
NODE_ONLY = {"_metadata"}


def send_the_capture_scenario(collector, write_key) -> dict:
    client = HtEvents(write_key, host=collector.url, flush_interval=60)
    client.identify(user_id="user-1", traits={"email": "a@example.com", "plan": "pro"})
    client.track(
        {"userId": "user-1", "event": "Order Completed", "properties": {"revenue": 12.5, "n": 1}},
        context={"ip": "203.0.113.5"},
    )
    client.page(
        anonymous_id="anon-1",
        name="Intro",
        category="Docs",
        properties={"url": "https://example.com/docs"},
    )
    client.screen(user_id="user-1", name="Home", properties={"foo": "bar"})
    client.group(
        user_id="user-1",
        group_id="group-1",
        traits={"name": "Acme"},
        timestamp="2024-01-02T03:04:05.678Z",
    )
    client.alias(
        {"userId": "user-1", "previousId": "anon-1"},
        integrations={"All": False, "Mixpanel": True},
    )
    assert client.close(5)
    [request] = collector.requests
    return {"request": request, "body": json.loads(request.body)}


def test_headers_match_the_node_sdk(collector, write_key):
    ours = send_the_capture_scenario(collector, write_key)["request"]
    node = {name.lower(): value for name, value in NODE["headers"]}
    assert ours.header("Content-Type") == node["content-type"]
    assert ours.header("Authorization") == node["authorization"]
    assert ours.method == NODE["method"] and ours.path == NODE["path"]


def test_envelope_matches_and_adds_the_write_key_field(collector, write_key):
    body = send_the_capture_scenario(collector, write_key)["body"]
    assert set(body) == set(NODE["body_json"]) | {"writeKey"}
    assert STAMP.match(body["sentAt"]) and STAMP.match(NODE["body_json"]["sentAt"])
    assert body["writeKey"] == write_key


def test_every_message_matches_field_by_field(collector, write_key):
    ours = send_the_capture_scenario(collector, write_key)["body"]["batch"]
    theirs = NODE["body_json"]["batch"]
    assert len(ours) == len(theirs) == 6
    for mine, node in zip(ours, theirs):
        assert set(mine) == set(node) - NODE_ONLY, mine["type"]
        for field in set(node) - NODE_ONLY - {"messageId", "timestamp", "context"}:
            assert mine[field] == node[field], (mine["type"], field)
        assert STAMP.match(mine["timestamp"])
        assert mine["context"]["library"] == {"name": "htevents-logging", "version": "0.1.0"}
        node_context = {k: v for k, v in node["context"].items() if k != "library"}
        assert {k: v for k, v in mine["context"].items() if k != "library"} == node_context
    group = next(m for m in ours if m["type"] == "group")
    assert group["timestamp"] == "2024-01-02T03:04:05.678Z"
