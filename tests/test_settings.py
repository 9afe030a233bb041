"""Settings: the seed's defaults, checked at construction, and the write key never shown."""

from __future__ import annotations

import pytest

from htevents_logging import HtEvents, HtEventsHandler, HtEventsProcessor
from htevents_logging._settings import Settings

KEY = "sk_live_0123456789abcdef"


def test_defaults_are_the_seeds():
    settings = Settings.create(write_key=KEY)
    assert settings.host == "https://us-east-1.hightouch-events.com"
    assert settings.path == "/v1/batch"
    assert settings.max_retries == 3
    assert settings.max_events_in_batch == 15
    assert settings.flush_interval == 10.0
    assert settings.http_request_timeout == 10.0
    assert settings.disable is False
    assert settings.url == "https://us-east-1.hightouch-events.com/v1/batch"


def test_write_key_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("HT_WRITE_KEY", KEY)
    assert Settings.create().write_key == KEY


def test_every_front_end_reads_the_environment_for_what_it_is_not_given(monkeypatch):
    monkeypatch.setenv("HT_WRITE_KEY", KEY)
    monkeypatch.setenv("HT_HOST", "http://127.0.0.1:9")
    monkeypatch.setenv("HT_PATH", "/v2/batch")
    monkeypatch.setenv("HT_GZIP", "yes")
    monkeypatch.setenv("HT_DEBUG", "0")
    settings = Settings.create()
    assert (settings.url, settings.gzip, settings.debug) == (
        "http://127.0.0.1:9/v2/batch",
        True,
        False,
    )
    # What is given wins over the environment.
    assert Settings.create(host="http://127.0.0.1:8", gzip=False).url.startswith(
        "http://127.0.0.1:8"
    )
    assert Settings.create(gzip=False).gzip is False


def test_ht_disable_turns_sending_off_in_tests_and_ci(monkeypatch):
    monkeypatch.delenv("HT_WRITE_KEY", raising=False)
    monkeypatch.setenv("HT_DISABLE", "1")
    client = HtEvents()  # no key needed: nothing is sent
    assert client.settings.disable is True
    assert client.track(user_id="1", event="x")["event"] == "x"


def test_an_on_off_variable_that_is_neither_is_refused_naming_it(monkeypatch):
    monkeypatch.setenv("HT_WRITE_KEY", KEY)
    monkeypatch.setenv("HT_GZIP", "maybe")
    with pytest.raises(ValueError, match="HT_GZIP='maybe' is not one of 1/0"):
        Settings.create()


def test_missing_write_key_names_the_setting_and_the_variable(monkeypatch):
    monkeypatch.delenv("HT_WRITE_KEY", raising=False)
    with pytest.raises(ValueError, match=r"write_key.*HT_WRITE_KEY"):
        HtEvents()


def test_disabled_client_needs_no_key(monkeypatch):
    monkeypatch.delenv("HT_WRITE_KEY", raising=False)
    client = HtEvents(disable=True)
    assert client.track(user_id="1", event="x")["event"] == "x"
    assert client.stats()["enqueued"] == 0


def test_trailing_slash_on_host_is_tolerated():
    assert Settings.create(write_key=KEY, host="http://127.0.0.1:9/").url == (
        "http://127.0.0.1:9/v1/batch"
    )


@pytest.mark.parametrize(
    ("setting", "value", "error"),
    [
        ("host", "us-east-1.hightouch-events.com", ValueError),
        ("path", "v1/batch", ValueError),
        ("max_retries", -1, ValueError),
        ("max_retries", "3", TypeError),
        ("max_events_in_batch", 0, ValueError),
        ("flush_interval", 0, ValueError),
        ("http_request_timeout", -1.0, ValueError),
        ("max_queue_size", 0, ValueError),
        ("gzip", "yes", TypeError),
        ("on_error", "not callable", TypeError),
        ("shutdown_timeout", float("nan"), ValueError),
    ],
)
def test_bad_settings_fail_at_construction_naming_the_setting(setting, value, error):
    with pytest.raises(error, match=setting):
        HtEvents(write_key=KEY, **{setting: value})


def test_unknown_setting_is_named():
    with pytest.raises(TypeError, match="flushIntervall"):
        Settings.create(write_key=KEY, flushIntervall=1)


def test_an_unknown_camel_case_setting_gets_its_python_name_as_a_hint():
    with pytest.raises(TypeError, match="maxQueueSize: did you mean max_queue_size"):
        Settings.create(write_key=KEY, maxQueueSize=10)


def test_the_seeds_camel_case_names_are_aliases_with_its_milliseconds():
    ported = Settings.create(
        writeKey=KEY,
        host="http://127.0.0.1:9",
        path="/v1/b",
        maxRetries=1,
        maxEventsInBatch=50,
        flushInterval=2500,
        httpRequestTimeout=3000,
        disable=False,
    )
    assert ported == Settings.create(
        write_key=KEY,
        host="http://127.0.0.1:9",
        path="/v1/b",
        max_retries=1,
        max_events_in_batch=50,
        flush_interval=2.5,
        http_request_timeout=3.0,
    )
    assert ported.flush_interval == 2.5


def test_a_setting_given_under_both_names_is_refused():
    with pytest.raises(TypeError, match="flushInterval and flush_interval are the same setting"):
        Settings.create(write_key=KEY, flushInterval=1000, flush_interval=1.0)


def test_a_seed_time_is_checked_in_milliseconds():
    with pytest.raises(ValueError, match="flushInterval must be a finite number of milliseconds"):
        Settings.create(write_key=KEY, flushInterval=0)
    with pytest.raises(TypeError, match="httpRequestTimeout must be a number of milliseconds"):
        Settings.create(write_key=KEY, httpRequestTimeout="10s")


def test_every_front_end_takes_the_seed_names(closing):
    client = closing(HtEvents(writeKey=KEY, flushInterval=60_000, disable=True))
    assert client.settings.flush_interval == 60.0
    handler = closing(HtEventsHandler(writeKey=KEY, maxEventsInBatch=7, disable=True))
    assert handler.client.settings.max_events_in_batch == 7
    processor = closing(HtEventsProcessor(writeKey=KEY, httpRequestTimeout=500, disable=True))
    assert processor.client.settings.http_request_timeout == 0.5


def test_sync_mode_and_spool_path_cannot_be_combined(tmp_path):
    with pytest.raises(ValueError, match="sync_mode and spool_path cannot be combined"):
        Settings.create(write_key=KEY, sync_mode=True, spool_path=str(tmp_path / "s.db"))


def test_write_key_is_never_shown_in_full():
    client = HtEvents(write_key=KEY, disable=True)
    assert KEY not in repr(client)
    assert KEY not in repr(client.settings)
    assert "sk_l…" in repr(client)
