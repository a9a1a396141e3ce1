"""A redemption's id is named by what makes it unique, the provider and the till's
idempotency key, so the same day redeemed again (a replay, a second run) gives the same
settlement file lines (`redemption:<id>`) byte for byte."""

from __future__ import annotations

from services.accounts.service_layer.redemptions import redemption_id_of


def test_the_same_provider_and_key_always_name_the_same_redemption() -> None:
    first = redemption_id_of("provider:camden-leisure", "demo-01-0")
    assert first == redemption_id_of("provider:camden-leisure", "demo-01-0")
    assert first.startswith("rdm_") and len(first) == 4 + 32


def test_another_provider_or_key_names_another_redemption() -> None:
    ids = {
        redemption_id_of("provider:camden-leisure", "demo-01-0"),
        redemption_id_of("provider:soundbox", "demo-01-0"),
        redemption_id_of("provider:camden-leisure", "demo-01-1"),
        # the separator keeps (provider, key) pairs apart however they are cut
        redemption_id_of("provider:a", "bc"),
        redemption_id_of("provider:ab", "c"),
    }
    assert len(ids) == 5
