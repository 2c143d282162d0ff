"""Field value coercion and rendering, and the Event rules of reference §3.2 (pure, no store access)."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from bridge import sfid
from bridge.emulator.contracts import ApiError
from bridge.emulator.schema import TEXT_TYPES, FieldDef, ObjectDef

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
DAY_MINUTES = 1440
MULTIDAY_MINUTES = 14 * DAY_MINUTES
_DT = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?"
    r"(Z|[+-]\d{2}:?\d{2})?$"
)


def parse_datetime(text: str) -> datetime:
    """Parse ISO-8601 with `Z`, `+hh:mm` or `+hhmm` (no offset means UTC) into an aware UTC datetime."""
    m = _DT.match(text.strip())
    if not m:
        raise ValueError(f"not a datetime: {text!r}")
    y, mo, d, h, mi, s, frac, tz = m.groups()
    micro = int((frac or "0").ljust(6, "0")[:6])
    value = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s or 0), micro, tzinfo=UTC)
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        digits = tz[1:].replace(":", "")
        value -= sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return value


def render_rest(value: Any) -> Any:
    """A stored value as REST JSON: datetimes as `2024-06-12T15:00:00.000+0000`."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}+0000"
    if isinstance(value, date):
        return value.isoformat()
    return value


def render_cdc(value: Any) -> Any:
    """A stored value as CometD change-event JSON: datetimes as `2024-06-12T15:00:00.000Z`."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    if isinstance(value, date):
        return value.isoformat()
    return value


def _type_error(f: FieldDef, value: Any) -> ApiError:
    return ApiError(
        400, "INVALID_TYPE_ON_FIELD_IN_RECORD", f"{f.label}: value not of required type: {value}", [f.name]
    )


def coerce(f: FieldDef, value: Any) -> Any:
    """Convert a JSON input value for field `f` to its stored Python form, or raise ApiError."""
    if value is None or (value == "" and f.type not in TEXT_TYPES):
        return None
    converter = _CONVERTERS.get(f.type, _text)
    try:
        return converter(f, value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise _type_error(f, value) from exc


def _text(f: FieldDef, value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise TypeError("not text")
    text = str(value)
    if text == "":
        return None
    if f.length and len(text) > f.length:
        shown = text[:20] + ("..." if len(text) > 20 else "")
        raise ApiError(
            400,
            "STRING_TOO_LONG",
            f"{f.label}: data value too large: {shown} (max length={f.length})",
            [f.name],
        )
    if f.type == "email" and not _EMAIL.match(text):
        raise ApiError(400, "INVALID_EMAIL_ADDRESS", f"{f.label}: invalid email address: {text}", [f.name])
    if f.picklist and text not in f.picklist:
        raise ApiError(
            400,
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            f"{f.label}: bad value for restricted picklist field: {text}",
            [f.name],
        )
    return text


def _bool(f: FieldDef, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise TypeError("not boolean")


def _int(f: FieldDef, value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError("not a number")
    number = float(value)
    if number != int(number):
        raise ValueError("not an integer")
    return int(number)


def _float(f: FieldDef, value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError("not a number")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError("not a finite number")
    return number


def _date(f: FieldDef, value: Any) -> date:
    if not isinstance(value, str):
        raise TypeError("not a date")
    return date.fromisoformat(value.strip()[:10])


def _datetime(f: FieldDef, value: Any) -> datetime:
    if not isinstance(value, str):
        raise TypeError("not a datetime")
    return parse_datetime(value).replace(microsecond=0)  # datetime fields keep whole seconds


@functools.lru_cache(maxsize=1 << 16)
def canonical_id(value: str) -> str:
    """sfid.to18, memoised: the same few parent ids arrive on every record of a batch."""
    return sfid.to18(value)


def _ref(f: FieldDef, value: Any) -> str:
    try:
        return canonical_id(value)
    except (ValueError, AttributeError, TypeError):
        raise ApiError(
            400, "MALFORMED_ID", f"{f.id_label}: id value of incorrect type: {value}", [f.name]
        ) from None


_CONVERTERS: Mapping[str, Callable[[FieldDef, Any], Any]] = {
    "boolean": _bool,
    "int": _int,
    "double": _float,
    "currency": _float,
    "percent": _float,
    "date": _date,
    "datetime": _datetime,
    "reference": _ref,
    "id": _ref,
}


def decode_stored(f: FieldDef, value: Any) -> Any:
    """Inverse of `encode_stored` for values read back from the state file."""
    if value is None or f.type not in ("datetime", "date"):
        return value
    if f.type == "datetime":
        return datetime.fromisoformat(value)  # written by encode_stored: isoformat with +00:00
    return date.fromisoformat(value)


def encode_stored(value: Any) -> Any:
    """A stored value as plain JSON for the state file."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def bad_type(f: FieldDef, target: str) -> ApiError:
    """FIELD_INTEGRITY_EXCEPTION for a lookup pointing at an object it does not accept."""
    return ApiError(
        400, "FIELD_INTEGRITY_EXCEPTION", f"{f.id_label}: id value of incorrect type: {target}", [f.name]
    )


