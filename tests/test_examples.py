"""Every file in ``examples/`` runs, and sends what it says, to a local collector.

Examples that call ``logging.config.dictConfig`` run in a subprocess (it changes the logging
configuration of the whole process); the FastAPI one runs here, through ``TestClient``, and puts
structlog back as it was.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import pytest
from helpers import SETTINGS_ENV, run_python

from htevents_logging.collector import Collector

# The frameworks are imported now, at collection, while no test has started a thread: on
# Python 3.13 werkzeug's import iterates its own module globals, and importing it mid-run (as
# importorskip would) once raised "dictionary changed size during iteration".
for _framework in ("flask", "fastapi", "django"):
    try:
        importlib.import_module(_framework)
    except ImportError:
        pass

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def run_example(
    collector: Collector, write_key: str
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``python ARGS`` with HT_WRITE_KEY / HT_HOST pointing at the collector; it must
    succeed, and never show the key."""

    def run(args: list[str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        result = run_python(
            *args,
            env={"HT_WRITE_KEY": write_key, "HT_HOST": collector.url},
            cwd=cwd,
            timeout=timeout,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert write_key not in result.stdout + result.stderr
        return result

    return run


def example(name: str) -> str:
    """The path of ``examples/NAME``, as a string for subprocess arguments."""
    path = EXAMPLES / name
    assert path.is_file(), path
    return str(path)


#: Loads an example file as a module in a subprocess, without examples/ being a package.
LOAD_EXAMPLE = textwrap.dedent(
    """
    import importlib.util, sys
    def load_example(path, name):
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    """
)


def by_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [event for event in events if event["type"] == kind]


# --------------------------------------------------------------------------------------------
# dictConfig, Django


def test_dictconfig_basic(collector: Collector, run_example, tmp_path: Path) -> None:
    result = run_example([example("dictconfig_basic.py")], tmp_path)

    # Delivered by logging.shutdown() at exit, before the process ended.
    assert collector.wait_for_events(2, timeout=5)
    [track] = by_type(collector.events, "track")
    assert track["event"] == "Order completed"
    assert track["userId"] == "123"
    assert track["properties"] == {"orderId": "o-1", "total": 29.99}
    [identify] = by_type(collector.events, "identify")
    assert identify["traits"] == {"plan": "pro"}
    assert len(collector.events) == 2  # "Server started" printed, not sent
    assert "INFO shop: Server started" in result.stderr


def test_django_settings_runs_without_django(
    collector: Collector, run_example, tmp_path: Path
) -> None:
    code = textwrap.dedent(
        """
        import runpy, sys
        sys.modules["django"] = None  # the snippet must not need Django
        runpy.run_path(sys.argv[1], run_name="__main__")
        """
    )
    run_example(["-c", code, example("django_settings.py")], tmp_path)

    assert collector.wait_for_events(1, timeout=5)
    [event] = collector.events
    assert event["type"] == "track"
    assert event["event"] == "Order completed"
    assert event["userId"] == "123"


def test_django_settings_in_django_with_the_middleware(
    collector: Collector, run_example, tmp_path: Path
) -> None:
    pytest.importorskip("django")
    code = LOAD_EXAMPLE + textwrap.dedent(
        """
        import logging
        import django
        from django.conf import settings
        from django.http import HttpResponse
        from django.test import RequestFactory

        example = load_example(sys.argv[1], "django_settings_example")
        settings.configure(LOGGING=example.LOGGING)
        django.setup()  # hands LOGGING to dictConfig, as a project's settings.py would

        class User:
            def __init__(self, pk, is_authenticated):
                self.pk, self.is_authenticated = pk, is_authenticated

        def view(request):
            logging.getLogger("myproject.orders").info(
                "Order completed", extra={"htevent": {"properties": {"total": 9}}}
            )
            return HttpResponse("ok")

        middleware = example.htevents_identity(view)
        for user in (User(42, True), User(None, False)):
            request = RequestFactory().post("/orders")
            request.user = user
            assert middleware(request).status_code == 200
        """
    )
    run_example(["-c", code, example("django_settings.py")], tmp_path)

    assert collector.wait_for_events(2, timeout=5)
    signed_in, anonymous = collector.events
    assert signed_in["userId"] == "42"
    assert signed_in["event"] == "Order completed"
    assert "userId" not in anonymous
    assert anonymous["anonymousId"]


# --------------------------------------------------------------------------------------------
# Flask


def test_flask_app_binds_the_user_per_request(
    collector: Collector, run_example, tmp_path: Path
) -> None:
    pytest.importorskip("flask")
    code = LOAD_EXAMPLE + textwrap.dedent(
        """
        import logging, logging.config
        example = load_example(sys.argv[1], "flask_app_example")
        logging.config.dictConfig(example.LOGGING)
        client = example.create_app().test_client()
        for user in ("user-7", "user-8", None):
            headers = {"X-User-Id": user} if user else {}
            response = client.post(
                "/orders", json={"orderId": f"o-{user}", "total": 9.5}, headers=headers
            )
            assert response.status_code == 201, response.status_code
            assert response.get_json() == {"status": "created", "orderId": f"o-{user}"}
        # After the requests nothing is bound any more.
        logging.getLogger("shop").info("After", extra={"htevent": {}})
        """
    )
    run_example(["-c", code, example("flask_app.py")], tmp_path)

    assert collector.wait_for_events(4, timeout=5)
    first, second, anonymous, after = collector.events
    assert [e["event"] for e in collector.events] == ["Order completed"] * 3 + ["After"]
    assert first["userId"] == "user-7"
    assert first["properties"] == {"orderId": "o-user-7", "total": 9.5}
    assert first["context"]["ip"] == "127.0.0.1"
    assert second["userId"] == "user-8"
    for unbound in (anonymous, after):
        assert "userId" not in unbound
        assert unbound["anonymousId"]
        assert "ip" not in unbound["context"]


# --------------------------------------------------------------------------------------------
# FastAPI + structlog


@pytest.fixture
def fastapi_example(
    collector: Collector, monkeypatch: pytest.MonkeyPatch, write_key
) -> Iterator[ModuleType]:
    """``examples/fastapi_structlog.py`` imported with HT_* pointing at ``collector``."""
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")  # what fastapi.testclient.TestClient runs on
    structlog = pytest.importorskip("structlog")
    for name in SETTINGS_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HT_WRITE_KEY", write_key)
    monkeypatch.setenv("HT_HOST", collector.url)
    name = "fastapi_structlog_example"
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / "fastapi_structlog.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[name]
        structlog.contextvars.clear_contextvars()
        structlog.reset_defaults()


# Recent Starlette prefers the httpx2 package for its TestClient and warns when it runs on httpx,
# which is what the Starlette releases that still support Python 3.9 need.
@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient` is deprecated")
def test_fastapi_structlog_binds_the_user_per_request(
    fastapi_example: ModuleType, collector: Collector, capsys: pytest.CaptureFixture[str]
) -> None:
    from fastapi.testclient import TestClient

    # The context manager runs the app's lifespan: configure on start, close() on shutdown.
    with TestClient(fastapi_example.app) as client:
        for user in ("user-7", "user-8", None):
            headers = {"X-User-Id": user} if user else {}
            response = client.post(
                "/orders", json={"orderId": f"o-{user}", "total": 9.5}, headers=headers
            )
            assert response.status_code == 201, response.text
            assert response.json() == {"status": "created", "orderId": f"o-{user}"}

    # The lifespan's processor.close() has delivered them.
    assert collector.wait_for_events(3, timeout=5)
    first, second, anonymous = collector.events
    assert [e["event"] for e in collector.events] == ["Order completed"] * 3
    assert first["userId"] == "user-7"
    assert first["properties"] == {"orderId": "o-user-7", "total": 9.5}
    assert second["userId"] == "user-8"
    assert "userId" not in anonymous
    assert anonymous["anonymousId"]

    # The JSON log lines carry the bound user_id, and not the payload the processor popped.
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line.get("user_id") for line in lines] == ["user-7", "user-8", None]
    assert all(line["event"] == "Order completed" and "htevent" not in line for line in lines)


def test_celery_gunicorn_note_names_the_hooks() -> None:
    text = (EXAMPLES / "celery_gunicorn.md").read_text(encoding="utf-8")
    for hook in ("worker_exit", "post_fork", "worker_process_shutdown", "setup_logging"):
        assert hook in text
    # Its Python blocks at least compile.
    blocks = text.split("```python\n")[1:]
    assert len(blocks) == 2
    for block in blocks:
        compile(block.split("```", 1)[0], "celery_gunicorn.md", "exec")


# --------------------------------------------------------------------------------------------
# The controls


def test_controls_redact_filter_and_share_context(
    collector: Collector, run_example, tmp_path: Path
) -> None:
    result = run_example([example("controls.py")], tmp_path)

    identify, track = collector.events  # "Health checked" was filtered out
    assert identify["traits"] == {"email": "[redacted]", "plan": "pro"}
    assert "ip" not in identify["context"]
    assert identify["context"]["app"] == {"name": "shop", "version": "1.4.2"}
    assert track["properties"] == {"region": "eu", "total": 29.99}
    assert "healthy: True dropped: {'before_send': 1}" in result.stdout
    if importlib.util.find_spec("opentelemetry.sdk") is not None:
        assert "htevents.sent" in result.stdout


def test_aws_lambda_delivers_before_each_handler_returns(
    collector: Collector, run_example, tmp_path: Path
) -> None:
    code = LOAD_EXAMPLE + textwrap.dedent(
        """
        lam = load_example(sys.argv[1], "aws_lambda_example")
        orders = {"user": "123", "orders": [{"orderId": "o-1"}, {"orderId": "o-2"}]}
        assert lam.handler(orders, None) == {"statusCode": 200}
        result = lam.sync_handler({"user": "456", "orders": [{"orderId": "o-3"}]}, None)
        assert result == {"statusCode": 200, "outcomes": ["sent"]}, result
        import os
        os._exit(0)  # no atexit: what was not delivered by now is lost, as on a frozen Lambda
        """
    )
    run_example(["-c", code, example("aws_lambda.py")], tmp_path)
    events = collector.events
    assert sorted(e["properties"]["orderId"] for e in events) == ["o-1", "o-2", "o-3"]
    assert {e["properties"]["orderId"]: e["userId"] for e in events} == {
        "o-1": "123",
        "o-2": "123",
        "o-3": "456",
    }


def test_asyncio_tracing_sends_each_event_with_its_span(
    collector: Collector, run_example, tmp_path: Path
) -> None:
    pytest.importorskip("opentelemetry.sdk")
    result = run_example([example("asyncio_tracing.py")], tmp_path)
    assert "delivered: True 2" in result.stdout
    contexts = [e["context"] for e in collector.events]
    assert len(contexts) == 2
    assert all(len(c["traceId"]) == 32 and len(c["spanId"]) == 16 for c in contexts)
    assert contexts[0]["traceId"] != contexts[1]["traceId"]  # two requests, two traces


def test_loguru_app_sends_the_events_with_the_contextualized_user(
    collector: Collector, run_example, tmp_path: Path
) -> None:
    pytest.importorskip("loguru")
    result = run_example([example("loguru_app.py")], tmp_path)
    events = collector.events  # logger.remove() delivered them before the process ended
    assert [(e["type"], e.get("event"), e["userId"]) for e in events] == [
        ("track", "Order completed", "123"),
        ("identify", None, "123"),
    ]
    assert events[0]["properties"] == {"total": 29.99}
    assert "Cart viewed" in result.stderr


def test_celery_app_delivers_each_tasks_event_with_the_producers_user(
    collector: Collector, run_example, tmp_path: Path
) -> None:
    pytest.importorskip("celery")
    run_example([example("celery_app.py")], EXAMPLES, timeout=90)
    events = collector.events  # the worker's SIGTERM shutdown delivered them
    assert {e["properties"]["orderId"]: e["userId"] for e in events} == {
        "o-1": "123",
        "o-2": "456",
        "o-3": "789",
    }


def test_fastapi_middleware_identifies_each_request_and_delivers_at_shutdown(
    collector: Collector, run_example, tmp_path: Path
) -> None:
    pytest.importorskip("fastapi")
    code = LOAD_EXAMPLE + textwrap.dedent(
        """
        from fastapi.testclient import TestClient
        example = load_example(sys.argv[1], "fastapi_middleware_example")
        with TestClient(example.app) as client:  # the lifespan: shutdown delivers and closes
            for user in ("123", "456", None):
                headers = {"X-User-Id": user} if user else {}
                assert client.post("/orders", json={"total": 1}, headers=headers).status_code == 200
        import os
        os._exit(0)  # no atexit: only the lifespan shutdown can have delivered them
        """
    )
    run_example(["-c", code, example("fastapi_middleware.py")], tmp_path)
    assert [e.get("userId") for e in collector.events] == ["123", "456", None]
