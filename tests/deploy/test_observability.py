"""docker-compose.observability.yml and what it mounts, validated offline.

- The layer alone, and merged onto docker-compose.yml (as `docker compose -f ... -f ...`
  merges them, with `.env` interpolated), validate against the compose-spec schema that
  check-jsonschema ships (as tests/deploy/test_compose.py checks the main file).
- Prometheus' configuration passes `promtool check config`, and every PromQL expression of
  the dashboard passes `promtool check rules` (promtool from Debian's prometheus package:
  deploy/observability/promtool.sh).
- The Grafana dashboard validates against Grafana's own dashboard schema: the TypeScript
  types of the npm package @grafana/schema (the version of the Grafana image in .env),
  turned into JSON Schema by ts-json-schema-generator, strict about unknown fields; each
  panel's options against its panel type's `Options`. No Grafana server can be installed
  from the package registries (not in Debian, not on npm or PyPI), so none is started.
- The wiring: every service sends traces to the collector, serves /metrics where
  Prometheus looks, the collector sends traces to Jaeger, Grafana reads the provisioned
  data source and the dashboard from where they are mounted, and the dashboard has a
  panel for every metric docs/metrics.md names.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import pytest
import yaml

from clearway.settings import ServiceSettings
from clearway.telemetry import otlp_metrics_wanted
from services.portal.app import PortalSettings

REPO = Path(__file__).resolve().parents[2]
MAIN_FILE = REPO / "docker-compose.yml"
LAYER_FILE = REPO / "docker-compose.observability.yml"
ENV_FILE = REPO / ".env"
OBSERVABILITY = REPO / "deploy" / "observability"
COLLECTOR_FILE = OBSERVABILITY / "otel-collector.yaml"
PROMETHEUS_FILE = OBSERVABILITY / "prometheus.yml"
GRAFANA = OBSERVABILITY / "grafana"
DASHBOARD_FILE = GRAFANA / "dashboards" / "clearway.json"
SCHEMA_CHECK = GRAFANA / "schema-check"
PROMTOOL_SCRIPT = OBSERVABILITY / "promtool.sh"
METRICS_DOC = REPO / "docs" / "metrics.md"
TOOLS = REPO / "var" / "tools"

SERVICES = ("ingest", "fares", "settlement", "accounts")
SCRAPED = (*SERVICES, "portal")  # the portal serves /metrics too (HTTP port + 3000)
LAYER_SERVICES = ("otel-collector", "jaeger", "prometheus", "grafana")
# `${NAME}` or `${NAME:-default}`, as compose interpolates them.
INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?::-(?P<default>[^}]*))?\}")
# Sequences that `docker compose -f a -f b` concatenates; any other value b replaces.
MERGED_SEQUENCES = {"ports", "expose", "volumes", "dns", "env_file"}
PROMETHEUS_DATASOURCE_UID = "clearway-prometheus"


# -- loading and merging as compose does -----------------------------------------------


def env_file() -> dict[str, str]:
    """.env as compose reads it: NAME=value lines; # comments and blank lines ignored."""
    values = {}
    for raw in ENV_FILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep, f".env: not NAME=value: {line!r}"
        values[name.strip()] = value.strip()
    return values


def interpolate(node: Any, values: dict[str, str]) -> Any:
    """`node` with every `${NAME}` / `${NAME:-default}` replaced (an unknown NAME fails)."""
    if isinstance(node, dict):
        return {key: interpolate(value, values) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(value, values) for value in node]
    if not isinstance(node, str):
        return node

    def value_of(match: re.Match[str]) -> str:
        name, default = match["name"], match["default"]
        if values.get(name):
            return values[name]
        assert default is not None, f"${{{name}}} is set nowhere"
        return default

    return INTERPOLATION.sub(value_of, node)


