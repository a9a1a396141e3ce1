"""A redemption's id is named by what makes it unique, the provider and the till's
idempotency key, so the same day redeemed again (a replay, a second run) gives the same
settlement file lines (`redemption:<id>`) byte for byte; an officer's reward likewise, by
the officer and their idempotency key (`reward:<id>`)."""

from __future__ import annotations

from services.accounts.service_layer.redemptions import redemption_id_of
from services.accounts.service_layer.rewards import off_peak_reward_id, officer_reward_id


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


def test_an_officers_reward_is_named_by_the_officer_and_their_key() -> None:
    first = officer_reward_id("trv_officer1", "grant-2026-12-01-1")
    assert first == officer_reward_id("trv_officer1", "grant-2026-12-01-1")
    assert first.startswith("rwd_") and len(first) == 4 + 32
    others = {
        officer_reward_id("trv_officer2", "grant-2026-12-01-1"),
        officer_reward_id("trv_officer1", "grant-2026-12-01-2"),
        officer_reward_id("trv_a", "bc"),
        officer_reward_id("trv_ab", "c"),
        # never an off-peak reward's id, whatever the strings
        off_peak_reward_id("trv_officer1", "grant-2026-12-01-1", ""),
    }
    assert first not in others and len(others) == 5
