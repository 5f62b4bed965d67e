"""The blob lifecycle: which stored blobs nothing names any more, and freeing
them without ever freeing one that a copy, an upload or a queued item names
(decision 0018). Works through the storage interfaces only."""

from mailfleet.blobs.sweep import BlobSweep, BlobSweeper, SweepReport, SweepUnsafe

__all__ = ["BlobSweep", "BlobSweeper", "SweepReport", "SweepUnsafe"]