def merge(base: Any, overlay: Any, key: str = "") -> Any:
    """`overlay` merged onto `base` the way compose merges files: mappings key by key,
    the sequences of MERGED_SEQUENCES concatenated (without repeats), anything else
    replaced."""
    if isinstance(base, dict) and isinstance(overlay, dict):
        merged = dict(base)
        for name, value in overlay.items():
            merged[name] = merge(base[name], value, name) if name in base else value
        return merged
    if isinstance(base, list) and isinstance(overlay, list) and key in MERGED_SEQUENCES:
        return base + [item for item in overlay if item not in base]
    return overlay


@pytest.fixture(scope="module")
def layer() -> dict[str, Any]:
    return yaml.safe_load(LAYER_FILE.read_text())


@pytest.fixture(scope="module")
def merged(layer: dict[str, Any]) -> dict[str, Any]:
    main = yaml.safe_load(MAIN_FILE.read_text())
    return interpolate(merge(main, layer), env_file())


def check_compose_spec(path: Path) -> None:
    checker = Path(sys.executable).parent / "check-jsonschema"
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_observability_layer_validates_against_compose_spec() -> None:
    check_compose_spec(LAYER_FILE)


def test_both_files_merged_with_env_interpolated_validate_against_compose_spec(
    merged: dict[str, Any], tmp_path: Path
) -> None:
    path = tmp_path / "merged.yml"
    path.write_text(yaml.safe_dump(merged, sort_keys=False))
    check_compose_spec(path)
    assert {*SERVICES, "portal", "kafka", *LAYER_SERVICES} <= set(merged["services"])
    assert merged["name"] == "clearway", "one project: the layer adds to the main file's"


def test_layer_adds_only_observability_to_the_main_services(layer: dict[str, Any]) -> None:
    main = yaml.safe_load(MAIN_FILE.read_text())["services"]
    for name, service in layer["services"].items():
        if name in LAYER_SERVICES:
            assert name not in main
            continue
        assert name in SCRAPED, f"{name}: the layer changes no other service"
        assert set(service) <= {"environment", "ports"}, f"{name}: only environment and ports"
        for key in service["environment"]:
            assert key.startswith(("OTEL_", "CLEARWAY_METRICS_")), f"{name}: {key}"


# -- versions ------------------------------------------------------------------------------


def test_every_image_of_the_layer_is_pinned_in_env(layer: dict[str, Any]) -> None:
    values = env_file()
    for name in LAYER_SERVICES:
        image = layer["services"][name]["image"]
        match = INTERPOLATION.fullmatch(image)
        assert match and match["default"] is None, f"{name}: image must be ${{VAR}} from .env"
        pinned = values[match["name"]]
        repository, _, tag = pinned.rpartition(":")
        assert repository and "/" not in tag, f"{name}: {pinned} has no tag"
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: {pinned} is not an exact version"


def test_env_holds_versions_and_no_secret() -> None:
    for name, value in env_file().items():
        assert not re.search(r"PASSWORD|SECRET|TOKEN|KEY", name), f".env must hold no {name}"
        assert name.endswith("_IMAGE"), f"{name}: .env holds image versions only"
        assert value


# -- the services: traces to the collector, /metrics to Prometheus ----------------------


def settings_in(merged: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch):
    """The service's settings as it reads them from its merged compose environment."""
    for key in [k for k in os.environ if k.startswith(("CLEARWAY_", "OTEL_"))]:
        monkeypatch.delenv(key)
    for key, value in merged["services"][name]["environment"].items():
        monkeypatch.setenv(key, str(value))
    return ServiceSettings.from_env(name)


def prometheus_targets() -> dict[str, set[str]]:
    """job -> its static targets."""
    config = yaml.safe_load(PROMETHEUS_FILE.read_text())
    return {
        job["job_name"]: {
            target for static in job["static_configs"] for target in static["targets"]
        }
        for job in config["scrape_configs"]
    }


