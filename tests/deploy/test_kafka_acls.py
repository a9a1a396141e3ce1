"""Kafka ACLs of the production overlay: each back-end service may do on Kafka what its code
does, and nothing more (k8s/overlays/production/kafka-users.yaml, kafka.yaml).

What a service does is read from its code, not from a list kept beside the manifests:

- its composition root (services/<service>/app.py), parsed with `ast`: which `Topics`
  properties it hands to which adapter or `Resources` method, and what that callee does
  with them on Kafka (`CALLEES`, read off the adapters' code). A topic handed to a callee
  the table does not know fails the test until someone says what the callee does;
- the names its production settings give (the rendered ConfigMap and Deployment, read as
  test_k8s_production's `settings_from` does): topic prefix, consumer group;
- ingest's transactional ids from `default_writer_id`, the function that makes them;
- the dead-letter topics from `clearway.consumer.dead_letter_topic`, the kit's one rule.

The nightly reports job (k8s/reports.yaml) has no composition root: its Kafka use is read
from the `usage` command (services/reports/entrypoints/cli.py, `read_usage`), which hands
topics to the adapters, and from the adapters (services/reports/adapters), followed down to
the one function that makes a Kafka client, `read_topic`, whose client is checked to be a
consumer without a group.

So a topic added to a service without its ACL, or an ACL nobody uses, fails here, before
a broker in production refuses the service (or lets it do too much).
"""

from __future__ import annotations

import ast
import json
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from clearway.consumer import dead_letter_topic
from clearway.kafka import Topics
from services.ingest import app as ingest_app
from services.reports.entrypoints import cli as reports_cli
from tests.deploy.test_k8s_production import (
    BACKENDS,
    CONSUMED,
    KAFKA_CLIENTS,
    KAFKA_CLUSTER,
    REPO,
    REPORTS,
    crd_schemas,
    env_of,
    environment_from,
    of_kind,
    readme_dead_letter_topics,
    rendered,
    schema_errors,
    settings_from,
)

# test_k8s_production's fixtures, taken by name by the tests below (pytest finds a fixture
# among a module's names); listed here so that linters see them used.
__all__ = ["crd_schemas", "rendered"]

SERVICES_DIR = REPO / "services"
K8S_README = REPO / "k8s" / "README.md"
REPORTS_CODE = SERVICES_DIR / "reports"
# The reports' command that the CronJob runs, the function of it that reads Kafka, and the
# one function of the reports that makes a Kafka client (a consumer without a group that
# reads a topic whole), with the parameter that names its topic.
REPORTS_COMMAND = REPORTS_CODE / "entrypoints" / "cli.py"
REPORTS_COMMAND_READER = "read_usage"
REPORTS_KAFKA_READER = ("read_topic", "topic")
# What makes a Kafka client, or needs more than Read and Describe.
KAFKA_CLIENT_MAKERS = {
    "AIOKafkaConsumer",
    "AIOKafkaProducer",
    "AIOKafkaAdminClient",
    "client_options",
    "committed_consumer",
    "idempotent_producer",
    "transactional_producer",
    "ensure_topics",
}

