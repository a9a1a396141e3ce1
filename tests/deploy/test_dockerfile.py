"""deploy/Dockerfile: one non-root image whose COPY sources all exist in the repo.

No Docker engine is needed: the Dockerfile is read as text, and the wheel its
`pip install .` builds is built here from a copy of what it COPYs.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path, PurePosixPath

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"

Instruction = tuple[str, str]


def read_instructions(path: Path) -> list[Instruction]:
    """Return (KEYWORD, arguments) pairs, with continuation lines joined."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    starts = [index for index, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
    return instructions[starts[-1] :]


def words(arguments: str) -> list[str]:
    """Arguments in exec (JSON) form or shell form, as a list."""
    if arguments.startswith("["):
        parsed: list[str] = json.loads(arguments)
        return parsed
    return shlex.split(arguments)


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    assert DOCKERFILE.exists(), "deploy/Dockerfile is missing"
    return read_instructions(DOCKERFILE)


def test_every_stage_starts_from_python_311_slim(instructions: list[Instruction]) -> None:
    bases = [words(arguments)[0] for keyword, arguments in instructions if keyword == "FROM"]
    assert bases
    assert set(bases) == {"python:3.11-slim"}


def test_image_runs_as_uid_10001(instructions: list[Instruction]) -> None:
    users = [arguments for keyword, arguments in final_stage(instructions) if keyword == "USER"]
    assert users, "the final stage never switches away from root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    assert user == "10001"


def test_entrypoint_is_the_clearway_cli(instructions: list[Instruction]) -> None:
    stage = dict(final_stage(instructions))
    assert json.loads(stage["ENTRYPOINT"]) == ["clearway"]
    assert json.loads(stage["CMD"]) == ["serve", "ingest"]


def test_image_exposes_the_four_grpc_ports_the_health_ports_and_ingests_admin_port(
    instructions: list[Instruction],
) -> None:
    exposed = {
        port.split("/")[0]
        for keyword, arguments in instructions
        if keyword == "EXPOSE"
        for port in arguments.split()
    }
    assert {"50051", "50052", "50053", "50054", "51051", "51053", "52051"} <= exposed
    assert "8080" in exposed, "the portal (HTTP)"


def final_env(instructions: list[Instruction]) -> dict[str, str]:
    pairs = [
        word.split("=", 1)
        for keyword, arguments in final_stage(instructions)
        if keyword == "ENV"
        for word in words(arguments)
    ]
    return {key: value for key, value in pairs}


def test_image_defaults_point_at_the_scheme_and_feed_it_copies(
    instructions: list[Instruction],
) -> None:
    # The project is installed into site-packages, so repository-relative defaults would
    # point nowhere: the image names its own copies under WORKDIR.
    stage = dict(final_stage(instructions))
    workdir = PurePosixPath(stage["WORKDIR"])
    env = final_env(instructions)
    scheme = REPO / PurePosixPath(env["CLEARWAY_SCHEME_FILE"]).relative_to(workdir)
    feed = REPO / PurePosixPath(env["CLEARWAY_FEED_DIR"]).relative_to(workdir)
    assert scheme.is_file()
    assert (feed / "agency.txt").is_file()
    assert "examples/" in copy_sources(instructions)


def test_image_creates_every_directory_compose_mounts_a_volume_on_owned_by_10001(
    instructions: list[Instruction],
) -> None:
    # A new named volume takes the owner and mode of the image's directory; one Docker
    # creates itself is root's, and uid 10001 could not write the PKI or statements.
    runs = " ".join(
        arguments for keyword, arguments in final_stage(instructions) if keyword == "RUN"
    )
    created = {
        PurePosixPath(arg)
        for command in runs.split("&&")
        if "mkdir" in command
        for arg in words(command)[1:]
        if arg.startswith("/")
    }
    owned = {
        PurePosixPath(arg)
        for command in runs.split("&&")
        if "chown -R 10001:10001" in command
        for arg in words(command)[1:]
        if arg.startswith("/")
    }
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    targets = {
        PurePosixPath(entry.split(":")[1])
        for service in compose["services"].values()
        if service.get("image") == "clearway:dev"
        for entry in service.get("volumes", [])
    }
    assert targets
    for target in targets:
        assert target in created, f"{target} is not created in the image"
        assert any(target == d or d in target.parents for d in owned), f"{target}: not 10001's"


