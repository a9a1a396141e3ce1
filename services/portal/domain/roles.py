"""Whether the signed-in account is a council officer, remembered in a signed cookie.

The portal keeps its session in the browser (the session cookie holds accounts' token), so
it remembers what it learnt about the account there too: `officer <council>` or
`traveller`, with an HMAC of that answer bound to the session, so a cookie of another
session, or one edited to say officer, is worth nothing. It only decides which links and
pages the portal offers: accounts checks the officer role on every OfficerService call.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

OFFICER = "officer"
TRAVELLER = "traveller"


@dataclass(frozen=True, slots=True)
class Role:
    """What the account is: an officer of `council`, or a traveller (council empty)."""

    kind: str
    council: str = ""

    @property
    def officer(self) -> bool:
        """True for a council officer."""
        return self.kind == OFFICER


def _mac(secret: bytes, session: str, answer: str) -> str:
    message = b"clearway-portal-role\x00" + session.encode() + b"\x00" + answer.encode()
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def role_cookie(secret: bytes, session: str, role: Role) -> str:
    """The cookie value remembering `role` for this session."""
    answer = f"{role.kind}:{role.council}"
    return f"{answer}.{_mac(secret, session, answer)}"


def role_from_cookie(secret: bytes, session: str, value: str) -> Role | None:
    """The role remembered for this session; None when absent, forged or another's."""
    answer, dot, mac = value.rpartition(".")
    if not session or not dot or not hmac.compare_digest(_mac(secret, session, answer), mac):
        return None
    kind, _, council = answer.partition(":")
    if kind not in (OFFICER, TRAVELLER):
        return None
    return Role(kind, council if kind == OFFICER else "")
