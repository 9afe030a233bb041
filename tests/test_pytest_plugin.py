"""The ``htevents_events`` fixture comes with the package: a test asks for it, with no import.

Each case runs pytest on a fresh directory with ``pytester``, in a subprocess, so the plugin is
loaded the way a user's test run loads it: through the ``pytest11`` entry point.
"""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

USES_THE_FIXTURE = """
from htevents_logging import HtEvents

def test_checkout_sends_order_completed(htevents_events):
    HtEvents(write_key="k", host="http://127.0.0.1:9").track(user_id="1", event="Order completed")
    assert [e["event"] for e in htevents_events] == ["Order completed"]

def test_each_test_gets_its_own_list(htevents_events):
    assert htevents_events == []
"""


def test_the_fixture_needs_no_import_and_no_conftest(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_checkout=USES_THE_FIXTURE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_a_conftest_that_still_imports_it_works_too(pytester: pytest.Pytester) -> None:
    # The way the README said before the plugin existed: no "fixture defined twice" trouble.
    pytester.makeconftest("from htevents_logging.testing import htevents_events  # noqa: F401")
    pytester.makepyfile(test_checkout=USES_THE_FIXTURE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_the_plugin_can_be_switched_off_like_any_other(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_checkout=USES_THE_FIXTURE)
    result = pytester.runpytest_subprocess("-p", "no:htevents_logging")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*fixture 'htevents_events' not found*"])


def test_importing_the_testing_module_does_not_import_pytest() -> None:
    from helpers import run_python

    result = run_python(
        "-c",
        "import sys; import htevents_logging.testing; print('pytest' in sys.modules)",
    )
    assert result.stdout.strip() == "False", result.stderr