@pytest.mark.parametrize("name", SERVICES)
def test_service_serves_metrics_where_prometheus_scrapes_and_traces_to_the_collector(
    merged: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_in(merged, name, monkeypatch)
    port = settings.http_metrics_port
    assert port == settings.grpc_port + 3000, "the documented default, set explicitly"
    assert settings.grpc_host == "0.0.0.0", "/metrics must be reachable from Prometheus"
    assert f"{name}:{port}" in prometheus_targets()["clearway"]
    assert f"{port}:{port}" in merged["services"][name]["ports"]
    endpoint = merged["services"][name]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
    assert endpoint == "http://otel-collector:4317"
    assert not otlp_metrics_wanted(), "Prometheus scrapes: metrics are not pushed as well"


def test_portal_serves_metrics_where_prometheus_scrapes_and_traces_to_the_collector(
    merged: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings_in(merged, "portal", monkeypatch)  # sets the portal's merged environment
    monkeypatch.delenv("CLEARWAY_FEED_DIR", raising=False)  # the image's path; not here
    settings = PortalSettings.from_env()
    port = settings.http_metrics_port
    assert port == settings.port + 3000, "the documented default, set explicitly"
    assert settings.host == "0.0.0.0", "/metrics must be reachable from Prometheus"
    assert f"portal:{port}" in prometheus_targets()["clearway"]
    assert f"{port}:{port}" in merged["services"]["portal"]["ports"]
    endpoint = merged["services"]["portal"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
    assert endpoint == "http://otel-collector:4317"


def test_prometheus_scrapes_every_service_and_nothing_unknown(merged: dict[str, Any]) -> None:
    targets = prometheus_targets()
    assert {t.split(":")[0] for t in targets["clearway"]} == set(SCRAPED)
    for job, hosts in targets.items():
        for target in hosts:
            assert target.split(":")[0] in merged["services"], f"{job}: {target}"


def promtool() -> Path:
    result = subprocess.run(
        ["bash", str(PROMTOOL_SCRIPT)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"promtool.sh failed: {result.stderr}"
    return Path(result.stdout.strip())


def test_prometheus_configuration_passes_promtool() -> None:
    result = subprocess.run(
        [str(promtool()), "check", "config", str(PROMETHEUS_FILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- the collector and Jaeger ----------------------------------------------------------


@pytest.fixture(scope="module")
def collector() -> dict[str, Any]:
    return yaml.safe_load(COLLECTOR_FILE.read_text())


def test_collector_pipelines_use_only_components_it_defines(collector: dict[str, Any]) -> None:
    pipelines = collector["service"]["pipelines"]
    assert {"traces", "metrics"} <= set(pipelines)
    for name, pipeline in pipelines.items():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in collector[kind], f"{name}: {kind} {component} undefined"
    used = {
        (kind, component)
        for pipeline in pipelines.values()
        for kind in ("receivers", "processors", "exporters")
        for component in pipeline.get(kind, [])
    }
    for kind in ("receivers", "processors", "exporters"):
        for component in collector[kind]:
            assert (kind, component) in used, f"{kind} {component} is defined but unused"


def port_of(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def test_collector_takes_otlp_from_the_services_and_sends_traces_to_jaeger(
    merged: dict[str, Any], collector: dict[str, Any], layer: dict[str, Any]
) -> None:
    services = merged["services"]
    otel = services["otel-collector"]
    (config_mount,) = otel["volumes"]
    source, target, mode = config_mount.split(":")
    assert (REPO / source).resolve() == COLLECTOR_FILE and mode == "ro"
    assert otel["command"] == [f"--config={target}"]
    grpc_in = collector["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    assert grpc_in.startswith("0.0.0.0:"), "reachable from the other containers"
    assert str(port_of(grpc_in)) in otel["expose"]
    (traces_out,) = collector["service"]["pipelines"]["traces"]["exporters"]
    endpoint = collector["exporters"][traces_out]["endpoint"]
    host, port = endpoint.split(":")
    assert host == "jaeger" and port in services["jaeger"]["expose"]
    assert services["jaeger"]["environment"]["JAEGER_LISTEN_HOST"] == "0.0.0.0"
    # Prometheus reads the collector's own metrics and those pushed to it.
    own = collector["service"]["telemetry"]["metrics"]["readers"][0]["pull"]["exporter"]
    pushed = port_of(collector["exporters"]["prometheus"]["endpoint"])
    assert prometheus_targets()["otel-collector"] == {
        f"otel-collector:{own['prometheus']['port']}",
        f"otel-collector:{pushed}",
    }


# -- Grafana: provisioning and the dashboard --------------------------------------------


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD_FILE.read_text())


def mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> the repository path bind-mounted there (read-only ones only)."""
    found = {}
    for entry in service["volumes"]:
        source, target, *mode = entry.split(":")
        if source.startswith("./"):
            assert mode == ["ro"], f"{entry}: mount configuration read-only"
            found[target] = (REPO / source).resolve()
    return found


def provisioning(merged: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    root = mounts(merged["services"]["grafana"])["/etc/grafana/provisioning"]
    return [yaml.safe_load(path.read_text()) for path in sorted((root / kind).glob("*.yaml"))]


def test_grafana_provisions_the_prometheus_and_jaeger_data_sources(
    merged: dict[str, Any],
) -> None:
    (config,) = provisioning(merged, "datasources")
    sources = {source["uid"]: source for source in config["datasources"]}
    prometheus = sources[PROMETHEUS_DATASOURCE_UID]
    assert prometheus["type"] == "prometheus" and prometheus["isDefault"]
    assert prometheus["url"] == "http://prometheus:9090"
    assert "9090:9090" in merged["services"]["prometheus"]["ports"]
    jaeger = next(s for s in sources.values() if s["type"] == "jaeger")
    assert jaeger["url"] == "http://jaeger:16686"
    assert "16686:16686" in merged["services"]["jaeger"]["ports"]


def test_grafana_loads_the_checked_in_dashboard_from_where_it_is_mounted(
    merged: dict[str, Any], dashboard: dict[str, Any]
) -> None:
    grafana = merged["services"]["grafana"]
    (config,) = provisioning(merged, "dashboards")
    (provider,) = config["providers"]
    path = provider["options"]["path"]
    assert mounts(grafana)[path] == DASHBOARD_FILE.parent
    home = PurePosixPath(grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert str(home.parent) == path and home.name == DASHBOARD_FILE.name
    assert "3000:3000" in grafana["ports"]
    assert dashboard["uid"] == "clearway", "README links /d/clearway"


def panels_of(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found += panel.get("panels", [])
    return found


def expressions(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in panels_of(dashboard) for t in p.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    """The clearway_ metrics an expression reads (label names in `by (...)` and matchers
    in `{...}` left out; a histogram's series by the histogram's name)."""
    bare = re.sub(r"\b(?:by|without)\s*\([^)]*\)|\{[^}]*\}", "", expr)
    return {
        re.sub(r"_(?:bucket|count|sum)$", "", name) for name in re.findall(r"\bclearway_\w+", bare)
    }


def test_dashboard_panels_read_the_provisioned_prometheus_and_fit_the_grid(
    dashboard: dict[str, Any],
) -> None:
    ids = [panel["id"] for panel in panels_of(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    cells: set[tuple[int, int]] = set()
    for panel in panels_of(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == PROMETHEUS_DATASOURCE_UID, panel["title"]
        assert panel.get("description"), f"{panel['title']}: say what it shows"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == PROMETHEUS_DATASOURCE_UID


def documented_metrics() -> set[str]:
    """The Prometheus names in docs/metrics.md's tables (the second column)."""
    names = set()
    for line in METRICS_DOC.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) > 2 and (match := re.fullmatch(r"`(clearway_\w+)`", cells[1])):
            names.add(match[1])
    return names


def test_dashboard_has_a_panel_for_every_documented_metric(dashboard: dict[str, Any]) -> None:
    documented = documented_metrics()
    assert len(documented) >= 13, documented
    used = set().union(*(metric_names(expr) for expr in expressions(dashboard)))
    assert documented - used == set(), "documented metrics without a panel"
    assert used - documented == set(), "the dashboard reads metrics docs/metrics.md does not name"


def test_every_dashboard_expression_is_valid_promql(
    dashboard: dict[str, Any], tmp_path: Path
) -> None:
    # promtool checks PromQL in rule files: each expression as a recording rule, with
    # Grafana's $__rate_interval as a plain duration.
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {
                        "record": f"clearway:panel_expression_{n}",
                        "expr": expr.replace("$__rate_interval", "1m"),
                    }
                    for n, expr in enumerate(expressions(dashboard))
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run(
        [str(promtool()), "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- Grafana's dashboard schema (@grafana/schema) ----------------------------------------


def schema_tools() -> Path:
    """@grafana/schema and ts-json-schema-generator as deploy/observability/grafana/
    schema-check pins them, installed with `npm ci` under var/tools/ (git-ignored) when
    missing or when the lock file changed."""
    lock = SCHEMA_CHECK / "package-lock.json"
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()[:16]
    home = TOOLS / f"grafana-schema-{digest}"
    generator = home / "node_modules" / ".bin" / "ts-json-schema-generator"
    if generator.exists():
        return home
    npm = shutil.which("npm")
    assert npm, "npm is needed for Grafana's dashboard schema (the README's set-up installs it)"
    home.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copy(SCHEMA_CHECK / name, home / name)
    result = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--silent"],
        cwd=home,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return home


def json_schema(home: Path, types: str, type_name: str, out: Path) -> dict[str, Any]:
    """JSON Schema of TypeScript type `type_name` in @grafana/schema's `types` file."""
    result = subprocess.run(
        [
            str(home / "node_modules" / ".bin" / "ts-json-schema-generator"),
            "--path",
            str(home / "node_modules" / "@grafana" / "schema" / "dist" / "types" / types),
            "--type",
            type_name,
            "--no-type-check",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    schema: dict[str, Any] = json.loads(out.read_text())
    return schema


def errors_of(schema: dict[str, Any], document: Any) -> list[str]:
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'/'.join(str(p) for p in error.absolute_path)}: {error.message}"
        for error in validator.iter_errors(document)
    ]


@pytest.fixture(scope="module")
def grafana_schema_home() -> Path:
    return schema_tools()


def test_schema_package_is_the_version_of_the_grafana_image() -> None:
    pinned = json.loads((SCHEMA_CHECK / "package.json").read_text())["devDependencies"]
    image = env_file()["GRAFANA_IMAGE"]
    assert image.rpartition(":")[2] == pinned["@grafana/schema"]


def test_dashboard_validates_against_grafanas_dashboard_schema(
    grafana_schema_home: Path, dashboard: dict[str, Any], tmp_path: Path
) -> None:
    schema = json_schema(
        grafana_schema_home, "raw/dashboard/x/types.gen.d.ts", "Dashboard", tmp_path / "d.json"
    )
    assert schema["definitions"]["Dashboard"]["additionalProperties"] is False, "strict"
    assert errors_of(schema, dashboard) == []


def test_every_panels_options_validate_against_its_panel_types_schema(
    grafana_schema_home: Path, dashboard: dict[str, Any], tmp_path: Path
) -> None:
    """`options`, and `fieldConfig.defaults.custom` (when given, and the panel type
    declares a FieldConfig), against the panel type's own types."""
    panels = [p for p in panels_of(dashboard) if p["type"] != "row"]
    for kind in sorted({p["type"] for p in panels}):
        types = f"raw/composable/{kind}/panelcfg/x/types.gen.d.ts"
        options = json_schema(grafana_schema_home, types, "Options", tmp_path / f"{kind}.json")
        declared = (
            grafana_schema_home / "node_modules/@grafana/schema/dist/types" / types
        ).read_text()
        custom = None
        if "export interface FieldConfig " in declared:
            custom = json_schema(
                grafana_schema_home, types, "FieldConfig", tmp_path / f"{kind}-field.json"
            )
        for panel in (p for p in panels if p["type"] == kind):
            assert errors_of(options, panel["options"]) == [], panel["title"]
            field = panel["fieldConfig"]["defaults"].get("custom")
            if custom is not None and field is not None:
                assert errors_of(custom, field) == [], panel["title"]
