"""Send one of each message with the client, the Python port of Hightouch's Node.js SDK.

Try it without a write key or network: start a local collector in one terminal,

    htevents-logging collect --port 8787

and run this in another:

    HT_WRITE_KEY=dev HT_HOST=http://127.0.0.1:8787 python examples/send_each_call.py
"""

from __future__ import annotations

import os

from htevents_logging import HtEvents


def main() -> int:
    htevents = HtEvents(
        write_key=os.environ.get("HT_WRITE_KEY"),
        host=os.environ.get("HT_HOST", "https://us-east-1.hightouch-events.com"),
    )

    def report(error, message):  # runs on the background thread, once per message
        print(f"{message['type']:<9} {'failed: ' + str(error) if error else 'delivered'}")

    # The seed's form: a mapping in camelCase, and an optional callback.
    htevents.identify({"userId": "123", "traits": {"location": "San Francisco"}}, report)
    htevents.track(
        {"userId": "123", "event": "Order completed", "properties": {"total": 29.99}}, report
    )
    # The keyword form: snake_case.
    htevents.page(user_id="123", name="Pricing", category="Docs", callback=report)
    htevents.screen(user_id="123", name="Home", callback=report)
    htevents.group(user_id="123", group_id="acme", traits={"plan": "enterprise"}, callback=report)
    htevents.alias(user_id="123", previous_id="anon-42", callback=report)

    delivered = htevents.close(timeout=10)  # flush, then stop the thread
    print(htevents.stats())
    return 0 if delivered else 1


if __name__ == "__main__":
    raise SystemExit(main())