READ, WRITE, DESCRIBE = "Read", "Write", "Describe"
# What each callee of a composition root does on Kafka with the topics handed to it, as its
# code does it. `consume` (the kit's consumer loop) is handled apart: group, dead letters.
CALLEES: dict[str, frozenset[str]] = {
    # clearway.runtime.Resources.topics -> clearway.kafka.ensure_topics: lists the topics
    # (a topic it cannot Describe looks missing, and it would try to create it).
    "topics": frozenset({DESCRIBE}),
    # ingest (services/ingest/adapters): the transactional tap writer (taps, dead letters);
    # its commit log, written in each transaction and read back to settle a write whose
    # outcome was not seen; the deny list's publisher (admin RPCs) and the followers of
    # the deny list and the concessions (no group).
    "TapWriter": frozenset({WRITE}),
    "CommitLog": frozenset({READ, WRITE}),
    "DenyListPublisher": frozenset({WRITE}),
    "DenyListFollower": frozenset({READ}),
    "ConcessionFollower": frozenset({READ}),
    # fares: the outbox relay of priced journeys; the close of a day asks the end offsets
    # of `taps` (ListOffsets: Describe) through the consumer loop's consumer.
    "OutboxRelay": frozenset({WRITE}),
    "FaresPorts": frozenset({DESCRIBE}),
    # settlement: issued statements; the lag probe describes the topics (and reads the
    # group's committed offsets, below).
    "StatementEvents": frozenset({WRITE}),
    "GroupLag": frozenset({DESCRIBE}),
    # accounts: outbox rows (services/accounts/adapters/outbox.py relays them).
    "BalanceBook": frozenset({WRITE}),
    "BankCharging": frozenset({WRITE}),
    "BenefitsContext": frozenset({WRITE}),
    "CardConcessions": frozenset({WRITE}),
    "Claims": frozenset({WRITE}),
    "StoredValue": frozenset({WRITE}),
    # Handlers and ports that only compare a record's topic with the name, or key their
    # stored positions by it: no Kafka request of their own.
    "AcceptPorts": frozenset(),
    "JourneyPoster": frozenset(),
    "JourneyRecorder": frozenset(),
    "TapPricer": frozenset(),
}
TOPIC_PROPERTIES = tuple(
    name for name, member in vars(Topics).items() if isinstance(member, property)
)
# Admin calls a service would need more than these ACLs for (Create, Delete, Alter...).
FORBIDDEN_ADMIN_CALLS = {
    "create_topics",
    "delete_topics",
    "delete_topics_with_prefix",
    "delete_records",
    "alter_configs",
    "create_partitions",
}


@dataclass
class KafkaUse:
    """What a service does on Kafka, by resource."""

    reads: set[str] = field(default_factory=set)
    consumed: set[str] = field(default_factory=set)  # read by the kit's loop, in the group
    writes: set[str] = field(default_factory=set)
    names: set[str] = field(default_factory=set)  # every topic it names: Describe
    groups: set[str] = field(default_factory=set)
    transactional_id_prefixes: set[str] = field(default_factory=set)

    def acls(self) -> dict[tuple[str, str, str], frozenset[str]]:
        """The ACLs that allow exactly this: (resource type, name, pattern) -> operations."""
        wanted: dict[tuple[str, str, str], frozenset[str]] = {}
        for topic in self.names | self.reads | self.writes:
            ops = {DESCRIBE} | ({READ} if topic in self.reads else set())
            ops |= {WRITE} if topic in self.writes else set()
            wanted[("topic", topic, "literal")] = frozenset(ops)
        for group in self.groups:
            wanted[("group", group, "literal")] = frozenset({READ})
        for prefix in self.transactional_id_prefixes:
            wanted[("transactionalId", prefix, "prefix")] = frozenset({WRITE, DESCRIBE})
        return wanted


# -- reading the code ------------------------------------------------------------------------


def app_source(service: str) -> ast.Module:
    path = SERVICES_DIR / service / "app.py"
    return ast.parse(path.read_text(), str(path))


def callee_name(call: ast.Call) -> str:
    func = call.func
    return func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")


def is_topics(node: ast.expr) -> bool:
    """`topics` or `<anything>.topics`: a `Topics` (ServiceSettings.topics)."""
    return (isinstance(node, ast.Name) and node.id == "topics") or (
        isinstance(node, ast.Attribute) and node.attr == "topics"
    )


def list_assignments(tree: ast.Module) -> dict[str, ast.expr]:
    """Local names bound to a list or tuple (`consumed = [s.topics.journeys, ...]`)."""
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.List | ast.Tuple):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = node.value
    return found


