"""The nightly reports job (k8s/reports.yaml): the councils' evidence packs, written into
the volume the portal reads (docs/reports.md, "Evidence packs").

Checked in the base and in the production overlay as `kubectl kustomize` renders them: the
CronJob's schedule against the service day, its pod against the services', the shared
volume (written by the job, read-only in the portal, at the portal's CLEARWAY_REPORTS_DIR)
and the day archive's volume (the job's alone). Its script is run here with bash, with a
stand-in `clearway` on PATH that records its arguments (parsed with the reports command's
own parser), except `clearway reports councils`, the real command, which lists the
councils from the scheme file: what it runs, in which order, for which councils and
periods, and its exit status when the archive or a council's run fails. Its Kafka
identity, ACLs and NetworkPolicy are checked with the services' (test_k8s_production.py,
test_kafka_acls.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path, PurePosixPath
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from clearway.scheme.file import load_scheme
from clearway.scheme.model import PartyKind
from services.accounts.app import StoredValueSettings
from services.portal.app import PortalSettings
from services.reports.domain.scope import Period, UnknownCouncilError, council_of
from services.reports.entrypoints import cli as reports_cli
from tests.deploy.test_k8s_production import (
    K8S,
    OVERLAY,
    REPORTS,
    container,
    environment_from,
    kustomize,
    of_kind,
    workloads,
)

REPO = Path(__file__).resolve().parents[2]
IMAGE_WORKDIR = PurePosixPath("/app")  # deploy/Dockerfile: WORKDIR /app, COPY examples/
EXAMPLE_SCHEME = REPO / "examples" / "schemes" / "london.toml"
PACKS_CLAIM = "reports-packs"
ARCHIVE_CLAIM = "reports-archive"
ARCHIVE_VAR = "CLEARWAY_REPORTS_ARCHIVE"  # the job's: where the day archive is mounted
REPORTS_DAY_VAR = "CLEARWAY_REPORTS_DAY"  # the script's: publish another day than yesterday
DAY_SECONDS = 24 * 3600

# A second council for the script's runs: in force from the middle of June 2026 only.
ISLINGTON = """
[[party]]
id = "funder:islington"
name = "London Borough of Islington (example)"
areas = ["Z2"]
effective_from = 2026-06-15
bank = { sort_code = "30-94-17", account_number = "55092842" }
"""

# Stands in for the image's `clearway`: `reports councils` (it reads only the scheme file)
# is the real command; any other call records its arguments, one JSON list a line, and
# fails (as a run whose topic is missing does: 1) for the councils in FAKE_FAILING, and
# for `reports archive` when FAKE_FAILING names `archive`.
FAKE_CLEARWAY = """#!{python}
import json, os, sys
if sys.argv[1:3] == ["reports", "councils"]:  # no Kafka: the real command
    from services.reports.entrypoints.cli import main
    sys.exit(main(sys.argv[2:]))
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
council = sys.argv[sys.argv.index("--council") + 1] if "--council" in sys.argv else ""
if sys.argv[1:3] == ["reports", "archive"]:
    council = "archive"
sys.exit(1 if council in os.environ.get("FAKE_FAILING", "").split() else 0)
"""


@pytest.fixture(scope="module", params=["base", "production"])
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return kustomize(K8S if request.param == "base" else OVERLAY)


def cronjob(docs: list[dict[str, Any]]) -> dict[str, Any]:
    job: dict[str, Any] = of_kind(docs, "CronJob")[REPORTS]
    return job


def pod(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    spec: dict[str, Any] = workloads(docs)[name]["spec"]
    return spec


def env_values(docs: list[dict[str, Any]], name: str) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(docs, name).get("env", []) if "value" in e}


def in_repository(image_path: str) -> Path:
    """The repository's copy of a file the image holds under /app."""
    return REPO / PurePosixPath(image_path).relative_to(IMAGE_WORKDIR)


def claim_mounted_at(docs: list[dict[str, Any]], name: str, path: str) -> tuple[str, bool, bool]:
    """(claim, mount read-only, claim read-only) of the volume `name` mounts at `path`."""
    volumes = {v["name"]: v for v in pod(docs, name)["volumes"]}
    (mount,) = [m for m in container(docs, name)["volumeMounts"] if m["mountPath"] == path]
    claim = volumes[mount["name"]]["persistentVolumeClaim"]
    return claim["claimName"], mount.get("readOnly", False), claim.get("readOnly", False)


