"""The public surface, pinned: what users may import, and the vocabularies defined once.

Everything else lives in modules whose names start with ``_`` and may change at any time.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging.handlers
import re
import types
from pathlib import Path

import pytest

import htevents_logging
import htevents_logging.contrib.asgi
import htevents_logging.contrib.celery
import htevents_logging.contrib.django
import htevents_logging.errors
import htevents_logging.pytest_plugin
import htevents_logging.testing
import htevents_logging.typing
from htevents_logging import HtEvents, Reason
from htevents_logging._client import ClientSettings
from htevents_logging._message import _TYPE_FIELDS, MESSAGE_TYPES
from htevents_logging._settings import SEED_NAMES, Settings
from htevents_logging._transport.ledger import BY_REASON, COUNTERS
from htevents_logging._transport.worker import BatchWorker

PACKAGE = Path(htevents_logging.__file__).parent
README = Path(__file__).resolve().parent.parent / "README.md"
PUBLIC_MODULES = {
    "errors",
    "typing",
    "testing",
    "collector",
    "cli",
    "metrics",
    "contrib",
    "loguru",
    "pytest_plugin",
}


def test_the_package_exports_exactly_these_names():
    assert sorted(htevents_logging.__all__) == [
        "CaptureIdentity",
        "DeliveryError",
        "HtEvents",
        "HtEventsError",
        "HtEventsHandler",
        "HtEventsProcessor",
        "MessageTooLargeError",
        "Reason",
        "__version__",
        "bind",
        "flush_after",
        "flush_all",
        "redact",
    ]


@pytest.mark.parametrize(
    ("module", "names"),
    [
        (
            htevents_logging.errors,
            ["DeliveryError", "HtEventsError", "MessageTooLargeError", "Reason"],
        ),
        (
            htevents_logging.typing,
            ["BeforeSend", "Callback", "ErrorHandler", "Message", "MessageFields", "Timestamp"],
        ),
        (htevents_logging.testing, ["capture_events"]),
        (htevents_logging.pytest_plugin, ["htevents_events"]),
        (htevents_logging.contrib.asgi, ["HtEventsMiddleware"]),
        (htevents_logging.contrib.django, ["HtEventsMiddleware"]),
        (htevents_logging.contrib.celery, ["IDENTITY_HEADER", "instrument"]),
    ],
)
def test_each_public_module_exports_exactly_these_names(module, names):
    assert sorted(module.__all__) == names
    for name in names:
        assert hasattr(module, name), name


def test_every_exported_class_and_function_says_what_it_is_for():
    modules = [htevents_logging, htevents_logging.errors, htevents_logging.testing]
    for module in modules:
        for name in module.__all__:
            value = getattr(module, name)
            if inspect.isclass(value) or inspect.isfunction(value):
                assert inspect.getdoc(value), f"{module.__name__}.{name} has no docstring"


def test_every_other_module_is_private():
    for path in PACKAGE.iterdir():
        name = path.stem if path.suffix == ".py" else path.name
        if name.startswith("_") or name in PUBLIC_MODULES or path.suffix not in (".py", ""):
            continue
        if path.is_dir() and not (path / "__init__.py").exists():
            continue
        pytest.fail(f"htevents_logging.{name} is neither public nor private (_{name})")


def test_the_package_namespace_shows_only_public_modules():
    shown = {
        name
        for name, value in vars(htevents_logging).items()
        if isinstance(value, types.ModuleType) and not name.startswith(("_", "@"))
    }  # ("@py_builtins": pytest rewrites the asserts of a distribution with a pytest11 plugin)
    assert shown <= PUBLIC_MODULES


# -- one source for each concept --------------------------------------------------------------


def test_reasons_are_strings_and_each_belongs_to_one_counter():
    assert Reason.QUEUE_FULL == "queue_full" and str(Reason.QUEUE_FULL) == "queue_full"
    assert f"{Reason.HTTP_4XX}" == "http_4xx"
    assert {reason.counter for reason in Reason} == set(BY_REASON)
    assert set(BY_REASON) <= set(COUNTERS)


def _readme_reasons() -> set[str]:
    """The reasons in the README's table (the one whose header starts with ``| reason``)."""
    reasons: set[str] = set()
    in_table = False
    for line in README.read_text(encoding="utf-8").splitlines():
        if re.match(r"\|\s*reason\s*\|", line):
            in_table = True
            continue
        if in_table and not line.startswith("|"):
            break
        if in_table:
            first_cell = line.split("|")[1]
            reasons.update(re.findall(r"`([a-z0-9_]+)`", first_cell))
    return reasons


