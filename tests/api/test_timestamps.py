"""Timestamps in answers: RFC 3339, UTC, milliseconds, as the models document."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from mailfleet.api.schemas import rfc3339_ms


@given(st.integers(min_value=0, max_value=253402300799999))  # up to 9999-12-31
def test_rfc3339_ms_agrees_with_datetime(ms: int) -> None:
    expected = datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    assert rfc3339_ms(ms) == f"{expected}.{ms % 1000:03d}Z"