# -- the schedule ---------------------------------------------------------------------------


def test_the_job_runs_nightly_after_the_service_day_closes(
    rendered: list[dict[str, Any]],
) -> None:
    spec = cronjob(rendered)["spec"]
    assert spec["schedule"] == "30 5 * * *"
    minute, hour = (int(field) for field in spec["schedule"].split()[:2])
    # The service day as accounts keeps it (its rendered settings): the job runs in its
    # timezone, after its boundary, so yesterday's service day has closed (DST days too).
    config = of_kind(rendered, "ConfigMap")["clearway-config"]["data"]
    accounts = {
        **{k: v for k, v in config.items() if v is not None},
        **env_values(rendered, "accounts"),
    }
    clock = StoredValueSettings.from_env(accounts).day_clock
    assert spec["timeZone"] == clock.timezone
    zone = ZoneInfo(clock.timezone)
    for day in (date(2026, 3, 29), date(2026, 10, 25), date(2026, 7, 1), date(2027, 1, 1)):
        run = datetime.combine(day, time(hour, minute), zone)
        assert clock.service_day(run) == day, "yesterday's service day is over"
    assert f"TZ={clock.timezone} date -d yesterday" in script(rendered)
    assert spec["concurrencyPolicy"] == "Forbid"
    job = spec["jobTemplate"]["spec"]
    # A late start and the whole job, retries included, end before the next night's run.
    assert 0 < spec["startingDeadlineSeconds"] + job["activeDeadlineSeconds"] < DAY_SECONDS
    assert job["backoffLimit"] >= 1
    assert spec["successfulJobsHistoryLimit"] >= 1
    assert spec["failedJobsHistoryLimit"] >= 1
    assert pod(rendered, REPORTS)["restartPolicy"] == "Never"


# -- the pod: like the services' ----------------------------------------------------------


def test_the_job_runs_in_the_services_image_as_locked_down_as_they_are(
    rendered: list[dict[str, Any]],
) -> None:
    job, fares = container(rendered, REPORTS), container(rendered, "fares")
    assert job["image"] == fares["image"]
    assert job["imagePullPolicy"] == fares["imagePullPolicy"]
    assert job["securityContext"] == fares["securityContext"]
    job_pod, fares_pod = pod(rendered, REPORTS), pod(rendered, "fares")
    assert job_pod["securityContext"].items() >= fares_pod["securityContext"].items()
    for key in ("automountServiceAccountToken", "enableServiceLinks"):
        assert job_pod[key] is False, key
    # Settings from the ConfigMap (Kafka's bootstrap, the topic prefix); no credentials.
    assert job["envFrom"] == [{"configMapRef": {"name": "clearway-config"}}]
    assert {"requests", "limits"} <= set(job["resources"])


def test_base_job_has_the_resources_of_the_base_deployments() -> None:
    docs = kustomize(K8S)
    assert container(docs, REPORTS)["resources"] == container(docs, "fares")["resources"]


def test_the_job_reads_the_scheme_and_feed_settlement_and_fares_read(
    rendered: list[dict[str, Any]],
) -> None:
    job, settlement = env_values(rendered, REPORTS), env_values(rendered, "settlement")
    assert job["CLEARWAY_SCHEME_FILE"] == settlement["CLEARWAY_SCHEME_FILE"]
    assert job["CLEARWAY_FEED_DIR"] == settlement["CLEARWAY_FEED_DIR"]
    assert job["CLEARWAY_FEED_DIR"] == env_values(rendered, "fares")["CLEARWAY_FEED_DIR"]
    assert in_repository(job["CLEARWAY_SCHEME_FILE"]).is_file()
    assert (in_repository(job["CLEARWAY_FEED_DIR"]) / "stops.txt").is_file()


# -- the packs' volume --------------------------------------------------------------------


