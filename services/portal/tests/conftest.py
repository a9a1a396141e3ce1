"""The portal's browser tests share one way to find Debian's Chromium and launch it
headless (one browser per test module)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, async_playwright

from clearway.settings import REPO_ROOT


def chromium_path() -> str:
    """Debian's Chromium: CLEARWAY_CHROMIUM, else on the PATH, else installed now by the
    project's own script (deploy/browser.sh, apt-get)."""
    named = os.environ.get("CLEARWAY_CHROMIUM")
    if named:
        return named
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    script = REPO_ROOT / "deploy" / "browser.sh"
    done = subprocess.run(
        ["bash", str(script)], capture_output=True, text=True, timeout=900, check=False
    )
    if done.returncode != 0:
        pytest.fail(f"deploy/browser.sh could not install Chromium:\n{done.stderr}")
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    executable = chromium_path()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        try:
            yield launched
        finally:
            await launched.close()
