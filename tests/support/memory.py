"""The peak resident memory of this process over a stretch of a test: the
tests' servers run in the test's own process, so what a hostile client makes
them hold shows here. Linux only: the kernel's high-water mark (``VmHWM``)
is reset through ``/proc/self/clear_refs`` (proc(5), value 5)."""

from __future__ import annotations

from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} is not in {_STATUS}: these tests need Linux's /proc")


class PeakMemory:
    """``with PeakMemory() as peak: ...`` then ``peak.growth_mib``: how far
    the resident set rose above where it stood at the start."""

    def __init__(self) -> None:
        self.start_kib = 0
        self.peak_kib = 0

    def __enter__(self) -> PeakMemory:
        _CLEAR_REFS.write_text("5")  # the high-water mark starts again from now
        self.start_kib = _status_kib("VmRSS")
        return self

    def __exit__(self, *exc: object) -> None:
        self.peak_kib = _status_kib("VmHWM")

    @property
    def growth_mib(self) -> float:
        return max(0, self.peak_kib - self.start_kib) / 1024