def test_image_listens_on_every_interface(instructions: list[Instruction]) -> None:
    stage = final_stage(instructions)
    env = [word for keyword, arguments in stage if keyword == "ENV" for word in arguments.split()]
    assert "CLEARWAY_GRPC_HOST=0.0.0.0" in env
    assert "CLEARWAY_PORTAL_HOST=0.0.0.0" in env, "the portal's own host setting"


def test_project_is_installed_without_pip_cache(instructions: list[Instruction]) -> None:
    runs = [arguments for keyword, arguments in instructions if keyword == "RUN"]
    assert any("pip install --no-cache-dir ." in run for run in runs)


def copy_sources(instructions: list[Instruction]) -> list[str]:
    sources: list[str] = []
    for keyword, arguments in instructions:
        if keyword not in {"COPY", "ADD"}:
            continue
        args = words(arguments)
        if any(arg.startswith("--from") for arg in args):
            continue  # copies between build stages, not from the build context
        paths = [arg for arg in args if not arg.startswith("--")]
        sources += paths[:-1]
    return sources


def test_copied_paths_exist_in_the_repository(instructions: list[Instruction]) -> None:
    sources = copy_sources(instructions)
    assert {"pyproject.toml", "README.md", "libs/", "services/", "examples/"} <= set(sources)
    missing = [source for source in sources if not (REPO / source).exists()]
    assert not missing, f"COPY sources missing from the build context: {missing}"


def test_dockerignore_keeps_local_state_out_but_not_what_the_image_copies(
    instructions: list[Instruction],
) -> None:
    patterns = {
        line.strip().strip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", ".infra", "**/node_modules", "**/__pycache__"} <= patterns
    # Local PKI output (var/pki) and any private key never enter the build context.
    assert {"var", "**/*.key.pem"} <= patterns
    for source in copy_sources(instructions):
        assert source.strip("/") not in patterns, f"{source} is copied but ignored"


def test_portal_templates_and_static_files_are_in_the_installed_package(
    instructions: list[Instruction], tmp_path: Path
) -> None:
    # The runtime stage has no sources: the portal finds its templates and stylesheet
    # next to its modules in site-packages only if the wheel `pip install .` builds from
    # the build stage's COPYs carries them as package data.
    build = instructions[: [keyword for keyword, _ in instructions].index("FROM", 1)]
    copied = [
        source
        for keyword, arguments in build
        if keyword == "COPY"
        for source in [arg for arg in words(arguments) if not arg.startswith("--")][:-1]
    ]
    assert any(arguments == "pip install --no-cache-dir ." for _, arguments in build)
    context = tmp_path / "src"
    context.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.py[cod]")
    for source in copied:
        if (REPO / source).is_dir():
            shutil.copytree(REPO / source, context / source, ignore=ignore)
        else:
            shutil.copy2(REPO / source, context / source)
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    result = subprocess.run(
        [*pip_wheel, "-q", "-w", str(tmp_path / "dist"), str(context)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    portal = REPO / "services" / "portal"
    assets = [
        path.relative_to(REPO).as_posix()
        for folder in ("templates", "static")
        for path in (portal / folder).rglob("*")
        if path.is_file()
    ]
    assert any(name.endswith("base.html") for name in assets)
    assert any(name.endswith(".css") for name in assets)
    missing = sorted(set(assets) - names)
    assert not missing, f"not in the wheel (pyproject package-data): {missing}"