def topics_of(node: ast.expr, topics: Topics, lists: dict[str, ast.expr]) -> list[str]:
    """The topic names an argument stands for: `topics.taps`, a list of those, `*consumed`;
    nested calls (other adapters) are looked at on their own. `topics.all()` fails: a
    service names the topics it uses, never every topic of Clearway."""
    if isinstance(node, ast.Attribute) and node.attr in TOPIC_PROPERTIES and is_topics(node.value):
        return [getattr(topics, node.attr)]
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "all"
        and is_topics(node.func.value)
    ):
        # Least privilege: ensuring every topic would need Describe on topics the service
        # never reads or writes.
        raise AssertionError(
            f"line {node.lineno}: `topics.all()` names every topic of Clearway; name the"
            " topics the service reads or writes (their users create the others)"
        )
    if isinstance(node, ast.List | ast.Tuple):
        return [name for element in node.elts for name in topics_of(element, topics, lists)]
    if isinstance(node, ast.Starred):
        return topics_of(node.value, topics, lists)
    if isinstance(node, ast.Name) and node.id in lists:
        return topics_of(lists[node.id], topics, lists)
    return []


def arguments(call: ast.Call) -> Iterator[tuple[str | None, ast.expr]]:
    yield from ((None, arg) for arg in call.args)
    yield from ((kw.arg, kw.value) for kw in call.keywords)


def every_topic_named(tree: ast.Module, topics: Topics) -> set[str]:
    """Every `topics.<property>` anywhere in the module."""
    named: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute | ast.Call):
            named |= set(topics_of(node, topics, {}))
    return named


