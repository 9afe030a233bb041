"""The collector's rules as a pure function: ``judge(request, rules)``, no sockets.

What the real endpoint answers to each kind of request; the socket side is tested in
test_collector.py.
"""

from __future__ import annotations

import base64
import gzip
import json

from htevents_logging.collector import Request, Rules, judge

KEY = "contract-key"
RULES = Rules(write_key=KEY)


def message(**fields: object) -> dict[str, object]:
    return {"type": "track", "messageId": "m-1", "event": "x", "userId": "u", **fields}


def request(
    document: object = None,
    *,
    method: str = "POST",
    target: str = "/v1/batch",
    headers: tuple[tuple[str, str], ...] = (),
    body: bytes | None = None,
    key: str | None = KEY,
) -> Request:
    if body is None:
        body = json.dumps({"batch": [message()]} if document is None else document).encode()
    if key is not None:
        token = base64.b64encode(f"{key}:".encode()).decode()
        headers = (("Authorization", f"Basic {token}"), *headers)
    return Request(method, target, headers, body)


def test_a_good_batch_is_accepted_with_its_events():
    verdict = judge(request(), RULES)
    assert verdict.status == 200 and verdict.error is None
    assert [event["messageId"] for event in verdict.events] == ["m-1"]


def test_the_write_key_may_come_in_the_body_instead():
    verdict = judge(request({"batch": [message()], "writeKey": KEY}, key=None), RULES)
    assert verdict.status == 200


def test_a_missing_or_wrong_write_key_is_401_and_never_shown_in_full():
    missing = judge(request(key=None), RULES)
    wrong = judge(request(key="another-key"), RULES)
    assert missing.status == wrong.status == 401
    assert "no write key" in (missing.error or "")
    assert "wrong write key" in (wrong.error or "")
    assert KEY not in (wrong.error or "") and "another-key" not in (wrong.error or "")


def test_any_key_is_accepted_without_one_configured():
    assert judge(request(key="whatever"), Rules()).status == 200


def test_path_and_method():
    assert judge(request(target="/v1/track"), RULES).status == 404
    get = judge(request(method="GET"), RULES)
    assert get.status == 405 and get.headers == {"Allow": "POST"}


def test_a_body_must_be_under_the_limit():
    rules = Rules(write_key=KEY, max_body_bytes=1_000)
    padding = {"batch": [message()], "pad": ""}
    size = len(json.dumps(padding).encode())
    under = dict(padding, pad="x" * (999 - size))
    at = dict(padding, pad="x" * (1_000 - size))
    assert len(json.dumps(under).encode()) == 999
    assert judge(request(under), rules).status == 200
    assert judge(request(at), rules).status == 413


def test_gzip_is_gunzipped_and_bad_gzip_refused():
    body = gzip.compress(json.dumps({"batch": [message()]}).encode())
    gzipped = (("Content-Encoding", "gzip"),)
    assert judge(request(body=body, headers=gzipped), RULES).status == 200
    bad = judge(request(body=b"not gzip", headers=gzipped), RULES)
    assert bad.status == 400 and "gzip" in (bad.error or "")
    assert judge(request(headers=(("Content-Encoding", "br"),)), RULES).status == 415


def test_malformed_json_says_what_is_wrong():
    verdict = judge(request(body=b"{not json"), RULES)
    assert verdict.status == 400 and "not valid JSON" in (verdict.error or "")
    nan = judge(request(body=b'{"batch": [NaN]}'), RULES)
    assert nan.status == 400 and "NaN" in (nan.error or "")
    assert judge(request([1, 2]), RULES).status == 400
    assert judge(request({"nobatch": []}), RULES).status == 400


def test_each_message_needs_a_known_type_and_a_message_id():
    no_type = judge(request({"batch": [message(type="sneeze")]}), RULES)
    no_id = judge(request({"batch": [message(messageId="")]}), RULES)
    assert no_type.status == no_id.status == 400
    assert (no_type.error or "").startswith("batch[0]: type 'sneeze'")
    assert "messageId" in (no_id.error or "")


def test_a_message_over_its_limit_is_refused_with_its_size():
    rules = Rules(write_key=KEY, max_message_bytes=200)
    verdict = judge(request({"batch": [message(), message(properties={"p": "x" * 300})]}), rules)
    assert verdict.status == 400 and (verdict.error or "").startswith("batch[1]: message is")
