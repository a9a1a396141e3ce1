"""deploy/Dockerfile: one non-root image whose COPY sources all exist in the repo.

No Docker engine is needed: the Dockerfile is read as text.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

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


def test_image_exposes_the_four_grpc_ports(instructions: list[Instruction]) -> None:
    exposed = {
        port.split("/")[0]
        for keyword, arguments in instructions
        if keyword == "EXPOSE"
        for port in arguments.split()
    }
    assert {"50051", "50052", "50053", "50054"} <= exposed


def test_image_listens_on_every_interface(instructions: list[Instruction]) -> None:
    stage = final_stage(instructions)
    env = [word for keyword, arguments in stage if keyword == "ENV" for word in arguments.split()]
    assert "CLEARWAY_GRPC_HOST=0.0.0.0" in env


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
    for source in copy_sources(instructions):
        assert source.strip("/") not in patterns, f"{source} is copied but ignored"
