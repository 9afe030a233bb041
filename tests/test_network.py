"""Networks as users have them: proxies (from the environment or ``proxies=``), a private CA,
client certificates, a session of the user's, and redirects. All on 127.0.0.1, real sockets."""

from __future__ import annotations

import logging
import logging.config
from typing import Any

import pytest
import requests
from helpers import Outcomes, assert_flushed, configured_by_dictconfig
from network import Certificates, ForwardProxy, make_certificates

from htevents_logging import HtEvents
from htevents_logging.collector import Collector, Reply

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture(autouse=True)
def clean_network_environment(monkeypatch):
    """No proxy or CA bundle from the machine: each test sets what it means."""
    for name in (*PROXY_VARIABLES, "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
def certificates(tmp_path) -> Certificates:
    return make_certificates(tmp_path)


@pytest.fixture
def tls_collector(certificates, write_key):
    with Collector(write_key=write_key, tls_cert=certificates.server) as running:
        yield running


@pytest.fixture
def proxy():
    with ForwardProxy() as running:
        yield running


@pytest.fixture
def client_for(closing, write_key):
    def make(collector: Collector, **settings: Any) -> HtEvents:
        settings.setdefault("flush_interval", 0.05)
        settings.setdefault("max_retries", 0)
        return closing(HtEvents(write_key, host=collector.url, **settings))

    return make


# -- proxies ----------------------------------------------------------------------------------


def test_a_proxy_from_the_environment_is_used(collector, proxy, client_for, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    client = client_for(collector)
    client.track(user_id="u", event="Through the proxy")
    assert_flushed(client)
    assert [event["event"] for event in collector.events] == ["Through the proxy"]
    assert proxy.seen == [f"POST {collector.url}/v1/batch"]


def test_https_goes_through_the_proxy_with_connect(
    tls_collector, proxy, client_for, certificates, monkeypatch
):
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificates.ca))
    client = client_for(tls_collector)
    client.track(user_id="u", event="Tunnelled")
    assert_flushed(client)
    assert len(tls_collector.events) == 1
    assert proxy.seen == [f"CONNECT 127.0.0.1:{tls_collector.port}"]


def test_proxies_setting(collector, proxy, client_for):
    client = client_for(collector, proxies={"http": proxy.url})
    client.track(user_id="u", event="Configured proxy")
    assert_flushed(client)
    assert len(collector.events) == 1 and len(proxy.seen) == 1


