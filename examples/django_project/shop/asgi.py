"""ASGI entry point (uvicorn), wrapped so that the last events are delivered at shutdown.

uvicorn, after its graceful shutdown on SIGTERM, raises SIGTERM again with its default action,
so ``atexit`` never runs. The middleware delivers what is queued at the lifespan shutdown,
which uvicorn runs first; Django has no lifespan of its own, so the middleware serves one.
"""

import os

from django.core.asgi import get_asgi_application

from htevents_logging.contrib.asgi import HtEventsMiddleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
application = HtEventsMiddleware(get_asgi_application())
