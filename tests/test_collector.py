"""The local /v1/batch collector: behaves like the real endpoint, and fails on command.

These tests double as its documentation: each one shows a request a client might send and what
the collector answers, records, echoes and writes.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import queue
import re
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Optional, Union

import pytest
import requests

import htevents_logging
from htevents_logging._redact import redact_write_key
from htevents_logging.cli import DEFAULT_COLLECT_PORT, main
from htevents_logging.collector import Collector, Cut, Drop, Hang, Reply, format_event

WRITE_KEY = "test-write-key"  # what the `collector` fixture requires


# --------------------------------------------------------------------------------------------
# helpers


def basic_auth(key: str) -> str:
    """The Authorization header value the real endpoint expects: Basic base64(key + ':')."""
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode("ascii")


def message(type_: str = "track", **fields: Any) -> dict[str, Any]:
    """A valid message of ``type_``, as a client would put it in a batch."""
    base: dict[str, Any] = {
        "type": type_,
        "messageId": str(uuid.uuid4()),
        "userId": "user-1",
        "timestamp": "2026-11-29T15:00:06.086Z",
        "context": {"library": {"name": "htevents-logging", "version": "0.1.0"}},
        "integrations": {},
    }
    per_type: dict[str, dict[str, Any]] = {
        "track": {"event": "Order completed", "properties": {"total": 29.99}},
        "identify": {"traits": {"plan": "pro"}},
        "page": {"name": "Intro", "properties": {"url": "https://example.com/docs"}},
        "screen": {"name": "Home", "properties": {}},
        "group": {"groupId": "group-1", "traits": {"name": "Acme"}},
        "alias": {"previousId": "anon-1"},
    }
    base.update(per_type.get(type_, {}))
    base.update(fields)
    return base


def batch(*messages: dict[str, Any], **envelope: Any) -> dict[str, Any]:
    return {"batch": list(messages), "sentAt": "2026-11-29T15:00:06.100Z", **envelope}


def post(
    collector: Collector,
    body: Union[dict[str, Any], list[Any], bytes],
    *,
    headers: Optional[dict[str, str]] = None,
    key: Optional[str] = WRITE_KEY,
    path: Optional[str] = None,
    timeout: float = 5.0,
) -> requests.Response:
    """POST ``body`` (a dict/list is JSON-encoded) to the collector, authenticated with ``key``."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
    sent = {"Content-Type": "application/json"}
    if key is not None:
        sent["Authorization"] = basic_auth(key)
    sent.update(headers or {})
    url = collector.url + (collector.path if path is None else path)
    return requests.post(url, data=data, headers=sent, timeout=timeout)


# --------------------------------------------------------------------------------------------
# the normal answer


def test_accepts_a_valid_batch_and_records_its_events(collector: Collector) -> None:
    events = [message("identify"), message("track")]

    response = post(collector, batch(*events))

    assert response.status_code == 200
    assert response.json() == {}
    assert response.headers["Content-Length"] == "2"
    assert collector.events == events
    [request] = collector.requests
    assert (request.method, request.path, request.status, request.error) == (
        "POST",
        "/v1/batch",
        200,
        None,
    )
    assert request.json == batch(*events)
    assert request.header("authorization") == basic_auth(WRITE_KEY)


@pytest.mark.parametrize("type_", ["identify", "track", "page", "screen", "group", "alias"])
def test_accepts_every_message_type(collector: Collector, type_: str) -> None:
    assert post(collector, batch(message(type_))).status_code == 200
    assert [event["type"] for event in collector.events] == [type_]


def test_accepts_what_the_real_sdks_send(collector: Collector) -> None:
    # The Python SDK sends null ids and +00:00 timestamps, the Node SDK extra _metadata: all fine.
    events = [
        message("track", userId=None, anonymousId="anon-1", timestamp="2026-11-29T15:00:32+00:00"),
        message("identify", _metadata={"nodeVersion": "v20.20.2", "jsRuntime": "node"}),
    ]
    assert post(collector, batch(*events)).status_code == 200
    assert collector.events == events


