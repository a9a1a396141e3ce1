"""The shipped payment gateway: a simulated acquirer with configurable declines.

It stands in for a real acquirer behind the `PaymentGateway` port. Like a real one it
honours idempotency keys: an attempt sent again with its key answers the first outcome
and never takes the money twice. Declines are configured by token
(`CLEARWAY_ACQUIRER_DECLINE_TOKENS`, comma-separated) or by rule (a token whose SHA-256
mod `CLEARWAY_ACQUIRER_DECLINE_MOD` is 0); `approve`/`decline` flip a token at run time
(tests: the traveller's bank finally pays). Refunds (negative amounts) are always approved.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from clearway.money import Money
from clearway.settings import SettingsError
from services.accounts.service_layer.bank_charging import ChargeResult


@dataclass
class SimulatedAcquirer:
    """A `PaymentGateway` in memory: approves unless the token is set to decline."""

    decline_tokens: set[str] = field(default_factory=set)
    decline_mod: int = 0  # 0: no rule; N: tokens whose sha256 mod N == 0 decline
    approve_tokens: set[str] = field(default_factory=set)  # overrides the rule
    calls: list[tuple[str, int, str]] = field(default_factory=list)
    _outcomes: dict[str, ChargeResult] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SimulatedAcquirer:
        """From CLEARWAY_ACQUIRER_DECLINE_TOKENS and CLEARWAY_ACQUIRER_DECLINE_MOD."""
        env = os.environ if env is None else env
        tokens = {t.strip() for t in env.get("CLEARWAY_ACQUIRER_DECLINE_TOKENS", "").split(",")}
        raw_mod = env.get("CLEARWAY_ACQUIRER_DECLINE_MOD", "0")
        if not raw_mod.isdigit():
            raise SettingsError(f"CLEARWAY_ACQUIRER_DECLINE_MOD must be >= 0, got {raw_mod!r}")
        return cls(decline_tokens={t for t in tokens if t}, decline_mod=int(raw_mod))

    def decline(self, tokens: Iterable[str]) -> None:
        """Make these tokens decline from now on."""
        for token in tokens:
            self.approve_tokens.discard(token)
            self.decline_tokens.add(token)

    def approve(self, tokens: Iterable[str]) -> None:
        """Make these tokens approve from now on (also against the mod rule)."""
        for token in tokens:
            self.decline_tokens.discard(token)
            self.approve_tokens.add(token)

    def declines(self, token: str) -> bool:
        """Whether a charge of `token` is declined now."""
        if token in self.approve_tokens:
            return False
        if token in self.decline_tokens:
            return True
        if self.decline_mod:
            digest = int.from_bytes(hashlib.sha256(token.encode()).digest()[:8], "big")
            return digest % self.decline_mod == 0
        return False

    async def charge(self, card_token: str, amount: Money, idempotency_key: str) -> ChargeResult:
        """Charge (or, negative, refund) the card once per idempotency key."""
        earlier = self._outcomes.get(idempotency_key)
        if earlier is not None:
            return earlier
        self.calls.append((card_token, amount.amount_minor, idempotency_key))
        if amount.amount_minor > 0 and self.declines(card_token):
            result = ChargeResult(approved=False, reason="DO_NOT_HONOUR", reference="")
        else:
            ref = hashlib.sha256(idempotency_key.encode()).hexdigest()[:16]
            result = ChargeResult(approved=True, reason="", reference=f"sim-{ref}")
        self._outcomes[idempotency_key] = result
        return result
