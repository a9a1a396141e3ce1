"""Where Kafka, PostgreSQL and Redis are: one typed answer for services, tests and tools.

Each address comes from its environment variable when set (an *external* server that
`clearway infra` neither starts nor stops); otherwise it is the local infrastructure
started by `clearway infra up`, on ports that avoid the usual defaults.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

KAFKA_BOOTSTRAP_VAR = "CLEARWAY_KAFKA_BOOTSTRAP"
# TLS to Kafka (clearway.kafka.client_options): the CA of the brokers' certificates, and
# the client's certificate and key for mutual TLS. None set: plaintext.
KAFKA_CA_VAR = "CLEARWAY_KAFKA_CA"
KAFKA_CERT_VAR = "CLEARWAY_KAFKA_CERT"
KAFKA_KEY_VAR = "CLEARWAY_KAFKA_KEY"
PG_DSN_VAR = "CLEARWAY_PG_DSN"
REDIS_URL_VAR = "CLEARWAY_REDIS_URL"

# Port overrides for a second local instance (tests run one beside the main one).
KAFKA_PORT_VAR = "CLEARWAY_INFRA_KAFKA_PORT"
KAFKA_CONTROLLER_PORT_VAR = "CLEARWAY_INFRA_KAFKA_CONTROLLER_PORT"
PG_PORT_VAR = "CLEARWAY_INFRA_PG_PORT"
REDIS_PORT_VAR = "CLEARWAY_INFRA_REDIS_PORT"

DEFAULT_KAFKA_PORT = 59092
DEFAULT_KAFKA_CONTROLLER_PORT = 59093
DEFAULT_PG_PORT = 55432
DEFAULT_REDIS_PORT = 56379

LOCAL_HOST = "127.0.0.1"
PG_USER = "clearway"
PG_PASSWORD = "clearway"  # a local development server bound to loopback
PG_DATABASE = "clearway"


@dataclass(frozen=True, slots=True)
class LocalPorts:
    """The ports of a locally started instance."""

    kafka: int = DEFAULT_KAFKA_PORT
    kafka_controller: int = DEFAULT_KAFKA_CONTROLLER_PORT
    postgres: int = DEFAULT_PG_PORT
    redis: int = DEFAULT_REDIS_PORT

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LocalPorts:
        """Default ports, each overridable by its CLEARWAY_INFRA_*_PORT variable."""
        env = os.environ if env is None else env
        return cls(
            kafka=_port(env, KAFKA_PORT_VAR, DEFAULT_KAFKA_PORT),
            kafka_controller=_port(env, KAFKA_CONTROLLER_PORT_VAR, DEFAULT_KAFKA_CONTROLLER_PORT),
            postgres=_port(env, PG_PORT_VAR, DEFAULT_PG_PORT),
            redis=_port(env, REDIS_PORT_VAR, DEFAULT_REDIS_PORT),
        )


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Addresses of the three servers every service needs."""

    kafka_bootstrap: str
    pg_dsn: str
    redis_url: str

    @classmethod
    def local(cls, ports: LocalPorts | None = None) -> Endpoints:
        """The addresses of the local infrastructure on `ports`."""
        p = LocalPorts() if ports is None else ports
        return cls(
            kafka_bootstrap=f"{LOCAL_HOST}:{p.kafka}",
            pg_dsn=f"postgresql://{PG_USER}:{PG_PASSWORD}@{LOCAL_HOST}:{p.postgres}/{PG_DATABASE}",
            redis_url=f"redis://{LOCAL_HOST}:{p.redis}/0",
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Endpoints:
        """Addresses from CLEARWAY_* variables, falling back to the local infrastructure."""
        env = os.environ if env is None else env
        local = cls.local(LocalPorts.from_env(env))
        return cls(
            kafka_bootstrap=env.get(KAFKA_BOOTSTRAP_VAR) or local.kafka_bootstrap,
            pg_dsn=env.get(PG_DSN_VAR) or local.pg_dsn,
            redis_url=env.get(REDIS_URL_VAR) or local.redis_url,
        )

    def as_env(self) -> dict[str, str]:
        """These addresses as the environment variables `from_env` reads."""
        return {
            KAFKA_BOOTSTRAP_VAR: self.kafka_bootstrap,
            PG_DSN_VAR: self.pg_dsn,
            REDIS_URL_VAR: self.redis_url,
        }


@dataclass(frozen=True, slots=True)
class KafkaTls:
    """How a client reaches Kafka over TLS: the CA that signed the brokers' certificates
    (None: the system's trust store) and, for mutual TLS, the client's certificate and its
    unencrypted private key (both or neither)."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise settings_error(
                f"{KAFKA_CERT_VAR} and {KAFKA_KEY_VAR} must be set together (mutual TLS needs"
                " the client certificate and its key)"
            )


class FromEnv(enum.Enum):
    """The type of `FROM_ENV`."""

    FROM_ENV = "the CLEARWAY_KAFKA_CA, _CERT and _KEY variables"


# "However this process's environment says": the default of the Kafka clients' options.
FROM_ENV: Final = FromEnv.FROM_ENV


def kafka_tls_from_env() -> KafkaTls | None:
    """TLS as `CLEARWAY_KAFKA_CA`, `CLEARWAY_KAFKA_CERT` and `CLEARWAY_KAFKA_KEY` (paths) say;
    None (plaintext, as local runs use) when none is set. A certificate without its key is
    a SettingsError, not a silent plaintext connection; so is a key given inline."""
    # Imported here: clearway.settings imports this module.
    from clearway.settings import env_path  # noqa: PLC0415

    ca, cert, key = env_path(KAFKA_CA_VAR), env_path(KAFKA_CERT_VAR), env_path(KAFKA_KEY_VAR)
    if ca is None and cert is None and key is None:
        return None
    return KafkaTls(ca=ca, cert=cert, key=key)


def settings_error(message: str) -> ValueError:
    """A clearway.settings.SettingsError (which this module cannot import at the top)."""
    from clearway.settings import SettingsError  # noqa: PLC0415

    return SettingsError(message)


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a port number, got {raw!r}") from None
