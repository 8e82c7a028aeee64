"""The contract's codes: the values the push document gives for ``callType``,
``hangupReason`` and ``hangingDirection``. Standard library only, so the receiver kit
can use them without the server's dependencies. Values not listed here are accepted and
pushed as they are: treat them as "other".
"""

from enum import IntEnum

__all__ = ["CallType", "HangingDirection", "HangupReason"]


class CallType(IntEnum):
    GROUP_CALL_TO_AGENT = 1
    INCOMING = 2
    OUTGOING = 3


class HangupReason(IntEnum):
    OUTGOING_NOT_ANSWERED = 0
    OUTGOING_HUNG_UP = 1
    TRANSFER_RINGING_HUNG_UP = 2
    TRANSFER_SUCCESSFUL_HUNG_UP = 3
    CALL_ABNORMALITY = 4
    CALLED_OPERATOR_NO_SERVICE = 5
    CALLED_NOT_IN_SERVICE_AREA = 6
    CALLED_BUSY = 7
    INCOMING_NOT_ANSWERED = 8
    INCOMING_HUNG_UP = 9


class HangingDirection(IntEnum):
    CUSTOMER = 0
    AGENT = 1
    SYSTEM = 3