def test_an_empty_batch_is_accepted(collector: Collector) -> None:
    assert post(collector, batch()).status_code == 200
    assert collector.events == []
    assert len(collector.requests) == 1


def test_events_accumulate_in_arrival_order_across_requests(collector: Collector) -> None:
    first, second, third = message(), message("identify"), message("page")
    post(collector, batch(first, second))
    post(collector, batch(third))
    assert collector.events == [first, second, third]


def test_keep_alive_connections_serve_many_requests(collector: Collector) -> None:
    with requests.Session() as session:
        session.headers["Authorization"] = basic_auth(WRITE_KEY)
        for _ in range(3):
            response = session.post(collector.url + "/v1/batch", json=batch(message()), timeout=5)
            assert response.status_code == 200
            assert response.headers.get("Connection", "").lower() != "close"
    assert len(collector.events) == 3
    assert len({request.client_port for request in collector.requests}) == 1


# --------------------------------------------------------------------------------------------
# the write key


def test_authenticates_by_basic_auth_header(collector: Collector) -> None:
    assert post(collector, batch(message()), key=WRITE_KEY).status_code == 200


def test_authenticates_by_write_key_body_field(collector: Collector) -> None:
    # What the Python and browser SDKs do: no Authorization header, the key in the body.
    response = post(collector, batch(message(), writeKey=WRITE_KEY), key=None)
    assert response.status_code == 200
    assert len(collector.events) == 1


def test_either_place_is_enough_when_the_other_is_wrong(collector: Collector) -> None:
    response = post(collector, batch(message(), writeKey=WRITE_KEY), key="stale-key")
    assert response.status_code == 200


def test_a_wrong_key_is_401_and_records_no_events(collector: Collector) -> None:
    response = post(collector, batch(message()), key="some-other-key")

    assert response.status_code == 401
    assert "wrong write key" in response.json()["error"]
    assert collector.events == []
    [request] = collector.requests
    assert request.status == 401
    assert request.error == response.json()["error"]


def test_a_wrong_body_key_is_401(collector: Collector) -> None:
    response = post(collector, batch(message(), writeKey="some-other-key"), key=None)
    assert response.status_code == 401


def test_a_missing_key_is_401_saying_how_to_send_one(collector: Collector) -> None:
    response = post(collector, batch(message()), key=None)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error.startswith("no write key")
    assert "Authorization: Basic" in error
    assert "writeKey" in error


def test_a_non_basic_authorization_header_is_401(collector: Collector) -> None:
    response = post(
        collector, batch(message()), key=None, headers={"Authorization": f"Bearer {WRITE_KEY}"}
    )
    assert response.status_code == 401
    assert "not HTTP Basic" in response.json()["error"]


def test_without_a_write_key_any_request_is_accepted() -> None:
    with Collector() as open_collector:
        assert post(open_collector, batch(message()), key=None).status_code == 200
        assert post(open_collector, batch(message()), key="anything").status_code == 200
        assert len(open_collector.events) == 2


# --------------------------------------------------------------------------------------------
# gzip and size limits


def test_gzip_bodies_are_gunzipped(collector: Collector) -> None:
    event = message()
    raw = gzip.compress(json.dumps(batch(event)).encode())

    response = post(collector, raw, headers={"Content-Encoding": "gzip"})

    assert response.status_code == 200
    assert collector.events == [event]
    [request] = collector.requests
    assert request.body == raw  # recorded as sent, so tests can check the wire bytes
    assert request.json == batch(event)
    assert request.header("Content-Encoding") == "gzip"


def test_bad_gzip_is_400(collector: Collector) -> None:
    response = post(collector, b"not gzip at all", headers={"Content-Encoding": "gzip"})
    assert response.status_code == 400
    assert "gzip" in response.json()["error"]