@dataclass(frozen=True, slots=True)
class EventRules:
    """The org switches that change Event validation."""

    lead_whatid_rule: bool
    multiday_events: bool


def derive_event(values: dict[str, Any], given: set[str], rules: EventRules) -> None:
    """Check and complete an Event's time fields in place (reference §3.2); `given`: fields set now."""
    if values.get("IsAllDayEvent"):
        _derive_all_day(values, given)
    else:
        _derive_timed(values, given)
    duration = values.get("DurationInMinutes")
    cap = MULTIDAY_MINUTES if rules.multiday_events else DAY_MINUTES
    if duration is not None and not 0 <= duration <= cap:
        raise ApiError(
            400,
            "FIELD_INTEGRITY_EXCEPTION",
            f"Duration must be between 0 and {cap} minutes",
            ["DurationInMinutes"],
        )
    if (
        (values.get("WhoId") or "")[:3] == sfid.LEAD_PREFIX
        and values.get("WhatId")
        and rules.lead_whatid_rule
    ):
        raise ApiError(
            400,
            "FIELD_INTEGRITY_EXCEPTION",
            "Related To ID: Related To must be empty when Name is a Lead",
            ["WhatId"],
        )


def _derive_timed(values: dict[str, Any], given: set[str]) -> None:
    start, activity = values.get("StartDateTime"), values.get("ActivityDateTime")
    if "StartDateTime" in given or "ActivityDateTime" not in given:
        activity = values["ActivityDateTime"] = start
    elif "ActivityDateTime" in given:
        start = values["StartDateTime"] = activity
    if start is None:
        raise ApiError(
            400, "REQUIRED_FIELD_MISSING", "Required fields are missing: [StartDateTime]", ["StartDateTime"]
        )
    end, duration = values.get("EndDateTime"), values.get("DurationInMinutes")
    end_given, duration_given = "EndDateTime" in given and end is not None, "DurationInMinutes" in given
    if end_given and duration_given and duration is not None:
        if end != start + timedelta(minutes=duration):
            raise ApiError(
                400,
                "FIELD_INTEGRITY_EXCEPTION",
                "End Date Time and Duration are inconsistent",
                ["EndDateTime", "DurationInMinutes"],
            )
    elif end is not None and (end_given or duration is None):
        duration = _minutes(start, end)
    elif duration is not None:
        end = start + timedelta(minutes=duration)
    else:
        raise ApiError(
            400,
            "REQUIRED_FIELD_MISSING",
            "Required fields are missing: [DurationInMinutes]",
            ["DurationInMinutes"],
        )
    values["EndDateTime"], values["DurationInMinutes"] = end, duration
    values["ActivityDate"] = start.astimezone(UTC).date()


def _minutes(start: datetime, end: datetime) -> int:
    if end < start:
        raise ApiError(
            400,
            "FIELD_INTEGRITY_EXCEPTION",
            "End Date Time can't be earlier than Start Date Time",
            ["EndDateTime"],
        )
    return int((end - start).total_seconds() // 60)


def _derive_all_day(values: dict[str, Any], given: set[str]) -> None:
    day = values.get("ActivityDate")
    if day is None or ("StartDateTime" in given and "ActivityDate" not in given):
        start = values.get("StartDateTime") or values.get("ActivityDateTime")
        if start is None:
            raise ApiError(
                400, "REQUIRED_FIELD_MISSING", "Required fields are missing: [ActivityDate]", ["ActivityDate"]
            )
        day = start.astimezone(UTC).date()
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    duration = values.get("DurationInMinutes")
    end = values.get("EndDateTime") if "EndDateTime" in given else None
    if end is not None and "DurationInMinutes" not in given:
        duration = _minutes(start, end) or DAY_MINUTES
    duration = duration or DAY_MINUTES
    values.update(
        ActivityDate=day,
        StartDateTime=start,
        ActivityDateTime=None,
        DurationInMinutes=duration,
        EndDateTime=start + timedelta(minutes=duration),
    )


def full_name(values: Mapping[str, Any]) -> str:
    """The derived Name of a person record (User, Contact, Lead)."""
    return " ".join(p for p in (values.get("FirstName"), values.get("LastName")) if p)


def required_missing(obj: ObjectDef, values: Mapping[str, Any]) -> ApiError | None:
    """REQUIRED_FIELD_MISSING naming every required field without a value, or None."""
    missing = [f.name for f in obj.fields.values() if f.required and values.get(f.name) is None]
    if not missing:
        return None
    return ApiError(
        400, "REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]", missing
    )