def test_the_readme_lists_every_reason_and_no_other():
    assert _readme_reasons() == {reason.value for reason in Reason}


def test_delivery_errors_docstring_lists_every_reason_it_can_carry():
    doc = htevents_logging.DeliveryError.__doc__ or ""
    listed = set(re.findall(r"``([a-z0-9_]+)``", doc))
    carried = {reason.value for reason in Reason if reason.counter in ("failed", "dropped")}
    assert carried <= listed
    assert listed & {reason.value for reason in Reason} == carried


def test_the_keyword_settings_match_the_settings_definition():
    fields = {field.name for field in dataclasses.fields(Settings)}
    renamed_seed_names = {seed for seed, (name, _) in SEED_NAMES.items() if seed != name}
    assert set(ClientSettings.__annotations__) == fields - {"write_key"} | renamed_seed_names


def test_the_settings_are_the_sharing_key():
    one = Settings.create(write_key="k", flush_interval=2)
    assert one == Settings.create(write_key="k", flush_interval=2.0, debug=True, on_error=print)
    assert one != Settings.create(write_key="k", flush_interval=3)
    assert one != Settings.create(write_key="other", flush_interval=2)
    assert hash(one) == hash(Settings.create(write_key="k", flush_interval=2))
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.flush_interval = 5  # type: ignore[misc]


def test_a_new_setting_is_part_of_the_sharing_key_unless_it_says_otherwise():
    per_client = {field.name for field in dataclasses.fields(Settings) if not field.compare}
    assert per_client == {
        "disable",
        "on_error",
        "debug",
        "before_send",
        "context",
        "properties",
        "capture_trace_context",
    }


def test_clients_with_equal_settings_share_one_transport():
    first = HtEvents("k", host="http://127.0.0.1:9", on_error=print)
    second = HtEvents("k", host="http://127.0.0.1:9")
    third = HtEvents("k", host="http://127.0.0.1:9", max_retries=1)
    try:
        assert first._transport is second._transport
        assert third._transport is not first._transport
    finally:
        for client in (first, second, third):
            client.close(0)


def test_spool_paths_are_one_key_however_spelled(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    relative = Settings.create(write_key="k", spool_path="s.db")
    absolute = Settings.create(write_key="k", spool_path=str(tmp_path / "s.db"))
    assert relative == absolute


def test_the_message_types_are_listed_once():
    assert MESSAGE_TYPES == ("identify", "track", "page", "screen", "group", "alias")
    assert tuple(_TYPE_FIELDS) == MESSAGE_TYPES


# -- the architecture, as far as a test can see it ---------------------------------------------


def _sources() -> dict[str, str]:
    return {
        str(path.relative_to(PACKAGE)): path.read_text(encoding="utf-8")
        for path in PACKAGE.rglob("*.py")
    }


def test_every_fork_and_exit_hook_is_registered_in_the_lifecycle_module_only():
    registering = {
        name
        for name, text in _sources().items()
        if "register_at_fork(" in text or "atexit.register(" in text
    }
    assert registering == {"_lifecycle.py"}


def test_the_worker_is_a_queue_listener_using_none_of_its_private_attributes():
    assert issubclass(BatchWorker, logging.handlers.QueueListener)
    text = _sources()[str(Path("_transport") / "worker.py")]
    for private in ("._monitor", "._sentinel", "self._thread", "QueueListener._"):
        assert private not in text, private


def test_the_wire_timestamp_format_is_written_once():
    formatting = {
        name for name, text in _sources().items() if "strftime" in text or "gmtime" in text
    }
    assert formatting <= {"_time.py"}


def test_no_code_cites_a_file_outside_the_repository():
    for name, text in _sources().items():
        assert "WIRE.md" not in text and "../shared" not in text, name


def test_the_readme_settings_table_lists_every_setting_and_no_other():
    # Adding a setting is one field plus one README row: this keeps the two together.
    rows: list[str] = []
    text = README.read_text(encoding="utf-8")
    table = text[text.index("## Settings") :]
    table = table[table.index("| Python |") :]
    for line in table.splitlines()[2:]:
        if not line.startswith("|"):
            break
        rows += re.findall(r"`([a-z_]+)`", line.split("|")[1])
    assert sorted(rows) == sorted(field.name for field in dataclasses.fields(Settings))
