"""`make lint`'s dependency audit (clearway.dependency_audit): a found vulnerability fails,
and an audit that could not be done says so instead of passing as clean."""

from __future__ import annotations

import subprocess
import tomllib
import urllib.error
from pathlib import Path
from typing import Any

import pytest

from clearway import dependency_audit as audit
from clearway.dependency_audit import AuditReport, npm_report, python_report

NOT_FOUND = "Dependency not found on PyPI and could not be audited: {name} ({version})"
# What `npm audit --json` printed on this workplace's npm registry (no audit endpoint).
NPM_REFUSED = {
    "message": "405 Method Not Allowed - POST https://registry.npmjs.org/-/npm/v1/security/advisories/bulk",
    "method": "POST",
    "statusCode": 405,
    "body": "",
    "error": {"summary": "", "detail": ""},
}


def skipped(name: str, version: str) -> dict[str, str]:
    return {"name": name, "skip_reason": NOT_FOUND.format(name=name, version=version)}


def pages(table: dict[str, tuple[str, list[dict[str, Any]]]]) -> audit.Lookup:
    def lookup(name: str) -> audit.ProjectPage:
        if name not in table:
            raise urllib.error.HTTPError(
                f"https://pypi.org/pypi/{name}/json", 404, "Not Found", None, None
            )  # type: ignore[arg-type]
        return table[name]

    return lookup


def test_pip_audits_findings_are_vulnerabilities() -> None:
    report = python_report(
        {
            "dependencies": [
                {
                    "name": "jinja2",
                    "version": "2.10",
                    "vulns": [{"id": "PYSEC-2019-217", "fix_versions": ["2.10.1"]}],
                },
                {"name": "idna", "version": "3.20", "vulns": []},
            ]
        },
        lookup=pages({}),
    )
    assert report.checked == 2
    assert [v.line() for v in report.vulnerabilities] == [
        "VULNERABLE jinja2 2.10: PYSEC-2019-217 (fixed in 2.10.1)"
    ]


def test_a_package_pip_audit_skipped_is_checked_on_its_latest_releases_page() -> None:
    advisories = [
        {"id": "PYSEC-2017-94", "aliases": ["CVE-2013-7459"], "fixed_in": []},
        {"id": "GHSA-old", "aliases": [], "fixed_in": ["1.0"], "withdrawn": "2020-01-01T00:00:00Z"},
        {"id": "GHSA-ignored", "aliases": ["CVE-2099-1"], "fixed_in": ["3.0"]},
    ]
    report = python_report(
        {"dependencies": [skipped("pycrypto", "2.6.1"), skipped("idna", "3.20")]},
        lookup=pages({"pycrypto": ("2.6.1", advisories), "idna": ("3.20", [])}),
        ignored=["CVE-2099-1"],
    )
    assert report.complete
    assert (report.checked, report.checked_on_project_page) == (2, 2)
    assert [v.vuln_id for v in report.vulnerabilities] == ["PYSEC-2017-94"]
    assert "on the latest release's project page" in report.lines()[-1]


def test_a_package_behind_the_latest_release_is_reported_not_audited() -> None:
    report = python_report(
        {"dependencies": [skipped("requests", "2.31.0"), skipped("private-lib", "1.0")]},
        lookup=pages({"requests": ("2.34.2", [])}),
    )
    assert not report.complete and report.checked == 0 and not report.vulnerabilities
    lines = report.lines()
    assert lines[0].startswith("dependency audit NOT performed: Python requests 2.31.0: ")
    assert "2.34.2 is PyPI's latest" in lines[0]
    assert lines[1].startswith("dependency audit NOT performed: Python private-lib 1.0: ")
    assert "HTTPError" in lines[1]
    assert "0 packages checked, 2 NOT checked; 0 known vulnerabilities" in lines[-1]


def test_the_project_itself_is_not_a_dependency_to_audit() -> None:
    report = python_report(
        {"dependencies": [{"name": "clearway", "skip_reason": "distribution marked as editable"}]},
        lookup=pages({}),
    )
    assert report.complete and report.checked == 0


def test_npm_registry_without_an_audit_endpoint_is_not_performed() -> None:
    report = npm_report(NPM_REFUSED)
    assert report.not_performed is not None
    assert report.lines() == [
        "dependency audit NOT performed: npm (deploy/tools): npm audit: 405 Method Not Allowed"
        " - POST https://registry.npmjs.org/-/npm/v1/security/advisories/bulk"
    ]


