"""A local Apache Kafka: one KRaft node (broker + controller) run from Maven Central jars.

deploy/kafka/pom.xml pins the version (`kafka.version`); Maven copies the jars into
.infra/kafka/libs once per version, and the broker runs as a plain JVM process.

`clearway infra up` runs it in plaintext. Tests may run another one beside it with TLS
(`BrokerTls`: clients must present a certificate), from the same jars (`jars=`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import signal
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from clearway.infra.endpoints import FROM_ENV, LOCAL_HOST, FromEnv, KafkaTls
from clearway.infra.process import (
    PROBE_THREAD_NAME,
    InfraError,
    ProcessRecord,
    describe_error,
    log,
    port_open,
    run_async,
    stop_recorded,
    tail,
    wait_until,
    which_or_install,
)

# Fixed so a wiped data dir re-formats to the same cluster (base64 of "ClearwayLocalKaf").
CLUSTER_ID = "Q2xlYXJ3YXlMb2NhbEthZg"
NODE_ID = 1
START_TIMEOUT_S = 120.0
JVM_HEAP = ("-Xms256m", "-Xmx768m")
JAVA_PACKAGE = "openjdk-17-jre-headless"
_POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}


async def check_kafka(
    bootstrap: str, wait_s: float = 5.0, tls: KafkaTls | FromEnv | None = FROM_ENV
) -> None:
    """Ask the cluster at `bootstrap` for metadata; raises unless a broker answers.

    By default it connects as the services do (TLS when CLEARWAY_KAFKA_CA/CERT/KEY say so:
    an external cluster); a local broker says how it is reached (None: plaintext)."""
    from aiokafka.client import AIOKafkaClient  # noqa: PLC0415 - keep --help light

    from clearway.kafka import client_options  # noqa: PLC0415 - likewise

    client = AIOKafkaClient(
        **client_options(bootstrap, tls),
        request_timeout_ms=int(wait_s * 1000),
        connections_max_idle_ms=int(wait_s * 2000),
    )
    try:
        await client.bootstrap()
        if not client.cluster.brokers():
            raise InfraError(f"kafka at {bootstrap} answered with no brokers")
    finally:
        await client.close()


class _DropProbeNoise(logging.Filter):
    """Drop aiokafka's connection warnings logged from our probe threads.

    A probe that fails is reported as "down" with its reason; aiokafka's own
    "Unable connect" lines would only repeat it, once per poll.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.threadName != PROBE_THREAD_NAME


_probe_filter = _DropProbeNoise()


def probe_kafka(bootstrap: str) -> str | None:
    """None when Kafka at `bootstrap` answers a metadata request, else why not; connecting
    as the services do (an external cluster: TLS when CLEARWAY_KAFKA_CA/CERT/KEY say so)."""
    return probe_kafka_over(bootstrap, FROM_ENV)


def probe_kafka_over(bootstrap: str, tls: KafkaTls | FromEnv | None) -> str | None:
    """`probe_kafka` connecting with `tls` (None: plaintext), as `check_kafka` takes it."""
    for name in ("aiokafka", "aiokafka.conn", "aiokafka.client", "aiokafka.cluster"):
        logger = logging.getLogger(name)
        if _probe_filter not in logger.filters:
            logger.addFilter(_probe_filter)
    try:
        run_async(lambda: check_kafka(bootstrap, tls=tls))
    except Exception as exc:  # every failure is a "down" with its reason
        return describe_error(exc)
    return None


def pinned_version(pom: Path) -> str:
    """The `kafka.version` property of deploy/kafka/pom.xml."""
    node = ET.parse(pom).getroot().find("m:properties/m:kafka.version", _POM_NS)  # noqa: S314
    if node is None or not (node.text or "").strip():
        raise InfraError(f"{pom} has no <kafka.version> property")
    return (node.text or "").strip()


@dataclass(frozen=True, slots=True)
class BrokerTls:
    """TLS for a local broker: its certificate (naming 127.0.0.1) and PKCS#8 private key in
    PEM, the CA whose certificates its clients must present (mutual TLS, required), the port
    of its replication listener, and how its own probe connects.

    The brokers' own connections (transaction markers go over them even on one node) use a
    listener of their own, TLS without client certificates: a broker presents its server
    certificate when it connects, and a server-only certificate cannot be a TLS client's."""

    cert: Path
    key: Path
    client_ca: Path
    replication_port: int
    probe: KafkaTls


