"""`make lint`'s dependency audit: known vulnerabilities in the installed Python packages
(pip-audit) and in deploy/tools' npm packages (npm audit), honest about what it could not
check.

    python -m clearway.dependency_audit [--strict] [--ignore-vuln ID ...] [--no-npm]

Python: pip-audit over this environment against PyPI's advisory data (the PyPA advisory
database, which PyPI serves in its JSON API; OSV's API is not reachable from every
machine that runs lint). A package pip-audit skips because its per-version JSON page does
not answer (some registry mirrors serve only the project page) is checked against the
project page when the installed version is the latest release: that page carries the
latest release's advisories. A package neither way reaches is reported as not audited.

The exit status is 1 when a known vulnerability is found, 0 otherwise. An audit that
could not be done (no vulnerability service, a package left unchecked) prints
`dependency audit NOT performed: <reason>` and passes, so that an offline build is not
blocked by the network; `--strict` (or CLEARWAY_AUDIT_STRICT=1) fails it instead.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

REPO_ROOT = Path(__file__).resolve().parents[2]
NPM_TOOLS = REPO_ROOT / "deploy" / "tools"
PYPI_JSON = "https://pypi.org/pypi/{name}/json"
STRICT_VAR = "CLEARWAY_AUDIT_STRICT"
PIP_AUDIT_TIMEOUT_S = 300  # the whole pip-audit run
REQUEST_TIMEOUT_S = 15  # one HTTP request (pip-audit's --timeout too)
NPM_AUDIT_TIMEOUT_S = 120
LOOKUP_THREADS = 16
NOT_PERFORMED = "dependency audit NOT performed"
NPM_WHAT = "npm (deploy/tools)"
# pip-audit's reason for a package its vulnerability service had no page for.
_NOT_FOUND_ON_PYPI = "Dependency not found on PyPI"


@dataclass(frozen=True, slots=True)
class Vulnerability:
    """One known vulnerability of one installed package."""

    package: str
    version: str
    vuln_id: str
    fixed_in: tuple[str, ...] = ()

    def line(self) -> str:
        """How it is printed."""
        fix = f" (fixed in {', '.join(self.fixed_in)})" if self.fixed_in else " (no fix yet)"
        return f"VULNERABLE {self.package} {self.version}: {self.vuln_id}{fix}"


@dataclass(slots=True)
class AuditReport:
    """What one audit found, and what it could not look at."""

    what: str  # "Python", "npm (deploy/tools)"
    checked: int = 0
    # How many of `checked` only on the latest release's project page (not by pip-audit).
    checked_on_project_page: int = 0
    vulnerabilities: list[Vulnerability] = field(default_factory=list)
    # (package, reason) for each package that was not checked.
    unchecked: list[tuple[str, str]] = field(default_factory=list)
    # Why the audit as a whole could not run; None when it ran.
    not_performed: str | None = None

    @property
    def complete(self) -> bool:
        """True when every package was checked."""
        return self.not_performed is None and not self.unchecked

    def lines(self) -> list[str]:
        """The report as printed: vulnerabilities, then what was not checked, then a total."""
        if self.not_performed is not None:
            return [f"{NOT_PERFORMED}: {self.what}: {self.not_performed}"]
        out = [v.line() for v in self.vulnerabilities]
        out += [
            f"{NOT_PERFORMED}: {self.what} {package}: {reason}"
            for package, reason in self.unchecked
        ]
        found = len(self.vulnerabilities)
        verdict = f"{found} known vulnerabilit{'y' if found == 1 else 'ies'}"
        how = (
            f" ({self.checked_on_project_page} on the latest release's project page)"
            if self.checked_on_project_page
            else ""
        )
        unchecked = f", {len(self.unchecked)} NOT checked" if self.unchecked else ""
        plural = "" if self.checked == 1 else "s"
        out.append(
            f"dependency audit: {self.what}: {self.checked} package{plural} checked{how}"
            f"{unchecked}; {verdict}"
        )
        return out


# A project page: (latest version, that version's advisories as PyPI lists them).
ProjectPage = tuple[str, list[dict[str, Any]]]
Lookup = Callable[[str], ProjectPage]


def project_page(name: str) -> ProjectPage:
    """The latest version of `name` on PyPI and the advisories of that version."""
    url = PYPI_JSON.format(name=canonicalize_name(name))
    with urllib.request.urlopen(url, timeout=REQUEST_TIMEOUT_S) as response:  # noqa: S310 (a fixed https URL)
        page = json.load(response)
    return latest_advisories(page)


def latest_advisories(page: dict[str, Any]) -> ProjectPage:
    """(latest version, its advisories) from a project page; ValueError when the page has
    no advisory data at all (absent is not the same as none)."""
    if not isinstance(page.get("vulnerabilities"), list):
        raise ValueError("the project page carries no advisory data")
    return str(page["info"]["version"]), list(page["vulnerabilities"])


def _same_version(a: str, b: str) -> bool:
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b


def _installed_version(name: str, skip_reason: str) -> str | None:
    found = re.search(r"\(([^()\s]+)\)\s*$", skip_reason)
    if found:
        return found.group(1)
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _check_latest(
    name: str, version: str, lookup: Lookup, ignored: frozenset[str]
) -> list[Vulnerability] | str:
    """The package's vulnerabilities from its project page, or why that cannot tell."""
    try:
        latest, advisories = lookup(name)
    except (OSError, ValueError, KeyError) as exc:  # URLError is an OSError
        return f"PyPI's project page cannot tell ({type(exc).__name__}: {exc})"
    if not _same_version(latest, version):
        return (
            f"{version} is installed, {latest} is PyPI's latest; the per-version advisory"
            " page did not answer and the project page lists only the latest release's"
        )
    return [
        Vulnerability(name, version, str(a["id"]), tuple(str(f) for f in a.get("fixed_in") or []))
        for a in advisories
        if not a.get("withdrawn") and not ({a["id"], *(a.get("aliases") or [])} & ignored)
    ]


