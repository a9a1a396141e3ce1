"""CSRF tokens: an HMAC of the browser's CSRF seed and its session (signed double submit).

The seed is a random value in its own cookie; the form carries HMAC(secret, seed,
session). A forged cross-site POST carries the cookies but cannot read the page, so it
cannot know the token; a planted seed cookie is useless without the secret; binding the
session means a token taken before sign-in stops working after it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac


def csrf_token(secret: bytes, seed: str, session: str) -> str:
    """The token a form must carry for this seed and session (session '' when signed out)."""
    message = b"clearway-portal-csrf\x00" + seed.encode() + b"\x00" + session.encode()
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def csrf_valid(secret: bytes, seed: str, session: str, submitted: str) -> bool:
    """True when `submitted` is this seed's and session's token (constant-time compare)."""
    if not seed or not submitted:
        return False
    return hmac.compare_digest(csrf_token(secret, seed, session), submitted)