def test_a_body_over_500_000_bytes_is_413(collector: Collector) -> None:
    # 20 messages of ~30 KB: each is under the per-message limit, together they are not.
    big = [message(properties={"blob": "x" * 30_000}) for _ in range(20)]
    body = json.dumps(batch(*big)).encode()
    assert len(body) > 500_000

    response = post(collector, body)

    assert response.status_code == 413
    assert "500,000-byte limit" in response.json()["error"]
    assert collector.events == []


def sized_batch(size: int) -> bytes:
    """A valid batch body of exactly ``size`` bytes, in messages under the 32 KB limit."""
    messages = [message(properties={"blob": ""}) for _ in range(size // 25_000)]
    missing = size - len(json.dumps(batch(*messages)).encode())
    for m in messages:
        m["properties"]["blob"] = "x" * (missing // len(messages))
    messages[-1]["properties"]["blob"] += "x" * (missing % len(messages))
    body = json.dumps(batch(*messages)).encode()
    assert len(body) == size
    return body


def test_a_body_must_be_under_500_000_bytes_not_at_it(collector: Collector) -> None:
    # docs/wire.md: "under 500,000 bytes including the envelope".
    assert post(collector, sized_batch(499_999)).status_code == 200
    assert post(collector, sized_batch(500_000)).status_code == 413


def test_a_small_gzip_body_that_inflates_over_the_limit_is_413(collector: Collector) -> None:
    body = json.dumps(batch(message(properties={"zeros": "0" * 600_000}))).encode()
    raw = gzip.compress(body)
    assert len(raw) < 10_000

    response = post(collector, raw, headers={"Content-Encoding": "gzip"})

    assert response.status_code == 413


def test_limits_are_settable() -> None:
    with Collector(max_body_bytes=1_000, max_message_bytes=400) as small:
        assert post(small, batch(message(properties={"x": "y" * 500}))).status_code == 400
        assert post(small, batch(*[message() for _ in range(10)])).status_code == 413
        assert post(small, batch(message())).status_code == 200


# --------------------------------------------------------------------------------------------
# malformed requests


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param(b'{"batch": [', "not valid JSON", id="bad-json"),
        pytest.param(b"\xff\xfe{}", "not UTF-8", id="not-utf8"),
        pytest.param(b'{"batch": [{"type": "track", "x": NaN}]}', "NaN", id="nan"),
        pytest.param([message()], "must be a JSON object", id="body-is-a-list"),
        pytest.param({"sentAt": "2026-11-29T15:00:06.100Z"}, 'no "batch"', id="missing-batch"),
        pytest.param({"batch": {"type": "track"}}, '"batch" must be a list', id="batch-not-list"),
        pytest.param(
            {"batch": ["track"]}, "batch[0]: a message must be a JSON object", id="not-object"
        ),
        pytest.param(batch(message("purchase")), "batch[0]: type 'purchase'", id="bad-type"),
        pytest.param(batch(message(type=None)), "batch[0]: type None", id="no-type"),
        pytest.param(
            batch(message(), message(messageId=None)),
            "batch[1]: track message has no messageId",
            id="no-message-id",
        ),
        pytest.param(
            batch(message(properties={"blob": "é" * 17_000})),
            "over the 32,768-byte limit per message",
            id="oversize-message",
        ),
    ],
)
def test_malformed_requests_are_400_with_a_clear_reason(
    collector: Collector, body: Union[bytes, dict[str, Any], list[Any]], reason: str
) -> None:
    response = post(collector, body)

    assert response.status_code == 400
    assert reason in response.json()["error"]
    assert collector.events == []
    [request] = collector.requests
    assert request.status == 400
    assert reason in (request.error or "")


def test_one_bad_message_rejects_the_whole_batch(collector: Collector) -> None:
    response = post(collector, batch(message(), message("purchase"), message()))
    assert response.status_code == 400
    assert collector.events == []


def test_message_size_counts_utf8_bytes_not_characters(collector: Collector) -> None:
    # 17,000 "é" are 17,000 characters but 34,000 bytes: the JS SDKs' bug, caught here.
    small_in_chars = message(properties={"blob": "é" * 17_000})
    assert len(json.dumps(small_in_chars, separators=(",", ":"), ensure_ascii=False)) < 32_768
    assert post(collector, batch(small_in_chars)).status_code == 400


def test_a_wrong_path_is_404(collector: Collector) -> None:
    response = post(collector, batch(message()), path="/v1/track")
    assert response.status_code == 404
    assert "POST /v1/batch" in response.json()["error"]


def test_the_query_string_does_not_change_the_path(collector: Collector) -> None:
    assert post(collector, batch(message()), path="/v1/batch?debug=1").status_code == 200


def test_a_non_post_method_is_405(collector: Collector) -> None:
    response = requests.get(collector.url + "/v1/batch", timeout=5)
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert "POST" in response.json()["error"]


def test_an_unknown_content_encoding_is_415(collector: Collector) -> None:
    response = post(collector, batch(message()), headers={"Content-Encoding": "br"})
    assert response.status_code == 415


# --------------------------------------------------------------------------------------------
# scripted failures


def test_reply_500_is_answered_and_records_the_request_not_its_events(
    collector: Collector,
) -> None:
    collector.script(Reply(500, body='{"error": "boom"}'))

    response = post(collector, batch(message()))

    assert response.status_code == 500
    assert response.json() == {"error": "boom"}
    assert collector.events == []
    [request] = collector.requests
    assert request.status == 500
    assert request.error == "scripted Reply(500)"


def test_reply_429_sends_retry_after_to_the_client(collector: Collector) -> None:
    collector.script(Reply(429, headers={"Retry-After": "1"}))
    response = post(collector, batch(message()))
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "1"


def test_a_scripted_2xx_reply_still_records_the_events(collector: Collector) -> None:
    event = message()
    collector.script(Reply(201), Reply(204, body=b""))

    assert post(collector, batch(event)).status_code == 201
    assert post(collector, batch(event)).status_code == 204
    assert collector.events == [event, event]


def test_a_scripted_2xx_reply_does_not_hide_a_malformed_request(collector: Collector) -> None:
    collector.script(Reply(200))
    response = post(collector, batch(message("purchase")))
    assert response.status_code == 200  # the script decides the answer...
    assert collector.events == []  # ...but nothing invalid is recorded as delivered
    assert "purchase" in (collector.requests[0].error or "")


def test_actions_are_used_one_per_request_then_normal_answers_resume(
    collector: Collector,
) -> None:
    collector.script(Reply(503), Reply(500))
    statuses = [post(collector, batch(message())).status_code for _ in range(3)]
    assert statuses == [503, 500, 200]
    assert len(collector.events) == 1


def test_hang_never_answers_so_the_client_times_out(collector: Collector) -> None:
    collector.script(Hang(10))

    with pytest.raises(requests.Timeout):
        post(collector, batch(message()), timeout=0.2)

    assert collector.wait_for_requests(1, timeout=5)
    [request] = collector.requests
    assert request.status == 0
    assert collector.events == []


def test_stop_releases_a_long_hang_quickly() -> None:
    hanging = Collector().start()
    hanging.script(Hang(60))
    outcome: list[BaseException] = []

    def client() -> None:
        try:
            post(hanging, batch(message()), timeout=30)
        except requests.RequestException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=client)
    thread.start()
    assert hanging.wait_for_requests(1, timeout=5)

    started = time.monotonic()
    hanging.stop()
    thread.join(timeout=5)

    assert not thread.is_alive()
    assert time.monotonic() - started < 5  # the client waits 30 s on an answer
    assert len(outcome) == 1
    assert isinstance(outcome[0], requests.ConnectionError)


