"""The web console: Account Management → Voice Application Management, the delivery log and
an overview, server-rendered (Jinja2, a vendored htmx) and served by ``ccpush serve``."""

from ccpush.web.app import create_console

__all__ = ["create_console"]
