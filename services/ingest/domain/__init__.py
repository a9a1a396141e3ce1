"""Ingest domain: what makes a tap acceptable, and the reason codes when it is not."""

from services.ingest.domain.validation import (
    MAX_BATCH_TAPS,
    RejectReason,
    TapSubmission,
    validate_tap,
)

__all__ = ["MAX_BATCH_TAPS", "RejectReason", "TapSubmission", "validate_tap"]
