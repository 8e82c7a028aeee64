"""Who made a change, for the audit log: the ``Audit`` dependency gives each route an
``AuditEntry`` naming its caller (``admin``, or a key's id and name) and the client's
address, which the route hands to the store method that makes the change (``audit=``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ccpush.api.auth import AnyCaller, Caller, client_address
from ccpush.api.deps import ServiceDep
from ccpush.audit import ADMIN, AuditEntry
from ccpush.service import Service


def entry_for(caller: Caller, source: str | None, service: Service) -> AuditEntry:
    """An entry's who: ``caller``, from ``source``, now."""
    return AuditEntry(
        at=service.clock.now(),
        actor=caller.key_id or ADMIN,
        actor_name=caller.key_name,
        source=source,
        account_id=caller.account_id,
    )


async def audit_entry(request: Request, caller: AnyCaller, service: ServiceDep) -> AuditEntry:
    return entry_for(caller, client_address(request), service)


Audit = Annotated[AuditEntry, Depends(audit_entry)]