class LocalKafka:
    """A single-node KRaft cluster on 127.0.0.1:`port` (controller on `controller_port`).

    Plaintext unless `tls` is given. `jars`: a directory of the pinned version's jars
    already fetched (another instance's `kafka/libs`), used as it is: nothing is fetched.
    `properties`: broker settings written last, over the ones above (a test's authorizer).
    """

    name = "kafka"

    def __init__(
        self,
        base_dir: Path,
        repo_root: Path,
        port: int,
        controller_port: int,
        *,
        tls: BrokerTls | None = None,
        jars: Path | None = None,
        properties: Mapping[str, str] | None = None,
    ) -> None:
        self.root = base_dir / "kafka"
        self.pom = repo_root / "deploy" / "kafka" / "pom.xml"
        self.log4j = repo_root / "deploy" / "kafka" / "log4j.properties"
        self.port = port
        self.controller_port = controller_port
        self.tls = tls
        self.properties = dict(properties or {})
        self.bootstrap = f"{LOCAL_HOST}:{port}"
        self.shared_jars = jars is not None
        self.libs = jars if jars is not None else self.root / "libs"
        self.config = self.root / "config" / "server.properties"
        self.data = self.root / "data"
        self.logs = self.root / "logs"
        self.console = self.logs / "kafka.out"
        self.record_path = base_dir / "run" / "kafka.json"

    @property
    def address(self) -> str:
        """Where clients connect."""
        return self.bootstrap

    def probe(self) -> str | None:
        """None when healthy, else why not."""
        return probe_kafka_over(self.bootstrap, self.tls.probe if self.tls is not None else None)

    def _markers(self) -> tuple[str, ...]:
        return ("kafka.Kafka", str(self.config.resolve()))

    def running_record(self) -> ProcessRecord | None:
        """Our live broker, if there is one."""
        return ProcessRecord.live(self.record_path)

    def start(self) -> None:
        """Fetch jars and format storage once; start the broker unless ours runs; wait."""
        running = self.running_record()
        if running is not None:
            # It may still be starting (another `up` just launched it): wait, don't fail.
            wait_until(
                "kafka",
                self.probe,
                running.is_ours_and_alive,
                START_TIMEOUT_S,
                self._log_for_errors(),
            )
            log(f"kafka: already up at {self.bootstrap}")
            return
        ports = [self.port, self.controller_port]
        if self.tls is not None:
            ports.append(self.tls.replication_port)
        for port in ports:
            if port_open(LOCAL_HOST, port):
                raise InfraError(
                    f"kafka: port {port} is taken by a server we did not start; stop it, or "
                    f"use a running Kafka by setting CLEARWAY_KAFKA_BOOTSTRAP"
                )
        java = self._java()
        version = self._ensure_jars(java)
        self._write_config()
        self._format_storage(java)
        self.logs.mkdir(parents=True, exist_ok=True)
        tls = " with mutual TLS" if self.tls is not None else ""
        log(f"kafka: starting Kafka {version} (KRaft) on {self.bootstrap}{tls}")
        with self.console.open("ab") as out:
            proc = subprocess.Popen(
                self._java_command(java, "kafka.Kafka", str(self.config.resolve())),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                start_new_session=True,
            )
        record = ProcessRecord(pid=proc.pid, markers=self._markers())
        record.save(self.record_path)
        try:
            wait_until(
                "kafka",
                self.probe,
                record.is_ours_and_alive,
                START_TIMEOUT_S,
                self._log_for_errors(),
            )
        except InfraError:
            log(f"kafka: last lines of {self.console}:\n{tail(self.console, 15)}")
            raise
        log(f"kafka: up at {self.bootstrap} (pid {proc.pid})")

    def stop(self) -> None:
        """Stop our broker (controlled shutdown on SIGTERM); leave any other one alone."""
        stop_recorded(self.record_path, "kafka", [(signal.SIGTERM, 60.0), (signal.SIGKILL, 5.0)])

    # -- steps -----------------------------------------------------------------------

    def _log_for_errors(self) -> Path:
        server_log = self.logs / "server.log"
        return server_log if server_log.exists() else self.console

    def _java(self) -> str:
        java_home = os.environ.get("JAVA_HOME")
        if java_home and (Path(java_home) / "bin" / "java").exists():
            return str(Path(java_home) / "bin" / "java")
        return which_or_install("java", JAVA_PACKAGE)

    def _ensure_jars(self, java: str) -> str:
        version = pinned_version(self.pom)
        stamp = self.libs / ".stamp"
        want = f"{version} {hashlib.sha256(self.pom.read_bytes()).hexdigest()[:16]}"
        core_jar = self.libs / f"kafka_2.13-{version}.jar"
        if core_jar.exists() and stamp.exists() and stamp.read_text().strip() == want:
            return version
        if self.shared_jars:  # someone else's: never replaced from here
            raise InfraError(
                f"kafka: no Kafka {version} jars in {self.libs} (`clearway infra up` fetches"
                " them), or they are of another deploy/kafka/pom.xml"
            )
        mvn = which_or_install("mvn", "maven")
        log(f"kafka: fetching Apache Kafka {version} jars with Maven into {self.libs}")
        if self.libs.exists():
            shutil.rmtree(self.libs)
        self.libs.mkdir(parents=True)
        env = {**os.environ, "JAVA_HOME": str(Path(java).resolve().parents[1])}
        done = subprocess.run(
            [
                mvn,
                "-q",
                "-B",
                "-f",
                str(self.pom),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={self.libs.resolve()}",
                "-DincludeScope=runtime",
            ],
            capture_output=True,
            text=True,
            check=False,
            env=env,
        )
        if done.returncode != 0 or not core_jar.exists():
            raise InfraError(
                f"maven could not fetch Kafka {version} ({done.returncode}):\n"
                f"{(done.stdout + done.stderr)[-3000:]}"
            )
        stamp.write_text(want + "\n")
        return version

    def _write_config(self) -> None:
        self.config.parent.mkdir(parents=True, exist_ok=True)
        settings = {
            "process.roles": "broker,controller",
            "node.id": str(NODE_ID),
            "controller.quorum.voters": f"{NODE_ID}@{LOCAL_HOST}:{self.controller_port}",
            "listeners": (
                f"PLAINTEXT://{LOCAL_HOST}:{self.port},CONTROLLER://{LOCAL_HOST}:"
                f"{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://{LOCAL_HOST}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data.resolve()),
            "num.partitions": "3",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "10",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "delete.topic.enable": "true",
            "log.retention.hours": "168",
            "log.segment.bytes": str(64 * 1024 * 1024),
            "num.network.threads": "2",
            "num.io.threads": "4",
        }
        if self.tls is not None:
            settings.update(self._tls_settings(self.tls))
        settings.update(self.properties)
        body = "".join(f"{key}={value}\n" for key, value in settings.items())
        self.config.write_text("# Rewritten by `clearway infra up` on every start.\n" + body)

    def _tls_settings(self, tls: BrokerTls) -> dict[str, str]:
        """Listener SSL for clients (a certificate of `client_ca` required) and REPLICATION
        for the broker itself; the key store is PEM (Kafka >= 2.7): the key, then the chain."""
        keystore = self.config.parent / "broker.keystore.pem"
        keystore.touch(mode=0o600)
        keystore.chmod(0o600)
        keystore.write_bytes(tls.key.read_bytes().rstrip() + b"\n" + tls.cert.read_bytes())
        replication = f"REPLICATION://{LOCAL_HOST}:{tls.replication_port}"
        return {
            "listeners": (
                f"SSL://{LOCAL_HOST}:{self.port},{replication},"
                f"CONTROLLER://{LOCAL_HOST}:{self.controller_port}"
            ),
            "advertised.listeners": f"SSL://{LOCAL_HOST}:{self.port},{replication}",
            "inter.broker.listener.name": "REPLICATION",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,SSL:SSL,REPLICATION:SSL",
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(keystore.resolve()),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(tls.client_ca.resolve()),
            "ssl.client.auth": "required",
            "listener.name.replication.ssl.client.auth": "none",
        }

    def _format_storage(self, java: str) -> None:
        if (self.data / "meta.properties").exists():
            return
        log(f"kafka: formatting storage {self.data} (cluster id {CLUSTER_ID})")
        self.logs.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            self._java_command(
                java,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                CLUSTER_ID,
                "-c",
                str(self.config.resolve()),
            ),
            capture_output=True,
            text=True,
            check=False,
            cwd=self.root,
        )
        if done.returncode != 0:
            raise InfraError(f"kafka storage format failed:\n{(done.stdout + done.stderr)[-3000:]}")

    def _java_command(self, java: str, main_class: str, *args: str) -> list[str]:
        return [
            java,
            *JVM_HEAP,
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration={self.log4j.resolve().as_uri()}",
            f"-Dkafka.logs.dir={self.logs.resolve()}",
            "-cp",
            f"{self.libs.resolve()}/*",
            main_class,
            *args,
        ]
