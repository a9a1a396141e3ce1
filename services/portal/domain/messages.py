"""What the portal tells a traveller for each accounts reason code and notice."""

from __future__ import annotations

REASON_MESSAGES = {
    "BAD_CREDENTIALS": "That email address and password do not match an account.",
    "SIGN_IN_RATE_LIMITED": (
        "Too many failed sign-ins for this email address. Wait 15 minutes, or reset your password."
    ),
    "EMAIL_TAKEN": "There is already an account with this email address. Sign in instead.",
    "MISSING_EMAIL": "Enter your email address.",
    "BAD_EMAIL": "Enter an email address like name@example.org.",
    "WEAK_PASSWORD": "Choose a password of at least 12 characters.",
    "BAD_PASSWORD": "Choose a password of at most 256 characters.",
    "BAD_RESET_TOKEN": ("That reset code is unknown, already used or expired. Ask for a new one."),
    "MISSING_CARD_TOKEN": "Enter the card's token.",
    "BAD_CARD_TOKEN": (
        "That is not a card token. It starts with sc_, bk_ or tok_, as on your statement."
    ),
    "RAW_CARD_NUMBER": (
        "That looks like a card number. Never enter your card number: enter the card's "
        "token (sc_, bk_ or tok_) instead."
    ),
    "CARD_TAKEN": "That card belongs to another account.",
    "NOT_YOUR_CARD": "That card is not one of yours.",
    "BAD_PAGE_TOKEN": "That page link is not valid. Start again from your newest journeys.",
    "BAD_PAGE_SIZE": "That page link is not valid. Start again from your newest journeys.",
    "MISMATCHED_PASSWORDS": "The two passwords are not the same.",
}
DEFAULT_MESSAGE = "Something went wrong. Please try again."

# Fixed notices shown after a redirect (`?notice=<key>`): only these keys, so a link can
# never put words of its own on the page.
NOTICES = {
    "signed-up": "Your account is ready. Sign in to add your cards.",
    "signed-out": "You have signed out.",
    "session-ended": "Your session has ended. Please sign in again.",
    "reset-sent": (
        "If there is an account for that address, we have sent it a reset code. It is valid "
        "for 30 minutes."
    ),
    "password-reset": "Your password has been changed. Sign in with the new one.",
    "card-added": "Card added.",
    "card-known": "That card was already on your account.",
    "card-removed": "Card removed.",
}


def message_for(code: str | None) -> str:
    """The friendly text of a reason code (a generic one for codes it does not know)."""
    return REASON_MESSAGES.get(code or "", DEFAULT_MESSAGE)


def notice_for(key: str | None) -> str | None:
    """The notice for a `?notice=` key; None for an unknown key."""
    return NOTICES.get(key or "")
