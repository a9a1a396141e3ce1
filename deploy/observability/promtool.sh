#!/usr/bin/env bash
# Print the path of a `promtool` (Prometheus' config and exposition checker) for the tests,
# taking it from Debian's `prometheus` package when none is on the PATH: the package is
# downloaded (`apt-get download`) and only its promtool unpacked under var/tools/ (nothing
# installed, no Prometheus server started). Idempotent.
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
dest="$root/var/tools/prometheus"
unpacked="$dest/usr/bin/promtool"

if command -v promtool >/dev/null; then
  command -v promtool
  exit 0
fi
if [[ -x "$unpacked" ]]; then
  echo "$unpacked"
  exit 0
fi
if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
  echo "deploy/observability/promtool.sh: no promtool, and no apt-get to fetch Debian's" >&2
  exit 1
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
if ! apt-get download prometheus >/dev/null 2>&1; then
  sudo=""
  if [[ "$(id -u)" != 0 ]]; then sudo="sudo"; fi
  $sudo apt-get update -qq >&2
  apt-get download prometheus >&2
fi
mkdir -p "$dest"
dpkg-deb -x prometheus_*.deb "$work/unpacked"
install -D -m 0755 "$work/unpacked/usr/bin/promtool" "$unpacked"
echo "$unpacked"
