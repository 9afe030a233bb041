"""A stand-in for an application module that owns its client, for ``"client": "ext://..."``.

The handler tests point ``htevents`` at a client of their own (with ``monkeypatch``) and then
configure logging with ``"client": "ext://_app_events.htevents"``, as an application would with
``"ext://app.events.htevents"``.
"""

from __future__ import annotations

from typing import Optional

from htevents_logging import HtEvents

htevents: Optional[HtEvents] = None
