"""FreeSWITCH's JSON CDRs (``mod_json_cdr``) as call records.

``map_cdr`` is a pure function of a decoded CDR (``read_cdr`` decodes what the module
POSTs) and a ``FreeswitchMapping``: ``POST /v1/sources/freeswitch`` uses it, and so does a
broker source of ``format=freeswitch``. The README (*FreeSWITCH*) explains the mapping
field by field; ``DEFAULT_MAPPING`` is its TOML, which a file
(``CCPUSH_FREESWITCH_MAPPING``) changes key by key.

A CDR, as FreeSWITCH writes it (``switch_ivr_generate_json_cdr``):

* ``variables``: the channel's variables, each a string, percent-encoded by default
  (``encode-values``), which ``switch_url_encode`` does without encoding ``%XX`` again;
* ``callflow``: the channel's caller profiles, newest first; an array since FreeSWITCH
  1.6, before it the key ``callflow`` once per profile. The newest profile of a B-leg
  (a channel another one originated) has an ``originator``;
* times as ``<name>_epoch`` and ``<name>_uepoch`` (seconds and microseconds since 1970,
  UTC) and ``<name>_stamp`` (the switch's local time, ``yyyy-MM-dd HH:mm:ss``).
"""

from ccpush.sources.freeswitch.call import (
    BASE64_FORM_TYPE,
    FORM_TYPE,
    JSON_TYPE,
    MEDIA_TYPES,
    Call,
    UnmappableCdr,
    UnreadableCdr,
    decode_cdr_json,
    read_cdr,
)
from ccpush.sources.freeswitch.mapper import Ignored, MappedCdr, map_cdr
from ccpush.sources.freeswitch.mapping import (
    DEFAULT_APP_VARIABLE,
    DEFAULT_MAPPING,
    CallTypeRule,
    CountryRule,
    FreeswitchMapping,
    HangupReasonRule,
    LegsRule,
)
from ccpush.sources.freeswitch.rules import (
    call_type,
    country_of,
    hanging_direction,
    hangup_reason,
    ignored_leg,
    is_queue_call,
    recording_url,
    sip_status,
)

__all__ = [
    "BASE64_FORM_TYPE",
    "DEFAULT_APP_VARIABLE",
    "DEFAULT_MAPPING",
    "FORM_TYPE",
    "JSON_TYPE",
    "MEDIA_TYPES",
    "Call",
    "CallTypeRule",
    "CountryRule",
    "FreeswitchMapping",
    "HangupReasonRule",
    "Ignored",
    "LegsRule",
    "MappedCdr",
    "UnmappableCdr",
    "UnreadableCdr",
    "call_type",
    "country_of",
    "decode_cdr_json",
    "hanging_direction",
    "hangup_reason",
    "ignored_leg",
    "is_queue_call",
    "map_cdr",
    "read_cdr",
    "recording_url",
    "sip_status",
]
