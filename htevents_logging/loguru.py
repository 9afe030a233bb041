"""The loguru front-end: ``logger.add(HtEventsSink(...))``.

::

    from loguru import logger
    from htevents_logging.loguru import HtEventsSink

    logger.add(HtEventsSink(write_key="..."))
    logger.info("Order completed", htevent={"userId": "123", "properties": {"total": 29.99}})

Importing this module does not import loguru (a sink is any object with ``write``).
"""

from ._frontends.loguru_sink import HtEventsSink

__all__ = ["HtEventsSink"]
