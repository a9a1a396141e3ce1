"""Ingest domain: what makes a tap acceptable, what a card token is, and what a dead letter
may hold. Pure: no I/O."""

from clearway.card_tokens import (
    CardTokenForm,
    bank_card_token,
    card_token_form,
    contains_card_number,
    is_or_contains_card_number,
    looks_like_card_number,
)
from services.ingest.domain.dead_letters import (
    REDACTED,
    bound_field,
    bound_fields,
    matches_original,
    redact_card_token,
)
from services.ingest.domain.validation import (
    DEFAULT_POLICY,
    MAX_BATCH_TAPS,
    REASON_FIELDS,
    REASON_MEANINGS,
    DeviceScope,
    RejectReason,
    TapSubmission,
    ValidationPolicy,
    Verdict,
    classify_card_token,
    id_problem,
    tapped_at_of,
    validate_batch_size,
    validate_tap,
)

__all__ = [
    "DEFAULT_POLICY",
    "MAX_BATCH_TAPS",
    "REASON_FIELDS",
    "REASON_MEANINGS",
    "REDACTED",
    "CardTokenForm",
    "DeviceScope",
    "RejectReason",
    "TapSubmission",
    "ValidationPolicy",
    "Verdict",
    "bank_card_token",
    "bound_field",
    "bound_fields",
    "card_token_form",
    "classify_card_token",
    "contains_card_number",
    "id_problem",
    "is_or_contains_card_number",
    "looks_like_card_number",
    "matches_original",
    "redact_card_token",
    "tapped_at_of",
    "validate_batch_size",
    "validate_tap",
]
