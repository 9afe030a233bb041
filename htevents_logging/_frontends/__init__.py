"""The logging front-ends: each turns a log record into a message and hands it to a client.

``handler`` (stdlib ``logging``) and ``processor`` (structlog) share ``shared``: the draft a
front-end queues, the rejection warnings, and which client a front-end owns.
"""
