"""The generated protobuf code under libs/clearway is what `make protos` produces now."""

import filecmp
from pathlib import Path

from clearway.protogen import LIBS_ROOT, generate, proto_files


def test_checked_in_generated_code_is_not_stale(tmp_path: Path):
    written = generate(tmp_path)
    assert written, "protoc wrote nothing"
    stale = []
    for fresh in written:
        rel = fresh.relative_to(tmp_path)
        checked_in = LIBS_ROOT / rel
        if not checked_in.exists() or not filecmp.cmp(fresh, checked_in, shallow=False):
            stale.append(str(rel))
    assert not stale, f"run `make protos`: stale generated files {stale}"


def test_every_service_has_a_versioned_proto_package():
    packages = {str(p.parent) for p in proto_files()}
    for service in ("ingest", "fares", "settlement", "accounts", "events", "common"):
        assert f"clearway/{service}/v1" in packages


def test_no_generated_file_is_left_without_its_proto():
    protos = {p.with_suffix("").name for p in proto_files()}
    generated = {p.name.split("_pb2")[0] for p in LIBS_ROOT.rglob("*_pb2*.py")}
    assert generated == protos
