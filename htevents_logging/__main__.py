"""``python -m htevents_logging``: the same as the ``htevents-logging`` command."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
