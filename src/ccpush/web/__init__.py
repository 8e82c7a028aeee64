"""The web console: Account Management → Voice Application Management, the delivery log, an
app's overview and the account's keys; for the operator, every account at once, the
accounts and the platform keys. Server-rendered (Jinja2, a vendored htmx) and served by
``ccpush serve``."""

from ccpush.web.app import create_console

__all__ = ["create_console"]