def test_the_job_writes_packs_where_the_portal_reads_them_read_only(
    rendered: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    runs = run_script(rendered, tmp_path, day="2026-06-20").runs
    assert runs, "the script ran no report"
    packs = {run.packs for run in runs}
    (written,) = packs
    assert str(written) == env_values(rendered, REPORTS)["CLEARWAY_REPORTS_DIR"]
    claim, mount_read_only, _ = claim_mounted_at(rendered, REPORTS, str(written))
    assert claim == PACKS_CLAIM and not mount_read_only

    environment_from(rendered, "portal", monkeypatch)
    monkeypatch.setenv("CLEARWAY_PORTAL_SECRET", "k" * 48)
    monkeypatch.delenv("CLEARWAY_FEED_DIR")  # the image's path; not here
    reads = PortalSettings.from_env().reports_dir
    assert claim_mounted_at(rendered, "portal", str(reads)) == (PACKS_CLAIM, True, True)
    # Every portal replica and the job, on any nodes: ReadWriteMany.
    pvc = of_kind(rendered, "PersistentVolumeClaim")[PACKS_CLAIM]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    # What the job writes (as its uid and gid, group fsGroup) the portal can read.
    identity = ("runAsUser", "runAsGroup", "fsGroup")
    job, portal = pod(rendered, REPORTS)["securityContext"], pod(rendered, "portal")
    assert [job[key] for key in identity] == [portal["securityContext"][key] for key in identity]


def test_the_archive_is_on_a_volume_of_the_jobs_own(
    rendered: list[dict[str, Any]], tmp_path: Path
) -> None:
    ran = run_script(rendered, tmp_path, day="2026-06-20")
    (archived,) = ran.archives
    into: Path = archived.args.into
    assert str(into) == env_values(rendered, REPORTS)[ARCHIVE_VAR]
    assert {run.args.archive for run in ran.runs} == {into}
    assert claim_mounted_at(rendered, REPORTS, str(into)) == (ARCHIVE_CLAIM, False, False)
    # Only the job mounts it (it holds card tokens): never the portal, nor any service.
    claimed_by = {
        name
        for name, workload in workloads(rendered).items()
        for volume in workload["spec"].get("volumes", [])
        if volume.get("persistentVolumeClaim", {}).get("claimName") == ARCHIVE_CLAIM
    }
    assert claimed_by == {REPORTS}
    pvc = of_kind(rendered, "PersistentVolumeClaim")[ARCHIVE_CLAIM]
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert pvc["metadata"]["labels"]["app.kubernetes.io/component"] == REPORTS


# -- the script ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One `clearway` invocation of the script, parsed by the reports command's parser."""

    argv: list[str]

    @property
    def args(self) -> argparse.Namespace:
        assert self.argv[0] == "reports" and self.argv[1] in {"usage", "archive"}, self.argv
        return reports_cli._parser().parse_args(self.argv[1:])

    @property
    def command(self) -> str:
        return self.argv[1]

    @property
    def packs(self) -> Path:
        packs: Path = self.args.packs
        return packs

    @property
    def key(self) -> tuple[str, str]:
        return self.args.period, self.args.council


@dataclass(frozen=True)
class Ran:
    """The script's exit status, its `clearway` calls in order, and its standard error."""

    status: int
    calls: list[Run]
    stderr: str

    @property
    def runs(self) -> list[Run]:
        """The `reports usage` runs, in order."""
        return [call for call in self.calls if call.command == "usage"]

    @property
    def archives(self) -> list[Run]:
        """The `reports archive` runs, in order."""
        return [call for call in self.calls if call.command == "archive"]


def script(docs: list[dict[str, Any]]) -> str:
    job = container(docs, REPORTS)
    assert job["command"] == ["/bin/bash", "-c"]
    (text,) = job["args"]
    assert isinstance(text, str)
    return text


def run_script(
    docs: list[dict[str, Any]],
    tmp_path: Path,
    *,
    day: str | None,
    scheme: Path | None = None,
    failing: tuple[str, ...] = (),
    extra_env: dict[str, str] | None = None,
) -> Ran:
    """Run the job's script as its container would, `clearway` replaced by FAKE_CLEARWAY."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "clearway"
    fake.write_text(FAKE_CLEARWAY.format(python=sys.executable))
    fake.chmod(0o755)
    log = tmp_path / "clearway.log"
    log.unlink(missing_ok=True)
    values = env_values(docs, REPORTS)
    env = {
        # `python`: this interpreter, which imports clearway and services as the image's does.
        "PATH": os.pathsep.join(
            [str(bin_dir), str(Path(sys.executable).parent), "/usr/bin", "/bin"]
        ),
        "CLEARWAY_REPORTS_DIR": values["CLEARWAY_REPORTS_DIR"],
        ARCHIVE_VAR: values[ARCHIVE_VAR],
        "CLEARWAY_SCHEME_FILE": str(scheme or in_repository(values["CLEARWAY_SCHEME_FILE"])),
        "CLEARWAY_FEED_DIR": str(in_repository(values["CLEARWAY_FEED_DIR"])),
        "FAKE_LOG": str(log),
        "FAKE_FAILING": " ".join(failing),
    }
    if day is not None:
        env[REPORTS_DAY_VAR] = day
    env |= extra_env or {}
    job = container(docs, REPORTS)
    result = subprocess.run(
        [*job["command"], *job["args"]],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = log.read_text().splitlines() if log.exists() else []
    return Ran(result.returncode, [Run(json.loads(line)) for line in lines], result.stderr)


def two_council_scheme(tmp_path: Path) -> Path:
    path = tmp_path / "scheme.toml"
    path.write_text(EXAMPLE_SCHEME.read_text() + ISLINGTON)
    return path


def councils_accepted(scheme: Path, period: str) -> set[str]:
    """Every funder party that `clearway reports usage --council` accepts for `period`."""
    loaded, parsed = load_scheme(scheme), Period.parse(period)
    accepted = set()
    for party in loaded.parties:
        if party.kind is PartyKind.FUNDER:
            with contextlib.suppress(UnknownCouncilError):
                accepted.add(council_of(loaded, party.party_id, parsed).funder_id)
    return accepted


def test_the_script_runs_the_reports_command_for_every_council_day_and_month(
    rendered: list[dict[str, Any]], tmp_path: Path
) -> None:
    scheme = two_council_scheme(tmp_path)
    ran = run_script(rendered, tmp_path, day="2026-06-10", scheme=scheme)
    assert ran.status == 0, ran.stderr
    # Islington is in force from 15 June: in the month's pack, not in the 10th's.
    expected = {
        (period, council)
        for period in ("2026-06-10", "2026-06")
        for council in councils_accepted(scheme, period)
    }
    assert expected == {
        ("2026-06-10", "funder:camden"),
        ("2026-06", "funder:camden"),
        ("2026-06", "funder:islington"),
    }
    assert sorted(run.key for run in ran.runs) == sorted(expected)
    feed = in_repository(env_values(rendered, REPORTS)["CLEARWAY_FEED_DIR"])
    for run in ran.runs:
        assert run.args.out is None
        assert run.args.feed == feed
        assert run.args.scheme == scheme
    for call in ran.calls:
        # Bootstrap and topic prefix from the environment, as the services take them.
        assert "--bootstrap" not in call.argv and "--topic-prefix" not in call.argv


def test_the_script_archives_the_topics_once_then_reports_from_the_archive(
    rendered: list[dict[str, Any]], tmp_path: Path
) -> None:
    ran = run_script(rendered, tmp_path, day="2026-06-20", scheme=two_council_scheme(tmp_path))
    assert ran.status == 0, ran.stderr
    first, *rest = ran.calls
    assert first.command == "archive"
    assert rest == ran.runs and len(rest) == 4
    archive = Path(env_values(rendered, REPORTS)[ARCHIVE_VAR])
    assert first.args.into == archive
    assert all(run.args.archive == archive for run in ran.runs)


def test_the_archive_keeps_every_day_unless_told_how_many(
    rendered: list[dict[str, Any]], tmp_path: Path
) -> None:
    ran = run_script(rendered, tmp_path, day="2026-06-20")
    assert ran.status == 0, ran.stderr
    assert ran.archives[0].args.keep_days is None  # the councils' retention to choose
    assert "CLEARWAY_REPORTS_KEEP_DAYS" not in env_values(rendered, REPORTS)
    ran = run_script(
        rendered, tmp_path, day="2026-06-20", extra_env={"CLEARWAY_REPORTS_KEEP_DAYS": "400"}
    )
    assert ran.status == 0, ran.stderr
    assert ran.archives[0].args.keep_days == 400


def test_a_failed_archive_fails_the_job_before_any_council_runs(
    rendered: list[dict[str, Any]], tmp_path: Path
) -> None:
    ran = run_script(rendered, tmp_path, day="2026-06-20", failing=("archive",))
    assert ran.status != 0
    assert [call.command for call in ran.calls] == ["archive"]
    assert "archive failed (exit 1): no pack written, earlier packs kept" in ran.stderr


def test_the_script_publishes_the_example_schemes_council(
    rendered: list[dict[str, Any]], tmp_path: Path
) -> None:
    ran = run_script(rendered, tmp_path, day="2026-06-10")
    assert ran.status == 0, ran.stderr
    assert {run.args.council for run in ran.runs} == councils_accepted(EXAMPLE_SCHEME, "2026-06")
    assert {run.args.council for run in ran.runs} == {"funder:camden"}


def test_on_the_first_the_script_publishes_the_month_just_ended(
    rendered: list[dict[str, Any]], tmp_path: Path
) -> None:
    # The run of 1 July publishes 30 June, the last day of June, and June's final pack.
    ran = run_script(rendered, tmp_path, day="2026-06-30")
    assert sorted(run.args.period for run in ran.runs) == ["2026-06", "2026-06-30"]


def test_a_failed_council_does_not_stop_the_others_but_fails_the_job(
    rendered: list[dict[str, Any]], tmp_path: Path
) -> None:
    scheme = two_council_scheme(tmp_path)
    ran = run_script(
        rendered, tmp_path, day="2026-06-20", scheme=scheme, failing=("funder:camden",)
    )
    assert ran.status != 0
    assert sorted(run.key for run in ran.runs) == [
        ("2026-06", "funder:camden"),
        ("2026-06", "funder:islington"),
        ("2026-06-20", "funder:camden"),
        ("2026-06-20", "funder:islington"),
    ]
    assert "funder:camden 2026-06-20: failed" in ran.stderr


def test_a_refused_scheme_file_fails_the_job_without_running_a_report(
    rendered: list[dict[str, Any]], tmp_path: Path
) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text('scheme_id = "x"\n')
    ran = run_script(rendered, tmp_path, day="2026-06-20", scheme=broken)
    assert ran.status != 0
    assert not ran.runs


def test_the_script_publishes_yesterdays_service_day_by_default(
    rendered: list[dict[str, Any]], tmp_path: Path
) -> None:
    zone = ZoneInfo(cronjob(rendered)["spec"]["timeZone"])
    before = datetime.now(zone).date() - timedelta(days=1)
    ran = run_script(rendered, tmp_path, day=None)
    after = datetime.now(zone).date() - timedelta(days=1)
    assert ran.status == 0, ran.stderr
    days = {run.args.period for run in ran.runs if len(run.args.period) == 10}
    (day,) = days
    assert day in {before.isoformat(), after.isoformat()}
    assert {run.args.period for run in ran.runs} == {day, day[:7]}


def test_base_and_production_run_the_same_script() -> None:
    base, production = kustomize(K8S), kustomize(OVERLAY)
    assert container(base, REPORTS)["args"] == container(production, REPORTS)["args"]


# -- the docs ------------------------------------------------------------------------------


def test_the_docs_describe_the_job_that_exists(rendered: list[dict[str, Any]]) -> None:
    reports_doc = " ".join((REPO / "docs" / "reports.md").read_text().split())
    assert "No manifest for it" not in reports_doc
    assert "k8s/reports.yaml" in reports_doc
    assert f'schedule: "{cronjob(rendered)["spec"]["schedule"]}"' in reports_doc
    readme = (K8S / "README.md").read_text()
    for name in (
        "reports.yaml",
        "reports-packs-pvc.yaml",
        "ReadWriteMany",
        REPORTS_DAY_VAR,
        ARCHIVE_CLAIM,
        ARCHIVE_VAR,
    ):
        assert name in readme, name
    assert "clearway reports archive" in reports_doc
    assert "usage --archive" in reports_doc or "--archive DIR" in reports_doc
    assert re.search(r"\| reports \(`clearway-reports`\) \|", readme)
