"""The ``demo`` command in a real subprocess, and ``send`` against a local collector."""

from __future__ import annotations

import re
import textwrap
import time
from pathlib import Path

import pytest
from helpers import SETTINGS_ENV, run_python

from htevents_logging.cli import main
from htevents_logging.cli.demo import DEMO_WRITE_KEY
from htevents_logging.collector import Collector, Hang, Reply

TYPES = ("identify", "track", "page", "screen", "group", "alias")
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


@pytest.fixture(autouse=True)
def _no_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SETTINGS_ENV:
        monkeypatch.delenv(name, raising=False)


# --------------------------------------------------------------------------------------------
# demo


def received_section(stdout: str) -> list[str]:
    """The lines the demo printed under "the collector received:"."""
    _, _, rest = stdout.partition("the collector received:\n")
    return [line.strip() for line in rest.splitlines() if line.startswith("  ")]


def test_demo_sends_every_type_through_every_front_end(tmp_path: Path) -> None:
    result = run_python("-m", "htevents_logging", "demo", cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    received = received_section(result.stdout)
    assert [line.split()[0] for line in received] == list(TYPES)
    assert all(" user-123 " in line for line in received)
    assert re.search(
        r"^6 of 6 events arrived at http://127\.0\.0\.1:\d+/v1/batch in \d+\.\d\d s$",
        result.stdout,
        re.MULTILINE,
    ), result.stdout
    for front_end in ("HtEventsHandler", "HtEventsProcessor", "the HtEvents client"):
        assert front_end in result.stdout
    assert DEMO_WRITE_KEY not in result.stdout + result.stderr
    assert "'demo…'" in result.stdout


def test_demo_without_structlog_sends_through_the_handler(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["structlog"] = None  # as if it were not installed
        from htevents_logging.cli import main
        raise SystemExit(main(["demo"]))
        """
    )
    result = run_python("-c", code, cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    notice = [line for line in lines if line.startswith("structlog is not installed")]
    assert len(notice) == 1
    assert "page and screen go through the stdlib handler" in notice[0]
    assert [line.split()[0] for line in received_section(result.stdout)] == list(TYPES)


def test_demo_exits_1_and_says_what_is_missing(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        from htevents_logging.cli import demo
        from htevents_logging.collector import Collector, Reply

        class Refusing(Collector):  # a collector that refuses every request
            def start(self):
                self.script(*[Reply(400)] * 20)
                return super().start()

        demo.Collector = Refusing
        raise SystemExit(demo.run_demo())
        """
    )
    result = run_python("-c", code, cwd=tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(r"^0 of 6 events arrived at ", result.stdout, re.MULTILINE)
    assert "htevents-logging demo: missing identify, track, page, screen, group, alias" in (
        result.stderr
    )
    assert "scripted Reply(400)" in result.stderr
    assert DEMO_WRITE_KEY not in result.stdout + result.stderr


def test_demo_restores_the_logging_and_structlog_configuration(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import io, logging, structlog
        from htevents_logging.cli.demo import DEMO_LOGGER, run_demo

        root_handler = logging.StreamHandler(io.StringIO())
        logging.getLogger().addHandler(root_handler)
        logging.getLogger().setLevel(logging.ERROR)
        processors = [structlog.processors.KeyValueRenderer()]
        structlog.configure(processors=processors)

        out = io.StringIO()
        assert run_demo(out=out) == 0, out.getvalue()

        assert logging.getLogger().handlers == [root_handler]
        assert logging.getLogger().level == logging.ERROR
        demo = logging.getLogger(DEMO_LOGGER)
        assert demo.handlers == [] and demo.propagate and demo.level == logging.NOTSET
        assert structlog.get_config()["processors"] is processors
        print("restored")
        """
    )
    result = run_python("-c", code, cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == "restored\n"


# --------------------------------------------------------------------------------------------
# send


def send(*args: str) -> int:
    return main(["send", *args])


def test_send_delivers_one_message_and_prints_its_id(
    collector: Collector, capsys: pytest.CaptureFixture[str], write_key
) -> None:
    status = send(
        "track",
        "--json",
        '{"userId": "123", "event": "Order completed", "properties": {"total": 29.99}}',
        "--write-key",
        write_key,
        "--host",
        collector.url,
    )

    out, err = capsys.readouterr()
    assert status == 0, err
    assert err == ""
    match = re.fullmatch(rf"delivered track ({UUID})\n", out)
    assert match, out
    [event] = collector.events
    assert event["messageId"] == match.group(1)
    assert event["userId"] == "123"
    assert event["event"] == "Order completed"
    assert event["properties"] == {"total": 29.99}


def test_send_takes_its_settings_from_the_environment(
    collector: Collector,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    write_key,
) -> None:
    monkeypatch.setenv("HT_WRITE_KEY", write_key)
    monkeypatch.setenv("HT_HOST", collector.url + "/")
    monkeypatch.setenv("HT_GZIP", "1")
    monkeypatch.setenv("HT_TIMEOUT", "5")

    status = send("identify", "--json", '{"user_id": "123", "traits": {"plan": "pro"}}')

    out, err = capsys.readouterr()
    assert status == 0, err
    assert out.startswith("delivered identify ")
    [request] = collector.requests
    assert request.header("Content-Encoding") == "gzip"
    assert collector.events[0]["traits"] == {"plan": "pro"}


def test_send_flags_win_over_the_environment(
    collector: Collector,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    write_key,
) -> None:
    monkeypatch.setenv("HT_WRITE_KEY", "not-the-right-key")
    monkeypatch.setenv("HT_HOST", "http://127.0.0.1:1")
    monkeypatch.setenv("HT_GZIP", "1")

    status = send(
        "page",
        "--json",
        '{"userId": "1", "name": "Pricing"}',
        "--write-key",
        write_key,
        "--host",
        collector.url,
        "--no-gzip",
    )

    assert status == 0, capsys.readouterr().err
    assert collector.requests[0].header("Content-Encoding") is None


def test_send_reports_a_rejected_request_and_exits_1(
    collector: Collector, capsys: pytest.CaptureFixture[str], write_key
) -> None:
    collector.script(Reply(400, body='{"error": "batch[0]: something is wrong"}'))

    status = send(
        "track",
        "--json",
        '{"userId": "123", "event": "Order completed"}',
        "--write-key",
        write_key,
        "--host",
        collector.url,
    )

    out, err = capsys.readouterr()
    assert status == 1
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err  # the outcome once: not again as a logged warning
    assert lines[0].startswith("failed: ")
    assert "400" in lines[0]
    assert "something is wrong" in lines[0]
    assert len(collector.requests) == 1  # a 4xx is not retried


def test_send_never_prints_the_write_key(
    collector: Collector, capsys: pytest.CaptureFixture[str], write_key
) -> None:
    wrong_key = "wrong-write-key-0123456789"
    status = send(
        "track",
        "--json",
        '{"userId": "1", "event": "x"}',
        "--write-key",
        wrong_key,
        "--host",
        collector.url,
    )

    out, err = capsys.readouterr()
    assert status == 1
    assert "401" in err
    assert wrong_key not in out + err
    assert write_key not in out + err


def test_send_gives_up_at_its_timeout(
    collector: Collector, capsys: pytest.CaptureFixture[str], write_key
) -> None:
    collector.script(Hang(30))
    started = time.monotonic()

    status = send(
        "track",
        "--json",
        '{"userId": "1", "event": "x"}',
        "--write-key",
        write_key,
        "--host",
        collector.url,
        "--timeout",
        "0.5",
    )

    assert status == 1
    assert time.monotonic() - started < 5
    err = capsys.readouterr().err
    assert err.startswith("failed: ")
    assert "--timeout" in err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["track", "--json", '{"userId": "1"'], "--json is not valid JSON: Expecting"),
        (["track", "--json", "[1, 2]"], "--json must be a JSON object"),
        (["track", "--json", '{"userId": "1"}'], "event is required"),
        (["group", "--json", '{"userId": "1", "bogus": 2}'], "unknown field 'bogus'"),
        (["track", "--json", '{"userId": "1", "event": "x", "properties": 3}'], "properties"),
        (["alias", "--json", '{"previousId": "a"}'], "userId is required"),
    ],
)
def test_send_refuses_a_bad_message_naming_the_problem(
    args: list[str],
    expected: str,
    collector: Collector,
    capsys: pytest.CaptureFixture[str],
    write_key,
) -> None:
    status = send(*args, "--write-key", write_key, "--host", collector.url)

    out, err = capsys.readouterr()
    assert status == 2
    assert out == ""
    assert len(err.splitlines()) == 1, err
    assert err.startswith("htevents-logging send: ")
    assert expected in err
    assert collector.requests == []


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        ([], {}, "no write key: pass --write-key KEY or set HT_WRITE_KEY"),
        (["--host", "example.com"], {"HT_WRITE_KEY": "k"}, "host must start with http://"),
        ([], {"HT_WRITE_KEY": "k", "HT_GZIP": "maybe"}, "HT_GZIP='maybe'"),
        ([], {"HT_WRITE_KEY": "k", "HT_TIMEOUT": "soon"}, "HT_TIMEOUT"),
    ],
)
def test_send_refuses_bad_settings_naming_them(
    args: list[str],
    env: dict[str, str],
    expected: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    status = send("track", "--json", '{"userId": "1", "event": "x"}', *args)

    assert status == 2
    assert expected in capsys.readouterr().err


def test_send_refuses_an_unknown_type(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        send("purchase", "--json", "{}")
    assert exit_info.value.code == 2
    assert "invalid choice: 'purchase'" in capsys.readouterr().err


def test_send_as_a_command(collector: Collector, tmp_path: Path, write_key) -> None:
    result = run_python(
        *["-m", "htevents_logging", "send", "screen", "--json", '{"userId": "7", "name": "Home"}'],
        cwd=tmp_path,
        env={"HT_WRITE_KEY": write_key, "HT_HOST": collector.url},
    )

    assert result.returncode == 0, result.stderr
    assert re.fullmatch(rf"delivered screen {UUID}\n", result.stdout)
    assert collector.events[0]["name"] == "Home"
    assert write_key not in result.stdout + result.stderr


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("collect", "demo", "send"):
        assert command in out