def test_no_proxy_is_respected(collector, proxy, client_for, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    client = client_for(collector)
    client.track(user_id="u", event="Direct")
    assert_flushed(client)
    assert len(collector.events) == 1 and proxy.seen == []


def test_trust_env_false_ignores_the_environment(collector, proxy, client_for, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    client = client_for(collector, trust_env=False)
    client.track(user_id="u", event="Direct")
    assert_flushed(client)
    assert len(collector.events) == 1 and proxy.seen == []


def test_a_proxy_that_is_down_fails_the_batch_without_showing_the_key(
    collector, client_for, write_key, caplog
):
    outcomes = Outcomes()
    client = client_for(collector, proxies={"http": "http://127.0.0.1:9"})  # nothing listens
    client.track(user_id="u", event="x", callback=outcomes)
    client.flush(5)
    assert outcomes.wait(1)
    [error] = outcomes.errors
    assert error.reason == "retries_exhausted" and "Proxy" in str(error)
    assert write_key not in str(error) + caplog.text


# -- TLS --------------------------------------------------------------------------------------


def test_a_private_ca_from_requests_ca_bundle(tls_collector, client_for, certificates, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificates.ca))
    client = client_for(tls_collector)
    client.track(user_id="u", event="Verified")
    assert_flushed(client)
    assert len(tls_collector.events) == 1


def test_a_private_ca_from_verify(tls_collector, client_for, certificates):
    client = client_for(tls_collector, verify=str(certificates.ca))
    client.track(user_id="u", event="Verified")
    assert_flushed(client)
    assert len(tls_collector.events) == 1


def test_without_the_ca_the_batch_fails_and_is_reported(
    tls_collector, client_for, write_key, caplog
):
    outcomes = Outcomes()
    client = client_for(tls_collector)
    client.track(user_id="u", event="Refused", callback=outcomes)
    client.flush(5)
    assert outcomes.wait(1)
    [error] = outcomes.errors
    assert "CERTIFICATE_VERIFY_FAILED" in str(error)
    assert client.stats()["failed"] == 1 and tls_collector.events == []
    assert write_key not in str(error) + caplog.text


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_verify_false_sends_and_warns_that_tls_is_not_verified(tls_collector, client_for, caplog):
    with caplog.at_level(logging.WARNING, "htevents_logging"):
        client = client_for(tls_collector, verify=False)
        client.track(user_id="u", event="Unverified")
        assert_flushed(client)
    assert len(tls_collector.events) == 1
    assert [r for r in caplog.records if "NOT verified" in r.getMessage()]


def test_the_ca_through_dictconfig(tls_collector, certificates, write_key):
    with configured_by_dictconfig(
        "network.dictconfig",
        write_key=write_key,
        host=tls_collector.url,
        verify=str(certificates.ca),
        flush_interval=0.05,
    ) as logger:
        logger.info("Signed up", extra={"htevent": {"userId": "u"}})
        assert tls_collector.wait_for_events(1, 5)


def test_a_client_certificate(certificates, client_for, write_key):
    with Collector(
        write_key=write_key, tls_cert=certificates.server, tls_client_ca=certificates.ca
    ) as collector:
        without = client_for(collector, verify=str(certificates.ca))
        without.track(user_id="u", event="No certificate")
        assert without.flush(5)  # failed for good (the handshake was refused): settled
        assert without.stats()["failed"] == 1
        client = client_for(collector, verify=str(certificates.ca), cert=str(certificates.client))
        client.track(user_id="u", event="With a certificate")
        assert_flushed(client)
        assert [event["event"] for event in collector.events] == ["With a certificate"]


# -- a session of the user's ------------------------------------------------------------------


class CountingAdapter(requests.adapters.HTTPAdapter):
    def __init__(self) -> None:
        super().__init__()
        self.sent = 0

    def send(self, request, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.sent += 1
        return super().send(request, *args, **kwargs)


def test_a_users_session_is_used_as_it_is_and_never_closed(collector, client_for):
    adapter = CountingAdapter()
    session = requests.Session()
    session.mount("http://", adapter)
    session.headers["X-Team"] = "growth"
    client = client_for(collector, session=session)
    client.track(user_id="u", event="Through your session")
    assert_flushed(client)
    client.close()
    assert adapter.sent == 1 and len(collector.events) == 1
    assert collector.requests[0].header("X-Team") == "growth"
    assert session.get(collector.url + "/v1/batch").status_code == 405  # still open


# -- redirects --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [307, 308])
def test_a_307_or_308_to_the_same_host_is_followed_with_the_same_body_and_auth(
    collector, client_for, status
):
    collector.script(Reply(status, headers={"Location": "/v1/batch?moved=1"}))
    client = client_for(collector)
    client.track(user_id="u", event="Moved")
    assert_flushed(client)
    first, second = collector.requests
    assert second.path == "/v1/batch?moved=1"
    assert second.body == first.body
    assert second.header("Authorization") == first.header("Authorization")
    assert len(collector.events) == 1


def test_at_most_three_hops_are_followed(collector, client_for):
    collector.script(*[Reply(307, headers={"Location": "/v1/batch"})] * 4)
    outcomes = Outcomes()
    client = client_for(collector)
    client.track(user_id="u", event="Loop", callback=outcomes)
    client.flush(5)
    assert outcomes.wait(1)
    assert outcomes.errors[0].reason == "http_3xx"
    assert len(collector.requests) == 4  # the first, and three hops


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_any_other_redirect_fails_for_good_and_the_key_never_leaves(
    collector, client_for, write_key, status
):
    with Collector() as elsewhere:
        location = f"{elsewhere.url}/v1/batch"
        if status in (301, 302, 303):
            location = "/v1/batch"  # even to the same host: only 307 and 308 keep the body
        collector.script(Reply(status, headers={"Location": location}))
        outcomes = Outcomes()
        client = client_for(collector)
        client.track(user_id="u", event="Redirected", callback=outcomes)
        client.flush(5)
        assert outcomes.wait(1)
        [error] = outcomes.errors
        assert error.reason == "http_3xx" and error.status == status
        assert location in str(error)
        assert elsewhere.requests == []
        assert len(collector.requests) == 1
        assert write_key not in str(error)


def test_a_proxy_password_is_never_shown():
    client = HtEvents("k", proxies={"https": "http://me:s3cret@proxy.internal:3128"}, disable=True)
    assert "s3cret" not in repr(client.settings)
    assert "http://me:***@proxy.internal:3128" in repr(client.settings)
