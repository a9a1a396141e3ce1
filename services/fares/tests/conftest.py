"""Shared fixtures: paths to the example feeds and the real third-party feeds."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
EXAMPLE_FEEDS = REPO_ROOT / "examples" / "feeds"
SHARED_FEEDS = REPO_ROOT.parent / "shared" / "feeds"


@pytest.fixture
def shared_feeds() -> Path:
    """../shared/feeds, or skip (a user's own clone has no ../shared)."""
    if not SHARED_FEEDS.is_dir():
        pytest.skip("../shared is absent")
    return SHARED_FEEDS
