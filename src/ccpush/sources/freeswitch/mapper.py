"""A decoded CDR as a call record (``map_cdr``): each field from its sources and rules,
every problem named by the record's field and the variable read."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any, Final

from pydantic import ValidationError

from ccpush.codes import CallType
from ccpush.record import CallRecord, Problem, problems_from
from ccpush.sources.freeswitch.call import Call, UnmappableCdr, whole_number
from ccpush.sources.freeswitch.mapping import FreeswitchMapping
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
from ccpush.wire import TIME_FORMAT


@dataclass(frozen=True, slots=True)
class MappedCdr:
    """A CDR's record, and the app its ``app_variable`` names (None: it names none)."""

    record: CallRecord
    app_id: str | None


@dataclass(frozen=True, slots=True)
class Ignored:
    """A CDR whose leg is not pushed, and why."""

    reason: str


def map_cdr(
    cdr: Mapping[str, Any], mapping: FreeswitchMapping, *, record_zone: tzinfo
) -> MappedCdr | Ignored:
    """The record of a decoded CDR (``read_cdr``), its times in ``record_zone``; or why
    its leg is not pushed. ``UnmappableCdr`` lists every problem, by record field."""
    call = Call.of(cdr)
    reason = ignored_leg(call, mapping.legs)
    if reason is not None:
        return Ignored(reason)
    builder = _RecordBuilder(call, mapping, record_zone)
    record = builder.build()
    return MappedCdr(record=record, app_id=call.get(mapping.app_variable))


_TEXT_FIELDS: Final = (
    "callId",
    "calledInfo",
    "caller",
    "called",
    "agentName",
    "agentGroupName",
    "agentAccount",
    "remark",
    "baseCost",
    "cost",
)


