"""The deny list as pure data: versions, replays, entries, the kept changes."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.ingest.domain.deny_list import Change, DenyList, Entry

T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
LOST = 1
DEBT = 2
FRAUD = 3


def _at(version: int) -> datetime:
    return T0 + timedelta(seconds=version)


def _add(deny_list: DenyList, version: int, token: str, reason: int = LOST) -> None:
    deny_list.apply(version, token, True, reason, _at(version))


def _remove(deny_list: DenyList, version: int, token: str) -> None:
    deny_list.apply(version, token, False, 0, _at(version))


def test_a_new_list_is_empty_at_version_zero():
    deny_list = DenyList()
    assert deny_list.version == 0
    assert deny_list.entries() == []
    assert not deny_list.blocked("tok_abcdef123456")
    assert deny_list.changes_since(0) == []


def test_added_cards_are_blocked_until_removed_and_the_version_follows_each_change():
    deny_list = DenyList()
    _add(deny_list, 1, "tok_aaaaaaaa")
    _add(deny_list, 2, "tok_bbbbbbbb", FRAUD)
    assert deny_list.blocked("tok_aaaaaaaa")
    assert deny_list.blocked("tok_bbbbbbbb")
    assert deny_list.version == 2

    _remove(deny_list, 5, "tok_aaaaaaaa")  # versions may skip (compaction, other records)
    assert not deny_list.blocked("tok_aaaaaaaa")
    assert deny_list.blocked("tok_bbbbbbbb")
    assert deny_list.version == 5


def test_a_change_at_or_below_the_current_version_is_a_replay_and_changes_nothing():
    deny_list = DenyList()
    _add(deny_list, 1, "tok_aaaaaaaa")
    _remove(deny_list, 2, "tok_aaaaaaaa")
    before = (deny_list.version, deny_list.entries(), deny_list.changes_since(0))

    _add(deny_list, 1, "tok_aaaaaaaa")  # replayed
    _add(deny_list, 2, "tok_cccccccc")  # same version as the latest: ignored too

    assert (deny_list.version, deny_list.entries(), deny_list.changes_since(0)) == before
    assert not deny_list.blocked("tok_aaaaaaaa")
    assert not deny_list.blocked("tok_cccccccc")


def test_entries_are_sorted_by_card_token_with_reason_version_and_time_added():
    deny_list = DenyList()
    _add(deny_list, 1, "tok_zzzzzzzz", DEBT)
    _add(deny_list, 2, "sc_04a2b9c1", LOST)
    _add(deny_list, 3, "tok_mmmmmmmm", FRAUD)
    assert deny_list.entries() == [
        Entry("sc_04a2b9c1", LOST, 2, _at(2)),
        Entry("tok_mmmmmmmm", FRAUD, 3, _at(3)),
        Entry("tok_zzzzzzzz", DEBT, 1, _at(1)),
    ]


def test_adding_a_card_again_replaces_its_reason_version_and_time():
    deny_list = DenyList()
    _add(deny_list, 1, "tok_aaaaaaaa", LOST)
    _add(deny_list, 4, "tok_aaaaaaaa", FRAUD)
    assert deny_list.entries() == [Entry("tok_aaaaaaaa", FRAUD, 4, _at(4))]
    assert len(deny_list) == 1


def test_removing_a_card_not_on_the_list_still_moves_the_version_and_is_kept_as_a_change():
    deny_list = DenyList()
    _remove(deny_list, 1, "tok_aaaaaaaa")
    assert deny_list.version == 1
    assert deny_list.entries() == []
    assert deny_list.changes_since(0) == [Change(1, "tok_aaaaaaaa", False, 0, _at(1))]


def test_advance_moves_the_version_without_a_change():
    deny_list = DenyList()
    _add(deny_list, 1, "tok_aaaaaaaa")
    deny_list.advance(2)  # a record that carried no change
    deny_list.advance(1)  # never backwards
    assert deny_list.version == 2
    assert deny_list.changes_since(1) == []
    assert deny_list.changes_since(2) == []
    _add(deny_list, 2, "tok_bbbbbbbb")  # a replay of the skipped version
    assert not deny_list.blocked("tok_bbbbbbbb")


def test_changes_since_gives_the_changes_after_a_version_in_order():
    deny_list = DenyList()
    _add(deny_list, 1, "tok_aaaaaaaa", DEBT)
    _add(deny_list, 3, "tok_bbbbbbbb", FRAUD)
    _remove(deny_list, 4, "tok_aaaaaaaa")

    assert deny_list.changes_since(4) == []
    assert deny_list.changes_since(3) == [Change(4, "tok_aaaaaaaa", False, 0, _at(4))]
    # A version between two changes (a skipped or compacted offset) works too.
    assert [c.version for c in deny_list.changes_since(2)] == [3, 4]
    assert deny_list.changes_since(0) == [
        Change(1, "tok_aaaaaaaa", True, DEBT, _at(1)),
        Change(3, "tok_bbbbbbbb", True, FRAUD, _at(3)),
        Change(4, "tok_aaaaaaaa", False, 0, _at(4)),
    ]


def test_changes_since_a_version_ahead_of_the_list_is_none():
    deny_list = DenyList()
    _add(deny_list, 1, "tok_aaaaaaaa")
    assert deny_list.changes_since(2) is None


def test_changes_since_is_none_once_the_changes_after_that_version_are_no_longer_kept():
    deny_list = DenyList(max_changes=3)
    for version in range(1, 11):
        _add(deny_list, version, f"tok_card{version:04d}")
    # The last 3 changes (8, 9, 10) are kept: from version 7 on, deltas; before, a snapshot.
    assert [c.version for c in deny_list.changes_since(7)] == [8, 9, 10]
    assert deny_list.changes_since(6) is None
    assert deny_list.changes_since(0) is None
    # The snapshot the caller sends instead holds every card, whatever was dropped.
    assert len(deny_list.entries()) == 10


def test_at_least_max_changes_are_kept_as_the_log_is_trimmed():
    deny_list = DenyList(max_changes=100)
    for version in range(1, 1001):
        _add(deny_list, version, f"tok_card{version:04d}")
        kept = deny_list.changes_since(max(0, version - 100))
        assert kept is not None and len(kept) == min(version, 100)


def test_snapshot_size_is_the_number_of_cards_on_the_list():
    deny_list = DenyList(max_changes=2)
    for version in range(1, 51):
        _add(deny_list, version, f"tok_card{version % 20:04d}")
    for version in range(51, 56):
        _remove(deny_list, version, f"tok_card{version % 20:04d}")
    assert len(deny_list.entries()) == 15
    assert len(deny_list) == 15


def test_max_changes_must_be_positive():
    with pytest.raises(ValueError):
        DenyList(max_changes=0)


TOKENS = st.sampled_from([f"tok_card{i:04d}" for i in range(6)])
ACTIONS = st.lists(
    st.tuples(TOKENS, st.booleans(), st.sampled_from([LOST, DEBT, FRAUD]), st.integers(1, 3)),
    max_size=60,
)


def _apply_all(deny_list: DenyList, actions: list[tuple[str, bool, int, int]]) -> list[int]:
    """Apply the actions with increasing versions (gaps of `step`); their versions."""
    versions = []
    version = 0
    for token, added, reason, step in actions:
        version += step
        deny_list.apply(version, token, added, reason, _at(version))
        versions.append(version)
    return versions


@given(ACTIONS)
def test_any_sequence_of_changes_leaves_the_last_action_of_each_card(actions):
    deny_list = DenyList()
    versions = _apply_all(deny_list, actions)

    expected: dict[str, Entry] = {}
    for (token, added, reason, _), version in zip(actions, versions, strict=True):
        if added:
            expected[token] = Entry(token, reason, version, _at(version))
        else:
            expected.pop(token, None)
    assert deny_list.entries() == sorted(expected.values(), key=lambda e: e.card_token)
    assert deny_list.version == (versions[-1] if versions else 0)
    assert all(deny_list.blocked(t) == (t in expected) for t in {a[0] for a in actions})


@given(ACTIONS, st.data())
def test_replaying_a_prefix_again_changes_nothing(actions, data):
    deny_list = DenyList()
    versions = _apply_all(deny_list, actions)
    before = (deny_list.version, deny_list.entries(), deny_list.changes_since(0))

    prefix = data.draw(st.integers(0, len(actions)))
    for (token, added, reason, _), version in zip(actions[:prefix], versions[:prefix], strict=True):
        deny_list.apply(version, token, added, reason, _at(version))

    assert (deny_list.version, deny_list.entries(), deny_list.changes_since(0)) == before


@given(ACTIONS, st.data())
def test_changes_since_any_kept_version_brings_an_old_copy_up_to_date(actions, data):
    """What a subscriber does: apply the deltas since its version to its own copy."""
    deny_list = DenyList()
    versions = _apply_all(deny_list, actions)
    held_at = data.draw(st.integers(0, len(actions)))
    old = DenyList()
    _apply_all(old, actions[:held_at])
    changes = deny_list.changes_since(versions[held_at - 1] if held_at else 0)
    assert changes is not None
    for change in changes:
        old.apply(change.version, change.card_token, change.added, change.reason, change.changed_at)
    assert old.entries() == deny_list.entries()
    assert old.version == deny_list.version
