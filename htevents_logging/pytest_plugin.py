"""The pytest plugin: the ``htevents_events`` fixture, with nothing to import.

Installing the package registers this module through the ``pytest11`` entry point, so any test
can ask for the fixture::

    def test_checkout_sends_order_completed(htevents_events):
        checkout(cart)
        assert htevents_events[0]["event"] == "Order completed"

The entry point carries this module's name, ``htevents_logging.pytest_plugin``: that is the name
to switch it off (``-p no:htevents_logging.pytest_plugin``) or to ask for it where plugin
autoloading is off (``-p htevents_logging.pytest_plugin``, or ``pytest_plugins`` in a
``conftest.py``), and naming it again never registers it twice. It is a module of its own so
that ``import htevents_logging.testing`` never imports pytest.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .testing import capture_events
from .typing import Message

__all__ = ["htevents_events"]


@pytest.fixture
def htevents_events() -> Iterator[list[Message]]:
    """Every Hightouch Events message built during the test, in order; none is sent.

    The list receives what any client, handler or processor of the process would send, in its
    wire form, as soon as the call returns (see ``htevents_logging.testing.capture_events``).
    """
    with capture_events() as events:
        yield events