def test_drop_closes_the_connection_without_an_answer(collector: Collector) -> None:
    collector.script(Drop())

    with pytest.raises(requests.ConnectionError):
        post(collector, batch(message()))

    assert collector.requests[0].status == 0
    assert collector.events == []
    assert post(collector, batch(message())).status_code == 200  # the next one is normal


def test_cut_sends_the_status_then_closes_the_connection_mid_body(collector: Collector) -> None:
    collector.script(Cut(503))

    with pytest.raises(requests.exceptions.ChunkedEncodingError, match="IncompleteRead"):
        post(collector, batch(message()))  # the headers arrived; the body came up short

    assert collector.requests[0].status == 503
    assert collector.events == []
    assert post(collector, batch(message())).status_code == 200  # the next one is normal


def test_script_rejects_things_that_are_not_actions(collector: Collector) -> None:
    with pytest.raises(TypeError, match="Drop"):
        collector.script(Drop)  # type: ignore[arg-type]  # the class, not Drop()
    with pytest.raises(ValueError):
        Reply(42)
    with pytest.raises(ValueError, match="Cut status"):
        Cut(600)


# --------------------------------------------------------------------------------------------
# waiting, clearing, lifecycle


def test_wait_for_events_returns_false_at_the_deadline(collector: Collector) -> None:
    started = time.monotonic()
    assert collector.wait_for_events(1, timeout=0.1) is False
    assert time.monotonic() - started < 3