class _RecordBuilder:
    """One CDR's record, built field by field, remembering where each value came from
    (to name it when the record is refused) and every problem met."""

    def __init__(self, call: Call, mapping: FreeswitchMapping, record_zone: tzinfo) -> None:
        self.call = call
        self.mapping = mapping
        self.record_zone = record_zone
        self.switch_zone = mapping.switch_zone or record_zone
        self.values: dict[str, Any] = {}
        self.origins: dict[str, str] = {}
        self.problems: list[Problem] = []

    def build(self) -> CallRecord:
        self.values["callSessionId"] = self._text("callSessionId", required=True)
        for name in _TEXT_FIELDS:
            self.values[name] = self._text(name)
        self._country()
        self._labels()
        self._hangup_code()
        answered = self._times()
        self._outcome(answered)
        self._voice_url(answered)
        if self.problems:
            raise UnmappableCdr(self.problems)
        try:
            return CallRecord.model_validate(self.values)
        except ValidationError as exc:
            raise UnmappableCdr([self._sourced(p) for p in problems_from(exc)]) from None

    def _sources(self, name: str) -> tuple[str, ...]:
        sources: tuple[str, ...] = getattr(self.mapping.fields, name)
        return sources

    def _text(self, name: str, *, required: bool = False) -> str | None:
        found = self.call.first(self._sources(name))
        if found is None:
            if required:
                names = ", ".join(self._sources(name))
                self._problem(name, f"none of its sources has a value: {names}")
            return None
        self.origins[name] = found[0]
        return found[1]

    def _problem(self, name: str, reason: str) -> None:
        self.problems.append(Problem(field=name, reason=reason))

    def _sourced(self, problem: Problem) -> Problem:
        origin = self.origins.get(problem.field)
        if origin is None:
            return problem
        return Problem(field=problem.field, reason=f"{problem.reason} (read from {origin})")

    def _country(self) -> None:
        found = country_of(self.values["called"], self.mapping.country)
        self.values["ccode"], self.values["ccodeName"] = found or (None, None)

    def _labels(self) -> None:
        text = self._text("labels")
        parts = text.split(self.mapping.labels.separator) if text is not None else []
        self.values["labels"] = [part.strip() for part in parts if part.strip()]

    def _hangup_code(self) -> None:
        for source in self._sources("hangupCode"):
            value = self.call.get(source)
            status = sip_status(value) if value is not None else None
            if status is not None:
                self.values["hangupCode"] = status
                self.origins["hangupCode"] = source
                return
        self.values["hangupCode"] = None

    def _times(self) -> bool:
        """The three times and ``callDuration``; whether the call was answered (for a
        queue member: whether an agent answered)."""
        start = self._instant("callStartTime", "start", required=True)
        end = self._instant("callEndTime", "end", required=True)
        queued = is_queue_call(self.call)
        answer = self._instant("answerTime", "cc_queue_answered" if queued else "answer")
        for name, moment in (
            ("callStartTime", start),
            ("answerTime", answer),
            ("callEndTime", end),
        ):
            self.values[name] = self._wall_clock(moment)
        billsec = whole_number(self.call.get("billsec"))
        if not queued and billsec is not None:
            self.values["callDuration"] = billsec
        elif answer is not None and end is not None:
            self.values["callDuration"] = max(0, int((end - answer).total_seconds()))
        else:
            self.values["callDuration"] = 0
        return answer is not None

    def _instant(self, name: str, base: str, *, required: bool = False) -> datetime | None:
        """A CDR time: ``<base>_epoch``, ``<base>_uepoch``, else ``<base>_stamp`` read in
        the switch's zone; None when absent or 0 (not answered)."""
        for suffix, per_second in (("_epoch", 1), ("_uepoch", 1_000_000)):
            text = self.call.get(base + suffix)
            if text is None:
                continue
            number = whole_number(text)
            if number is None:
                self._problem(name, f"{base}{suffix} is not a number of seconds: {text[:40]!r}")
                return None
            return self._epoch(name, base + suffix, number // per_second, required)
        stamp = self.call.get(base + "_stamp")
        if stamp is not None:
            try:
                return datetime.strptime(stamp, TIME_FORMAT).replace(tzinfo=self.switch_zone)
            except ValueError:
                self._problem(name, f"{base}_stamp is not yyyy-MM-dd HH:mm:ss: {stamp[:40]!r}")
                return None
        if required:
            self._problem(name, f"the CDR has none of {base}_epoch, {base}_uepoch, {base}_stamp")
        return None

    def _epoch(self, name: str, variable: str, seconds: int, required: bool) -> datetime | None:
        if seconds == 0:  # FreeSWITCH's "never" (an answer time of an unanswered call)
            if required:
                self._problem(name, f"{variable} is 0")
            return None
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            self._problem(name, f"{variable} is out of range: {seconds}")
            return None

    def _wall_clock(self, moment: datetime | None) -> str | None:
        return moment.astimezone(self.record_zone).strftime(TIME_FORMAT) if moment else None

    def _outcome(self, answered: bool) -> None:
        rule = self.mapping.call_type
        kind = call_type(self.call, rule)
        if kind is None:
            names = ", ".join(rule.direction_variables)
            reason = f"not a queue call, and none of {names} has a value of [call_type.directions]"
            self._problem("callType", reason)
            return
        self.values["callType"] = kind
        outgoing = kind == CallType.OUTGOING
        self.values["hangupReason"] = hangup_reason(
            outgoing=outgoing,
            answered=answered,
            cause=self.call.get("hangup_cause"),
            q850=self.call.get("hangup_cause_q850"),
            transferred=self.call.first(self.mapping.hangup_reason.transfer_variables) is not None,
            transfer_answered=(self.call.get("DIALSTATUS") or "").upper() == "SUCCESS",
            causes=self.mapping.hangup_reason.causes,
        )
        found = self.call.first(self.mapping.hanging_direction.variables)
        bridge = whole_number(self.call.get("bridge_epoch"))
        bridged = bool(bridge or self.call.get("last_bridge_to"))
        self.values["hangingDirection"] = hanging_direction(
            found[1] if found else None,
            a_leg_is_agent=outgoing and self.call.get("direction") == "inbound",
            bridged=bridged,
        )

    def _voice_url(self, answered: bool) -> None:
        found = self._text("voiceUrl")
        if found is None or not answered:
            self.values["voiceUrl"] = None
            return
        self.values["voiceUrl"] = recording_url(found, self.mapping.recording_base_url)
