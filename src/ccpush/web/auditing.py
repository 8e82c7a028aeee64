"""Who made a change in the console, for the audit log: the ``ConsoleAudit`` dependency
gives a route an ``AuditEntry`` naming the viewer (``admin``, a key's id and name, or
``portal:<link id>`` for a session opened with a portal link) and the client's address."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

from fastapi import Depends, Request

from ccpush.api.auditing import entry_for
from ccpush.api.auth import client_address
from ccpush.audit import AuditEntry
from ccpush.web.console import ConsoleDep, ViewerDep


async def console_audit(request: Request, console: ConsoleDep, viewer: ViewerDep) -> AuditEntry:
    entry = entry_for(viewer.caller, client_address(request), console.service)
    if viewer.portal is not None:
        return replace(entry, actor=f"portal:{viewer.portal}", actor_name=None)
    return entry


ConsoleAudit = Annotated[AuditEntry, Depends(console_audit)]