def python_report(
    pip_audit_json: dict[str, Any],
    lookup: Lookup = project_page,
    ignored: Sequence[str] = (),
) -> AuditReport:
    """The Python audit from pip-audit's JSON output (`-f json`): its findings, and for
    each package it could not find on PyPI, the project page's when that can tell."""
    report = AuditReport("Python")
    ignore = frozenset(ignored)
    retry: list[tuple[str, str]] = []
    for dep in pip_audit_json.get("dependencies", []):
        name, reason = str(dep["name"]), dep.get("skip_reason")
        if reason is None:
            report.checked += 1
            report.vulnerabilities += [
                Vulnerability(
                    name, str(dep["version"]), str(v["id"]), tuple(v.get("fix_versions") or [])
                )
                for v in dep.get("vulns", [])
            ]
        elif reason == "distribution marked as editable":
            continue  # this project itself, installed for development: not a dependency
        elif _NOT_FOUND_ON_PYPI in reason and (version := _installed_version(name, reason)):
            retry.append((name, version))
        else:
            report.unchecked.append((name, str(reason)))
    with ThreadPoolExecutor(LOOKUP_THREADS) as pool:
        outcomes = pool.map(lambda nv: _check_latest(nv[0], nv[1], lookup, ignore), retry)
        for (name, version), outcome in zip(retry, outcomes, strict=True):
            if isinstance(outcome, str):
                report.unchecked.append((f"{name} {version}", outcome))
            else:
                report.checked += 1
                report.checked_on_project_page += 1
                report.vulnerabilities += outcome
    return report


def run_pip_audit(ignored: Sequence[str] = ()) -> dict[str, Any] | str:
    """pip-audit's JSON report of this environment, or why there is none."""
    command = [
        sys.executable, "-m", "pip_audit",
        "--vulnerability-service", "pypi",
        "--format", "json",
        "--progress-spinner", "off",
        "--skip-editable",
        "--timeout", str(REQUEST_TIMEOUT_S),
    ]  # fmt: skip
    command += [arg for vuln in ignored for arg in ("--ignore-vuln", vuln)]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=PIP_AUDIT_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        return f"pip-audit did not finish within {PIP_AUDIT_TIMEOUT_S} s"
    try:
        parsed: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError:
        errors = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        last = errors[-1] if errors else "no output"
        return f"pip-audit exited with {done.returncode}: {last}"
    return parsed


def npm_report(audit_json: dict[str, Any]) -> AuditReport:
    """The npm audit from `npm audit --json`: its findings, or the registry's refusal."""
    report = AuditReport(NPM_WHAT)
    if "metadata" not in audit_json:
        error = audit_json.get("error")
        message = audit_json.get("message") or (
            error.get("summary") if isinstance(error, dict) else None
        )
        report.not_performed = f"npm audit: {message or 'no report'}"
        return report
    metadata = audit_json["metadata"]
    report.checked = int(metadata.get("dependencies", {}).get("total", 0))
    for name, entry in sorted(audit_json.get("vulnerabilities", {}).items()):
        for via in entry.get("via", []):
            if isinstance(via, dict):  # an advisory (a string names another package)
                advisory = str(via.get("url") or via.get("source") or via.get("title"))
                fixed = entry.get("fixAvailable")
                fix = (str(fixed.get("version")),) if isinstance(fixed, dict) else ()
                report.vulnerabilities.append(
                    Vulnerability(name, str(entry.get("range", "")), advisory, fix)
                )
    return report


def run_npm_audit(directory: Path = NPM_TOOLS) -> AuditReport:
    """`npm audit` of `directory`'s lock file."""
    report = AuditReport(NPM_WHAT)
    npm = shutil.which("npm")
    if npm is None:
        report.not_performed = "npm is not installed"
        return report
    try:
        done = subprocess.run(
            [npm, "audit", "--json"],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=NPM_AUDIT_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        report.not_performed = f"npm audit did not finish within {NPM_AUDIT_TIMEOUT_S} s"
        return report
    try:
        return npm_report(json.loads(done.stdout))
    except json.JSONDecodeError:
        report.not_performed = f"npm audit exited with {done.returncode} and no JSON report"
        return report


def main(argv: Sequence[str] | None = None) -> int:
    """Audit, print the report; 1 when a vulnerability is found (or, strict, when the audit
    was not complete)."""
    parser = argparse.ArgumentParser(prog="python -m clearway.dependency_audit")
    parser.add_argument("--strict", action="store_true", help="fail when not fully audited")
    parser.add_argument("--ignore-vuln", action="append", default=[], metavar="ID")
    parser.add_argument("--no-npm", action="store_true", help="skip deploy/tools' npm audit")
    args = parser.parse_args(argv)
    strict = args.strict or os.environ.get(STRICT_VAR, "") == "1"
    found = run_pip_audit(args.ignore_vuln)
    if isinstance(found, str):
        reports = [AuditReport("Python", not_performed=found)]
    else:
        reports = [python_report(found, ignored=args.ignore_vuln)]
    if not args.no_npm:
        reports.append(run_npm_audit())
    for report in reports:
        for line in report.lines():
            print(line, flush=True)
    if any(report.vulnerabilities for report in reports):
        return 1
    if strict and not all(report.complete for report in reports):
        print(f"{STRICT_VAR}/--strict: an incomplete audit fails", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
