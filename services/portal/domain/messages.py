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
    "MISSING_AMOUNT": "Enter an amount to top up, in pounds and pence, like 10.00.",
    "AMOUNT_FORMAT": "Enter the amount in pounds and pence, like 10.00.",
    "BAD_AMOUNT": "Enter an amount from £0.01 up to {max}.",
    "CURRENCY_MISMATCH": "Top-ups are in the scheme's currency only.",
    "IDEMPOTENCY_KEY_REUSED": (
        "That form was already used for another top-up, so nothing was added this time. "
        "Check the balance below and use the form again if you still want to top up."
    ),
    "BAD_IDEMPOTENCY_KEY": "This form has expired. Enter the amount again.",
    "MISSING_JOURNEY_ID": "Choose the journey whose exit is missing.",
    "BAD_EXIT_STOP": "Choose the stop where you left.",
    "UNKNOWN_STOP": "That stop is not on our network. Choose the stop where you left.",
    "BAD_EXIT_TIME": "That exit time is not possible for this journey.",
    "UNKNOWN_JOURNEY": "We could not find that journey on this card.",
    "CLAIM_EXISTS": "You have already claimed this journey's exit. See its outcome below.",
    "NOT_INCOMPLETE": "That journey already has an exit, so there is nothing to claim.",
    "CLAIM_TOO_LATE": "That journey is too old to claim online.",
    "JOURNEY_CHANGED": "That journey has just been updated. Check it and claim again.",
    "FARES_UNAVAILABLE": "We cannot check claims right now. Please try again in a minute.",
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
    "topped-up": "Top-up done. Your new balance is below.",
    "top-up-replayed": "That top-up was already done; nothing more was added.",
    "granted": "Entitlement granted. It is at the top of the list below.",
    "grant-replayed": "That grant was already made; nothing more was granted.",
    "revoked": "Entitlement revoked. It can no longer be spent.",
    "rewarded": "Reward credited.",
    "reward-replayed": "That reward was already credited; nothing more was added.",
    "claim-made": (
        "Claim received. We re-price the journey with the exit you gave; any refund appears "
        "in your journeys and balance within a few minutes."
    ),
}


def message_for(code: str | None) -> str:
    """The friendly text of a reason code (a generic one for codes it does not know)."""
    return REASON_MESSAGES.get(code or "", DEFAULT_MESSAGE)


def top_up_message(code: str | None, max_amount: str) -> str:
    """The text of a top-up refusal; `max_amount` is the largest top-up, e.g. '£500.00'."""
    return message_for(code).replace("{max}", max_amount)


def notice_for(key: str | None) -> str | None:
    """The notice for a `?notice=` key; None for an unknown key."""
    return NOTICES.get(key or "")
