"""The ``htevents_events`` fixture comes with the package: a test asks for it, with no import.

Each case runs pytest on a fresh directory with ``pytester``, in a subprocess, so the plugin is
loaded the way a user's test run loads it: through the ``pytest11`` entry point. The entry point
is read from the installed metadata: after editing it in pyproject.toml, reinstall
(``pip install -e . --no-deps``).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import distribution

import pytest
from helpers import run_python

pytest_plugins = ["pytester"]

PLUGIN = "htevents_logging.pytest_plugin"

Run = Callable[..., pytest.RunResult]

USES_THE_FIXTURE = """
from htevents_logging import HtEvents

def test_checkout_sends_order_completed(htevents_events):
    HtEvents(write_key="k", host="http://127.0.0.1:9").track(user_id="1", event="Order completed")
    assert [e["event"] for e in htevents_events] == ["Order completed"]

def test_each_test_gets_its_own_list(htevents_events):
    assert htevents_events == []
"""


@pytest.fixture
def run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Run:
    """Run pytest in a subprocess on the pytester directory, with entry points loaded."""
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    pytester.makepyfile(test_checkout=USES_THE_FIXTURE)

    def run(*args: str) -> pytest.RunResult:
        # Without the slowest unrelated plugins of the dev environment: half the start-up time.
        quiet = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:anyio")
        return pytester.runpytest_subprocess(*quiet, *args, timeout=120)

    return run


def test_the_package_declares_the_plugin_under_its_module_name() -> None:
    # Named after the module, pytest sees one plugin however it is asked for (see below).
    points = distribution("htevents-logging").entry_points  # (3.9: no entry_points(group=))
    declared = [ep for ep in points if ep.group == "pytest11"]
    assert [(ep.name, ep.value) for ep in declared] == [(PLUGIN, PLUGIN)], "pip install -e ."


def test_the_fixture_needs_no_import_and_no_conftest(run: Run) -> None:
    run().assert_outcomes(passed=2)


def test_a_conftest_that_still_imports_it_works_too(pytester: pytest.Pytester, run: Run) -> None:
    # The way the README said before the plugin existed: no "fixture defined twice" trouble.
    pytester.makeconftest("from htevents_logging.testing import htevents_events  # noqa: F401")
    run().assert_outcomes(passed=2)


def test_a_conftest_that_names_the_plugin_works_too(pytester: pytest.Pytester, run: Run) -> None:
    # pytest_plugins finds it registered already, instead of failing with "Plugin already
    # registered under a different name" (what an entry point named otherwise would do).
    pytester.makeconftest(f"pytest_plugins = [{PLUGIN!r}]")
    result = run()
    result.assert_outcomes(passed=2)
    assert "already registered" not in result.stderr.str()


def test_the_plugin_named_on_the_command_line_works_too(run: Run) -> None:
    run("-p", PLUGIN).assert_outcomes(passed=2)


def test_with_autoloading_off_it_is_asked_for_by_name(
    run: Run,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 skips every entry point: then -p brings the fixture.
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    without = run()
    without.assert_outcomes(errors=2)
    without.stdout.fnmatch_lines(["*fixture 'htevents_events' not found*"])
    run("-p", PLUGIN).assert_outcomes(passed=2)


def test_the_plugin_can_be_switched_off_like_any_other(run: Run) -> None:
    result = run("-p", f"no:{PLUGIN}")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*fixture 'htevents_events' not found*"])


def test_importing_the_testing_module_does_not_import_pytest() -> None:
    result = run_python(
        "-c",
        "import sys; import htevents_logging.testing; print('pytest' in sys.modules)",
    )
    assert result.stdout.strip() == "False", result.stderr