def test_wait_for_events_wakes_when_events_arrive(collector: Collector) -> None:
    sender = threading.Thread(target=post, args=(collector, batch(message(), message())))
    sender.start()
    assert collector.wait_for_events(2, timeout=5)
    assert collector.wait_for_requests(1, timeout=5)
    sender.join(timeout=5)


def test_clear_forgets_requests_and_events(collector: Collector) -> None:
    post(collector, batch(message()))
    collector.clear()
    assert (collector.requests, collector.events) == ([], [])


def test_requests_and_events_are_copies(collector: Collector) -> None:
    post(collector, batch(message()))
    collector.events.clear()
    collector.requests.clear()
    assert len(collector.events) == 1
    assert len(collector.requests) == 1


def test_stop_is_idempotent_and_url_needs_start() -> None:
    fresh = Collector()
    with pytest.raises(RuntimeError, match="start"):
        _ = fresh.url
    fresh.stop()  # before start: nothing to do
    with Collector() as running:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", running.url)
        assert running.port > 0
    running.stop()


# --------------------------------------------------------------------------------------------
# out file and echo


def test_out_appends_each_accepted_event_as_one_json_line(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    out.write_text('{"earlier": "run"}\n', encoding="utf-8")
    first, second, third = message(), message("identify", traits={"name": "Zoë"}), message()

    with Collector(out=out) as writing:
        post(writing, batch(first, second))
        post(writing, batch(message("purchase")))  # rejected: not written
        # flushed after each request: readable while the collector still runs
        assert len(out.read_text(encoding="utf-8").splitlines()) == 3
        post(writing, batch(third))

    lines = out.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [{"earlier": "run"}, first, second, third]


def test_echo_prints_one_readable_line_per_event() -> None:
    echo = io.StringIO()
    events = [
        message("track", messageId="1234abcd-0000-4000-8000-000000000000"),
        message("identify", userId=None, anonymousId="anon-9", messageId="m-2"),
        message("group", messageId="m-3"),
        message("alias", messageId="m-4"),
    ]
    with Collector(echo=echo) as echoing:
        post(echoing, batch(*events))

    assert echo.getvalue().splitlines() == [
        'track     user-1  "Order completed"  {"total": 29.99}  (messageId 1234abcd…)',
        'identify  anon:anon-9  {"plan": "pro"}  (messageId m-2)',
        'group     user-1  group group-1  {"name": "Acme"}  (messageId m-3)',
        "alias     user-1  previousId anon-1  (messageId m-4)",
    ]
    assert format_event(events[0]) == echo.getvalue().splitlines()[0]


def test_echo_reports_rejected_requests() -> None:
    echo = io.StringIO()
    with Collector(echo=echo) as echoing:
        post(echoing, b"{oops")
    [line] = echo.getvalue().splitlines()
    assert line.startswith("rejected request: body is not valid JSON")


# --------------------------------------------------------------------------------------------
# the write key is never shown in full


def test_the_write_key_never_appears_in_full() -> None:
    secret = "sk_live_abcdefghijklmnop"
    wrong = "sk_live_zzzzzzzzzzzzzzzz"
    echo = io.StringIO()
    with Collector(write_key=secret, echo=echo) as guarded:
        answers = [
            post(guarded, batch(message()), key=wrong).text,
            post(guarded, batch(message(), writeKey=wrong), key=None).text,
            post(guarded, batch(message()), key=None, headers={"Authorization": wrong}).text,
            post(guarded, batch(message("purchase")), key=secret).text,
            post(guarded, batch(message()), key=secret).text,
        ]
        shown = [*answers, echo.getvalue(), repr(guarded)]
        shown += [repr(request) for request in guarded.requests]
        shown += [request.error or "" for request in guarded.requests]

    for text in shown:
        assert secret not in text
        assert wrong not in text
    assert "sk_l…" in json.loads(answers[0])["error"]  # enough to tell keys apart


@pytest.mark.parametrize(
    ("key", "shown"),
    [
        ("test-write-key", "test…"),
        ("abcdef", "abc…"),
        ("ab", "a…"),
        ("a", "…"),
        ("", "<empty>"),
        (None, "<unset>"),
    ],
)
def test_redact_write_key_keeps_at_most_four_characters(key: Optional[str], shown: str) -> None:
    assert redact_write_key(key) == shown


# --------------------------------------------------------------------------------------------
# the `collect` command


def test_collect_help_documents_the_default_port(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["collect", "--help"])
    assert exited.value.code == 0
    assert str(DEFAULT_COLLECT_PORT) in capsys.readouterr().out


@pytest.mark.skipif(sys.platform == "win32", reason="terminate() is not SIGTERM on Windows")
def test_collect_command_prints_events_and_appends_them_to_out(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    package_parent = str(Path(htevents_logging.__file__).resolve().parent.parent)
    inherited = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_parent, inherited]))}
    command = [sys.executable, "-m", "htevents_logging", "collect", "--port", "0"]
    command += ["--out", str(out), "--write-key", WRITE_KEY]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        env=env,
    )
    lines: queue.Queue[Optional[str]] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + 15

    def next_line() -> str:
        line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        assert line is not None, f"collect exited early: {process.stderr and process.stderr.read()}"
        return line

    try:
        banner = next_line()
        found = re.fullmatch(
            r"collecting on (http://127\.0\.0\.1:(\d+))/v1/batch \(Ctrl-C to stop\)", banner
        )
        assert found, banner
        url = found.group(1)
        event = message()

        response = requests.post(
            url + "/v1/batch",
            json=batch(event),
            headers={"Authorization": basic_auth(WRITE_KEY)},
            timeout=5,
        )
        assert response.status_code == 200

        while '"Order completed"' not in (line := next_line()):
            assert WRITE_KEY not in line
        assert line.startswith("track     user-1")

        process.terminate()
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()

    assert [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()] == [event]


def test_keep_alive_answers_do_not_wait_for_delayed_acks(collector: Collector) -> None:
    """Regression: headers and body went out in two writes, and with Nagle's algorithm on the
    body waited for the client's delayed ACK: ~40 ms per keep-alive request."""
    session = requests.Session()
    body = {"batch": [{"type": "track", "event": "x", "messageId": "m", "userId": "u"}]}
    auth = ("test-write-key", "")
    session.post(collector.url + "/v1/batch", json=body, auth=auth)
    took = []
    for _ in range(21):
        started = time.monotonic()
        session.post(collector.url + "/v1/batch", json=body, auth=auth)
        took.append(time.monotonic() - started)
    session.close()
    assert statistics.median(took) < 0.03  # a delayed-ACK stall is 40 ms, every request