def test_npm_findings_are_vulnerabilities() -> None:
    report = npm_report(
        {
            "auditReportVersion": 2,
            "vulnerabilities": {
                "left-pad": {
                    "range": "<1.3.0",
                    "via": [{"source": 1, "url": "https://github.com/advisories/GHSA-x"}],
                    "fixAvailable": {"name": "left-pad", "version": "1.3.0"},
                },
                "wrapper": {"range": "*", "via": ["left-pad"], "fixAvailable": True},
            },
            "metadata": {"dependencies": {"total": 9}},
        }
    )
    assert report.checked == 9
    assert [v.line() for v in report.vulnerabilities] == [
        "VULNERABLE left-pad <1.3.0: https://github.com/advisories/GHSA-x (fixed in 1.3.0)"
    ]


def test_pip_audit_that_cannot_reach_its_service_gives_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stderr = (
        "Traceback (most recent call last):\n  ...\n"
        "requests.exceptions.ConnectionError: HTTPSConnectionPool(host='api.osv.dev', port=443)"
        ": Max retries exceeded\n"
    )

    def run(*args: Any, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(args[0], 1, stdout="", stderr=stderr)

    monkeypatch.setattr(audit.subprocess, "run", run)
    reason = audit.run_pip_audit()
    assert reason == (
        "pip-audit exited with 1: requests.exceptions.ConnectionError: HTTPSConnectionPool("
        "host='api.osv.dev', port=443): Max retries exceeded"
    )


@pytest.fixture
def outcome(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """main() with pip-audit and npm audit replaced by what the test puts here."""
    state: dict[str, Any] = {"pip": {"dependencies": []}, "npm": AuditReport(audit.NPM_WHAT)}
    monkeypatch.setattr(audit, "run_pip_audit", lambda ignored=(): state["pip"])
    monkeypatch.setattr(audit, "run_npm_audit", lambda: state["npm"])
    monkeypatch.delenv(audit.STRICT_VAR, raising=False)
    return state


def test_lint_fails_on_a_vulnerability(
    outcome: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    outcome["pip"] = {
        "dependencies": [
            {"name": "jinja2", "version": "2.10", "vulns": [{"id": "PYSEC-1", "fix_versions": []}]}
        ]
    }
    assert audit.main([]) == 1
    assert "VULNERABLE jinja2 2.10: PYSEC-1 (no fix yet)" in capsys.readouterr().out


def test_lint_passes_but_says_so_when_the_audit_could_not_be_done(
    outcome: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    outcome["pip"] = "pip-audit exited with 1: ConnectionError: ..."
    outcome["npm"] = npm_report(NPM_REFUSED)
    assert audit.main([]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        "dependency audit NOT performed: Python: pip-audit exited with 1: ConnectionError: ..."
    )
    assert out[1].startswith("dependency audit NOT performed: npm (deploy/tools): ")
    assert audit.main(["--strict"]) == 1
    monkeypatch.setenv(audit.STRICT_VAR, "1")
    assert audit.main([]) == 1


def test_lint_passes_a_complete_clean_audit_even_when_strict(
    outcome: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    outcome["pip"] = {"dependencies": [{"name": "idna", "version": "3.20", "vulns": []}]}
    outcome["npm"] = npm_report({"vulnerabilities": {}, "metadata": {"dependencies": {"total": 8}}})
    assert audit.main(["--strict"]) == 0
    out = capsys.readouterr().out
    assert "dependency audit: Python: 1 package checked; 0 known vulnerabilities" in out
    assert "NOT performed" not in out


def test_make_lint_runs_the_audit_with_pip_audit_from_the_dev_extra() -> None:
    repo = Path(__file__).resolve().parents[2]
    makefile = (repo / "Makefile").read_text()
    recipe = makefile.split("\nlint:", 1)[1].split("\n\n", 1)[0]
    assert "$(PY) -m clearway.dependency_audit" in recipe.splitlines()[-1]
    dev = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(req.startswith("pip-audit==") for req in dev["dev"])


def test_a_project_page_without_advisory_data_is_not_taken_as_clean() -> None:
    assert audit.latest_advisories({"info": {"version": "1.0"}, "vulnerabilities": []}) == (
        "1.0",
        [],
    )
    with pytest.raises(ValueError, match="no advisory data"):
        audit.latest_advisories({"info": {"version": "1.0"}})

    def mirror_without_advisories(name: str) -> audit.ProjectPage:
        return audit.latest_advisories({"info": {"version": "3.20"}})

    report = python_report(
        {"dependencies": [skipped("idna", "3.20")]}, lookup=mirror_without_advisories
    )
    assert report.checked == 0
    assert report.unchecked == [
        (
            "idna 3.20",
            "PyPI's project page cannot tell"
            " (ValueError: the project page carries no advisory data)",
        )
    ]
