"""/.dockerignore: key material, environment files and local state never reach the Docker
build context (so no COPY can put them in an image), and everything the image copies does.

No Docker engine is needed: the ignore rules are matched here as Docker matches them
(moby/patternmatcher: `**` spans directories, `*` and `?` stay within one, a path is left
out when it or a directory above it matches, the last matching rule wins, `!` re-includes).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

REPO = Path(__file__).resolve().parents[2]
DOCKERIGNORE = REPO / ".dockerignore"
# What deploy/Dockerfile COPYs from the context (tests/deploy/test_dockerfile.py checks
# that these are its COPY sources).
IMAGE_SOURCES = ("pyproject.toml", "README.md", "libs/", "services/", "examples/")
# A PEM private key with its body: a key, not a mention of one (tests name the marker).
PRIVATE_KEY_PEM = re.compile(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----\r?\n[A-Za-z0-9+/=\r\n]{40,}")
SCAN_LIMIT_BYTES = 1_000_000

Rule = tuple[re.Pattern[str], bool]  # (pattern, excludes: False for a `!` exception)


def _regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif char == "*":
            out, i = out + "[^/]*", i + 1
        elif char == "?":
            out, i = out + "[^/]", i + 1
        elif char == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(char), i + 1
    return re.compile(out)


def dockerignore_rules(text: str) -> list[Rule]:
    """The rules of a .dockerignore, in order."""
    rules: list[Rule] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((_regex(pattern), not keep))
    return rules


def excluded(path: str, rules: list[Rule]) -> bool:
    """True when Docker leaves `path` (relative, `/`-separated) out of the build context."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    verdict = False
    for pattern, excludes in rules:
        if any(pattern.fullmatch(candidate) for candidate in candidates):
            verdict = excludes
    return verdict


@pytest.fixture(scope="module")
def rules() -> list[Rule]:
    return dockerignore_rules(DOCKERIGNORE.read_text())


def test_the_matcher_follows_dockers_rules() -> None:
    rules = dockerignore_rules("var\n*.log\n**/*.pem\n!keep/*.pem\ndocs/**/draft\n")
    assert excluded("var", rules) and excluded("var/pki/ca.key.pem", rules)
    assert not excluded("services/var.py", rules)
    assert excluded("run.log", rules) and not excluded("logs/run.log", rules), "root only"
    assert excluded("server.pem", rules) and excluded("a/b/c/server.pem", rules)
    assert not excluded("keep/ca.pem", rules), "the last matching rule wins"
    assert excluded("docs/draft", rules) and excluded("docs/x/y/draft/z.md", rules)


@pytest.mark.parametrize(
    "path",
    [
        "var/pki/ca.key.pem",
        "var/pki/signing.key.pem",
        "var/pki/clients/role-operations.key.pem",
        "var/demo-1/statements/scheme-signing.pub.pem",
        "gate.key.pem",  # `clearway devices keygen --out gate.key.pem` run at the root
        "services/ingest/gate-LUL-KGX-01.pem",
        "examples/keys/till.key",
        "examples/pki/server.key.pem",
        "examples/pki/anything",  # a PKI directory copied anywhere
        "libs/clearway/tls/client.p12",
        "deploy/keystore.jks",
        "deploy/cert.pfx",
        ".env",
        ".env.production",
        "services/portal/.env",
        "examples/.env.local",
        ".venv/lib/python3.11/site-packages/x.py",
        ".infra/postgres/data/pg_hba.conf",
        ".git/config",
        ".cache/crds/strimzi.json",
        "deploy/tools/node_modules/.bin/buf",
    ],
)
def test_key_material_env_files_and_local_state_stay_out_of_the_build_context(
    path: str, rules: list[Rule]
) -> None:
    assert excluded(path, rules), f"{path} would be sent to the Docker build"


def tracked_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", *IMAGE_SOURCES],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return [line for line in listed.stdout.splitlines() if line]


def test_everything_the_image_copies_is_in_the_build_context(rules: list[Rule]) -> None:
    # Too broad a rule (`**/pki` catching libs/clearway/pki.py, `*.pem` a feed file) would
    # silently drop a source from the image.
    files = tracked_files()
    assert any(f.startswith("libs/clearway/") for f in files)
    assert any(f.startswith("examples/feeds/") for f in files)
    dropped = [f for f in files if excluded(f, rules)]
    assert not dropped, f"copied by deploy/Dockerfile but ignored: {dropped}"


def test_no_private_key_anywhere_in_the_build_context(rules: list[Rule]) -> None:
    # The work tree as `docker build .` would send it, on this machine: var/pki and the
    # demo's keys are here after `make demo`, and must all be left out.
    found: list[str] = []
    for root, dirs, names in os.walk(REPO):
        relative = Path(root).relative_to(REPO).as_posix()
        prefix = "" if relative == "." else relative + "/"
        dirs[:] = [d for d in dirs if not excluded(prefix + d, rules)]
        for name in names:
            path = prefix + name
            full = REPO / path
            if excluded(path, rules) or not full.is_file() or full.is_symlink():
                continue
            if full.stat().st_size <= SCAN_LIMIT_BYTES and PRIVATE_KEY_PEM.search(
                full.read_bytes()
            ):
                found.append(path)
    assert not found, f"private keys in the Docker build context: {found}"


def test_the_private_key_scan_recognises_a_key() -> None:
    # The scan above must be able to fail: it knows a real PEM private key when it sees one.
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    assert PRIVATE_KEY_PEM.search(pem)
    assert not PRIVATE_KEY_PEM.search(b'assert "PRIVATE KEY-----" not in text')
