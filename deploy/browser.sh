#!/usr/bin/env bash
# Install the headless browser the portal's browser tests drive: Chromium from Debian's
# packages (no browser downloads: `playwright install` is never run). Idempotent: does
# nothing when a Chromium is already on the PATH. Prints the browser's path.
set -euo pipefail

find_chromium() {
  command -v chromium || command -v chromium-browser || command -v google-chrome || true
}

browser="$(find_chromium)"
if [[ -z "$browser" ]]; then
  if ! command -v apt-get >/dev/null; then
    echo "deploy/browser.sh: no chromium and no apt-get; install Chromium and set CLEARWAY_CHROMIUM" >&2
    exit 1
  fi
  sudo=""
  if [[ "$(id -u)" != 0 ]]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq >&2
  $sudo apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >&2
  browser="$(find_chromium)"
fi
echo "$browser"