def writer_id_prefix(prefix: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """What every id `default_writer_id` makes starts with: the id up to the host name."""
    monkeypatch.setattr(socket, "gethostname", lambda: "HOST")
    writer = ingest_app.default_writer_id(prefix)
    return writer[: writer.index("HOST")]


def kafka_use(
    service: str, docs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> KafkaUse:
    """What `service` does on Kafka in production, from its app.py and production settings."""
    settings = settings_from(docs, service, monkeypatch)
    topics, group = settings.topics, settings.consumer_group
    tree = app_source(service)
    lists = list_assignments(tree)
    use = KafkaUse()
    understood: set[str] = set()
    for call in (node for node in ast.walk(tree) if isinstance(node, ast.Call)):
        name = callee_name(call)
        for keyword, value in arguments(call):
            if keyword == "transactional_id":
                called = {callee_name(c) for c in ast.walk(value) if isinstance(c, ast.Call)}
                assert "default_writer_id" in called, f"{service}: a transactional id from where?"
                use.transactional_id_prefixes.add(writer_id_prefix(topics.prefix, monkeypatch))
            if isinstance(value, ast.Attribute) and value.attr == "consumer_group":
                use.groups.add(group)  # GroupLag: the group's committed offsets
            named = topics_of(value, topics, lists)
            if not named:
                continue
            understood |= set(named)
            use.names |= set(named)
            if name == "consume" and keyword == "topics":
                # The kit's loop: the service's group reads them; a poison record goes to
                # its dead-letter topic, which Resources.consume also ensures.
                use.reads |= set(named)
                use.consumed |= set(named)
                use.groups.add(group)
                letters = {dead_letter_topic(topic, settings.service) for topic in named}
                use.writes |= letters
                use.names |= letters
                continue
            assert name in CALLEES, (
                f"services/{service}/app.py hands {named} to {name}: add what {name} does on"
                " Kafka to CALLEES (and the ACLs it needs to kafka-users.yaml)"
            )
            if READ in CALLEES[name]:
                use.reads |= set(named)
            if WRITE in CALLEES[name]:
                use.writes |= set(named)
    missed = every_topic_named(tree, topics) - understood
    assert not missed, f"services/{service}/app.py names {missed} outside any call understood"
    return use


# -- the reports job: its command and adapters ---------------------------------------------


def functions_of(paths: list[Path]) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    """The module-level functions defined in `paths`, by name (each name once)."""
    found: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
    for path in paths:
        for node in ast.parse(path.read_text(), str(path)).body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.name not in found, f"{path}: a second {node.name}"
                found[node.name] = node
    return found


def parameter_of(
    function: ast.FunctionDef | ast.AsyncFunctionDef, keyword: str | None, position: int
) -> str | None:
    """The parameter of `function` that a call's argument (by keyword, else position) binds."""
    if keyword is not None:
        return keyword
    positional = [a.arg for a in (*function.args.posonlyargs, *function.args.args)]
    return positional[position] if position < len(positional) else None


def call_arguments(call: ast.Call) -> Iterator[tuple[str | None, int, ast.expr]]:
    """(keyword or None, position, value) of each argument of `call`."""
    yield from ((None, i, arg) for i, arg in enumerate(call.args))
    yield from ((kw.arg, -1, kw.value) for kw in call.keywords)


def topic_parameters_read(
    functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef],
) -> set[tuple[str, str]]:
    """(function, parameter) of every function whose parameter ends up as the topic that
    REPORTS_KAFKA_READER reads: the reader's own, then whoever passes a parameter on to one
    of those, until nothing changes."""
    read = {REPORTS_KAFKA_READER}
    while True:
        more = set(read)
        for name, function in functions.items():
            params = {a.arg for a in (*function.args.posonlyargs, *function.args.args)}
            for call in (n for n in ast.walk(function) if isinstance(n, ast.Call)):
                callee = functions.get(callee_name(call))
                if callee is None:
                    continue
                for keyword, position, value in call_arguments(call):
                    if not isinstance(value, ast.Name) or value.id not in params:
                        continue
                    if (callee.name, parameter_of(callee, keyword, position)) in read:
                        more.add((name, value.id))
        if more == read:
            return read
        read = more


def reports_topics(docs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> Topics:
    """The topic names of the reports job: its container's environment, as the command's
    `--topic-prefix` defaults to it (the job passes none)."""
    environment_from(docs, REPORTS, monkeypatch)
    args = reports_cli._parser().parse_args(["usage", "--period", "2026-06", "--out", "x"])
    return Topics(args.topic_prefix)


def reports_kafka_use(docs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> KafkaUse:
    """What `clearway reports usage` does on Kafka in production: the topics `read_usage`
    hands to adapters that pass them on to `read_topic`."""
    topics = reports_topics(docs, monkeypatch)
    command = functions_of([REPORTS_COMMAND])
    adapters = functions_of(sorted((REPORTS_CODE / "adapters").glob("*.py")))
    reading = topic_parameters_read(adapters)
    reader = command[REPORTS_COMMAND_READER]
    use = KafkaUse()
    understood: set[str] = set()
    for call in (node for node in ast.walk(reader) if isinstance(node, ast.Call)):
        name = callee_name(call)
        for keyword, position, value in call_arguments(call):
            named = topics_of(value, topics, {})
            if not named:
                continue
            understood |= set(named)
            assert name in adapters, f"read_usage hands {named} to {name}: what does it do?"
            bound = parameter_of(adapters[name], keyword, position)
            assert (name, bound) in reading, f"{name} does not read {named}: what then?"
            use.reads |= set(named)
            use.names |= set(named)
    command_tree = ast.parse(REPORTS_COMMAND.read_text())
    missed = every_topic_named(command_tree, topics) - understood
    assert not missed, f"{REPORTS_COMMAND} names {missed} outside read_usage's reads"
    return use


@pytest.fixture
def uses(rendered: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> dict[str, KafkaUse]:
    found = {service: kafka_use(service, rendered, monkeypatch) for service in BACKENDS}
    return {**found, REPORTS: reports_kafka_use(rendered, monkeypatch)}


def granted(user: dict[str, Any]) -> dict[tuple[str, str, str], frozenset[str]]:
    """A KafkaUser's ACLs by resource (type, name, pattern type); each resource once."""
    acls: dict[tuple[str, str, str], frozenset[str]] = {}
    for rule in user["spec"]["authorization"]["acls"]:
        resource = rule["resource"]
        key = (resource["type"], resource.get("name", ""), resource.get("patternType", "literal"))
        assert key not in acls, f"{user['metadata']['name']}: {key} in two rules"
        acls[key] = frozenset(rule["operations"])
    return acls


def users_of(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The KafkaUser of each back-end service and of the reports job; no other."""
    users = of_kind(docs, "KafkaUser")
    assert set(users) == {f"clearway-{client}" for client in KAFKA_CLIENTS}
    return {client: users[f"clearway-{client}"] for client in KAFKA_CLIENTS}


def service_files(service: str) -> Iterator[Path]:
    """The service's code, its tests left out."""
    for path in sorted((SERVICES_DIR / service).rglob("*.py")):
        if "tests" not in path.relative_to(SERVICES_DIR / service).parts:
            yield path


# -- the cluster and the users -------------------------------------------------------------


def test_the_cluster_authorizes_with_kafkas_own_authorizer(rendered: list[dict[str, Any]]) -> None:
    (kafka,) = of_kind(rendered, "Kafka").values()
    assert kafka["metadata"]["name"] == KAFKA_CLUSTER
    # `simple` in KRaft: the StandardAuthorizer; Strimzi adds its operators as super users.
    # No super user of ours: nothing Clearway runs may bypass the ACLs.
    assert kafka["spec"]["kafka"]["authorization"] == {"type": "simple"}
    (listener,) = kafka["spec"]["kafka"]["listeners"]
    assert listener["authentication"] == {"type": "tls"}, "ACLs name the certificate's user"


def test_every_kafka_user_has_simple_authorization_and_validates_against_its_crd(
    rendered: list[dict[str, Any]], crd_schemas: dict[str, Path]
) -> None:
    for service, user in users_of(rendered).items():
        assert user["spec"]["authorization"]["type"] == "simple", service
        assert user["spec"]["authorization"]["acls"], service
        assert not schema_errors(user, crd_schemas), schema_errors(user, crd_schemas)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("operations", 0), "Wrtie"),
        (("resource", "type"), "topics"),
        (("resource", "patternType"), "prefixed"),
        (("operation",), "Read"),  # the v1beta2 field, gone in v1
    ],
)
def test_the_crd_refuses_a_broken_acl(
    rendered: list[dict[str, Any]],
    crd_schemas: dict[str, Path],
    path: tuple[str | int, ...],
    value: str,
) -> None:
    user = json.loads(json.dumps(users_of(rendered)["fares"]))
    target = user["spec"]["authorization"]["acls"][0]
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    assert schema_errors(user, crd_schemas), f"an ACL with {path}={value!r} passed"


# -- what the code does, and what the ACLs allow ---------------------------------------------


@pytest.mark.parametrize("service", KAFKA_CLIENTS)
def test_each_service_is_allowed_exactly_what_its_code_does_on_kafka(
    rendered: list[dict[str, Any]], uses: dict[str, KafkaUse], service: str
) -> None:
    wanted = uses[service].acls()
    allowed = granted(users_of(rendered)[service])
    missing = {key: ops - allowed.get(key, frozenset()) for key, ops in wanted.items()}
    assert not {k: v for k, v in missing.items() if v}, f"{service} needs these ACLs: {missing}"
    extra = {key: ops - wanted.get(key, frozenset()) for key, ops in allowed.items()}
    assert not {k: v for k, v in extra.items() if v}, f"{service} uses none of these: {extra}"


def test_no_service_may_write_a_topic_it_does_not_produce(
    rendered: list[dict[str, Any]], uses: dict[str, KafkaUse]
) -> None:
    for service, user in users_of(rendered).items():
        writable = {
            name
            for (kind, name, _), ops in granted(user).items()
            if kind == "topic" and ({WRITE, "All"} & ops)
        }
        assert writable <= uses[service].writes, (service, writable - uses[service].writes)


def test_no_service_names_a_topic_it_neither_reads_nor_writes(
    rendered: list[dict[str, Any]], uses: dict[str, KafkaUse]
) -> None:
    # Least privilege: a service ensures at start only the topics it uses (each topic's
    # users create it), so no KafkaUser is granted Describe alone on a topic.
    for service, use in uses.items():
        assert use.names <= use.reads | use.writes, (service, use.names - use.reads - use.writes)
    for service, user in users_of(rendered).items():
        alone = {
            name
            for (kind, name, _), ops in granted(user).items()
            if kind == "topic" and ops == {DESCRIBE}
        }
        assert not alone, (service, alone)


def test_no_acl_uses_wildcards_all_operations_or_the_cluster(
    rendered: list[dict[str, Any]],
) -> None:
    for service, user in users_of(rendered).items():
        for rule in user["spec"]["authorization"]["acls"]:
            resource = rule["resource"]
            assert rule.get("type", "allow") == "allow", (service, rule)
            assert "All" not in rule["operations"], (service, rule)
            assert rule.get("host", "*") == "*", (service, rule)  # pods have no fixed address
            # Kafka's `cluster` resource: IdempotentWrite is implied by Write on a topic
            # since Kafka 3.0 (KIP-679); nothing else of the cluster is the services'.
            assert resource["type"] in {"topic", "group", "transactionalId"}, (service, rule)
            assert resource["name"] and "*" not in resource["name"], (service, rule)
            pattern = resource.get("patternType", "literal")
            # A prefix only for ingest's transactional ids, which carry a host and a pid.
            assert pattern == "literal" or resource["type"] == "transactionalId", (service, rule)


def test_every_topic_of_an_acl_is_a_kafka_topic(rendered: list[dict[str, Any]]) -> None:
    declared = {doc["spec"]["topicName"] for doc in of_kind(rendered, "KafkaTopic").values()}
    for service, user in users_of(rendered).items():
        topics = {name for (kind, name, _) in granted(user) if kind == "topic"}
        assert topics <= declared, (service, topics - declared)


def test_ingest_writer_ids_start_with_the_acls_prefix_in_every_worker(
    rendered: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fixed CLEARWAY_INGEST_WRITER_ID would replace default_writer_id (and be shared by
    # every worker and replica): the ACL's prefix is made for default_writer_id's ids.
    assert "CLEARWAY_INGEST_WRITER_ID" not in env_of(rendered, "ingest")
    configmap = of_kind(rendered, "ConfigMap")["clearway-config"]["data"]
    assert "CLEARWAY_INGEST_WRITER_ID" not in configmap
    settings = settings_from(rendered, "ingest", monkeypatch)
    prefixes = {p for kind, p, _ in granted(users_of(rendered)["ingest"]) if kind != "topic"}
    assert prefixes == {writer_id_prefix(settings.topics.prefix, monkeypatch)}
    (prefix,) = prefixes
    for worker in ("0", "1"):
        monkeypatch.setenv("CLEARWAY_WORKER_INDEX", worker)
        monkeypatch.setattr(socket, "gethostname", lambda: "ingest-5d8c7b9f4-x2x7q")
        assert ingest_app.default_writer_id(settings.topics.prefix).startswith(prefix)


# -- the code this test reads, and the other manifests and docs ---------------------------


def test_only_what_the_composition_roots_wire_makes_transactional_producers() -> None:
    # A transactional producer anywhere in a service needs a transactionalId ACL: the
    # composition root must pass its id (as ingest's does to TapWriter) so that this test
    # sees it.
    for service in BACKENDS:
        wired = any(
            kw.arg == "transactional_id"
            for node in ast.walk(app_source(service))
            if isinstance(node, ast.Call)
            for kw in node.keywords
        )
        makers = [
            path.name
            for path in service_files(service)
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Call)
            and path.name != "app.py"
            and (
                callee_name(node) == "transactional_producer"
                or any(kw.arg == "transactional_id" for kw in node.keywords)
            )
        ]
        assert bool(makers) == wired, (service, makers)


def test_services_join_no_consumer_group_but_their_own_and_make_no_topics() -> None:
    # The kit's loop joins the service's group (settings.consumer_group); every other
    # consumer of a service (and the reports') is assigned partitions without a group
    # (group_id=None).
    for service in KAFKA_CLIENTS:
        for path in service_files(service):
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, ast.Call):
                    continue
                for kw in node.keywords:
                    if kw.arg == "group_id":
                        constant = isinstance(kw.value, ast.Constant) and kw.value.value is None
                        assert constant, f"{path}: a consumer group the ACLs do not know"
                assert callee_name(node) not in {"committed_consumer", *FORBIDDEN_ADMIN_CALLS}, (
                    f"{path}: {callee_name(node)} needs ACLs this test does not grant"
                )


def test_the_consumers_and_dead_letters_agree_with_the_other_deploy_tests(
    uses: dict[str, KafkaUse],
) -> None:
    # test_k8s_production's CONSUMED (topics, partitions, the README's dead-letter table)
    # is what the code consumes; the README's dead-letter table what it writes.
    consumed = {service: use.consumed for service, use in uses.items() if use.consumed}
    assert consumed == {service: set(topics) for service, topics in CONSUMED.items()}
    letters = {t for use in uses.values() for t in use.writes if t.endswith(".dlq")}
    assert letters == readme_dead_letter_topics()


def test_the_reports_make_one_kafka_client_a_consumer_without_a_group() -> None:
    """Only `read_topic` makes a Kafka client in the reports, and it is a consumer that
    joins no group and commits nothing: what `reports_kafka_use` takes it to be."""
    reader, _ = REPORTS_KAFKA_READER
    makers = {
        (path.name, function.name): callee_name(node)
        for path in service_files(REPORTS)
        for function in ast.walk(ast.parse(path.read_text()))
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef)
        for node in ast.walk(function)
        if isinstance(node, ast.Call) and callee_name(node) in KAFKA_CLIENT_MAKERS
    }
    assert {function for _, function in makers} == {reader}, makers
    adapters = functions_of(sorted((REPORTS_CODE / "adapters").glob("*.py")))
    made = [n for n in ast.walk(adapters[reader]) if isinstance(n, ast.Call)]
    (consumer,) = [call for call in made if callee_name(call) == "AIOKafkaConsumer"]
    options = {kw.arg: kw.value for kw in consumer.keywords}
    group, commit = options["group_id"], options["enable_auto_commit"]
    assert isinstance(group, ast.Constant) and group.value is None
    assert isinstance(commit, ast.Constant) and commit.value is False
    assert not [call for call in made if callee_name(call) in {"commit", "send", "send_and_wait"}]


def test_the_reports_job_may_only_read_journeys_and_benefits(
    rendered: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    topics = reports_topics(rendered, monkeypatch)
    assert granted(users_of(rendered)[REPORTS]) == {
        ("topic", topics.journeys, "literal"): frozenset({READ, DESCRIBE}),
        ("topic", topics.benefits, "literal"): frozenset({READ, DESCRIBE}),
    }


def readme_acl_rows() -> dict[str, dict[str, set[str]]]:
    """k8s/README.md's table of the ACLs: service -> column -> names."""
    text = K8S_README.read_text()
    header = "| service (`KafkaUser`) | Read | Write | Describe only | group | transactional ids |"
    assert header in text, "k8s/README.md lost its table of the Kafka ACLs"
    columns = ("Read", "Write", "Describe only", "group", "transactional ids")
    rows = {}
    for line in text[text.index(header) :].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        service = re.match(r"(\w+)", cells[0]).group(1)  # type: ignore[union-attr]
        rows[service] = {
            column: set(re.findall(r"`([^`]+)`", cell))
            for column, cell in zip(columns, cells[1:], strict=True)
        }
    return rows


def test_the_readme_table_says_what_each_user_is_allowed(rendered: list[dict[str, Any]]) -> None:
    rows = readme_acl_rows()
    assert set(rows) == set(KAFKA_CLIENTS)
    for service, user in users_of(rendered).items():
        acls = granted(user)
        topic = {name: ops for (kind, name, _), ops in acls.items() if kind == "topic"}
        assert rows[service] == {
            "Read": {name for name, ops in topic.items() if READ in ops},
            "Write": {name for name, ops in topic.items() if WRITE in ops},
            "Describe only": {name for name, ops in topic.items() if ops == {DESCRIBE}},
            "group": {name for (kind, name, _) in acls if kind == "group"},
            "transactional ids": {
                f"{name}*" for (kind, name, _) in acls if kind == "transactionalId"
            },
        }, service
