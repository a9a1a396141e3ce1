"""The one error vocabulary of Clearway: domain errors with a stable `code` and a `kind`,
and the classification every door and every consumer shares (infrastructure or not).

Pure Python: domain packages import `ClearwayError`; the gRPC interceptor turns `kind`
into a status and `code` into the `reason-code` trailer; the consumer kit retries
infrastructure errors and dead-letters records that fail for any other reason.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    """What kind of failure a domain error is; names follow gRPC's status codes."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    UNAVAILABLE = "UNAVAILABLE"


class ClearwayError(Exception):
    """Base of every domain error: `code` is stable and machine-readable, `kind` says how a
    door reports it (a client mistake is INVALID_ARGUMENT, never UNAVAILABLE)."""

    code: str = "CLEARWAY_ERROR"
    kind: ErrorKind = ErrorKind.INVALID_ARGUMENT

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message or self.code)
        if code is not None:
            self.code = code


class NotReadyError(ClearwayError):
    """The service has not finished starting (or is stopping)."""

    code = "NOT_READY"
    kind = ErrorKind.UNAVAILABLE


def _postgres_infrastructure(exc: BaseException) -> bool:
    try:
        import asyncpg  # noqa: PLC0415 - optional for pure users of this module
    except ImportError:  # pragma: no cover
        return False
    if isinstance(exc, asyncpg.InterfaceError | asyncpg.PostgresConnectionError):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        # 08 connection, 40 rollback (serialisation, deadlock), 53 resources,
        # 57 operator intervention (shutdown), 58 system error: try again later.
        state = str(getattr(exc, "sqlstate", "") or "")
        return state[:2] in {"08", "40", "53", "57", "58"}
    return False


def _kafka_infrastructure(exc: BaseException) -> bool:
    try:
        from aiokafka.errors import (  # noqa: PLC0415
            KafkaConnectionError,
            KafkaError,
            MessageSizeTooLargeError,
        )
    except ImportError:  # pragma: no cover
        return False
    if isinstance(exc, MessageSizeTooLargeError):
        return False  # the message is the problem, not Kafka
    if isinstance(exc, KafkaConnectionError):
        return True
    if not isinstance(exc, KafkaError):
        return False
    return bool(getattr(exc, "retriable", False)) or type(exc).__name__ in _KAFKA_TRANSIENT


_KAFKA_TRANSIENT = {
    "KafkaTimeoutError",
    "NodeNotReadyError",
    "RequestTimedOutError",
    "NotLeaderForPartitionError",
    "LeaderNotAvailableError",
    "NotEnoughReplicasError",
    "NotEnoughReplicasAfterAppendError",
    "ProducerClosed",
    "UnknownTopicOrPartitionError",
    "CoordinatorNotAvailableError",
    "NotCoordinatorError",
}


def _redis_infrastructure(exc: BaseException) -> bool:
    try:
        from redis.exceptions import (  # noqa: PLC0415
            BusyLoadingError,
            ConnectionError,
            TimeoutError,
        )
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, ConnectionError | TimeoutError | BusyLoadingError)


def infrastructure_reason(exc: BaseException) -> str | None:
    """The reason code when `exc` says a server (PostgreSQL, Kafka, Redis, the network) is
    briefly away, so the same work should be retried later; None when it is not."""
    if _postgres_infrastructure(exc):
        return "DATABASE_UNAVAILABLE"
    if _kafka_infrastructure(exc):
        return "KAFKA_UNAVAILABLE"
    if _redis_infrastructure(exc):
        return "CACHE_UNAVAILABLE"
    if isinstance(exc, ConnectionError | TimeoutError):
        return "NETWORK_UNAVAILABLE"
    if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError | PermissionError):
        return "NETWORK_UNAVAILABLE"
    return None


def is_infrastructure_error(exc: BaseException) -> bool:
    """True when retrying the same work later may succeed (see `infrastructure_reason`)."""
    return infrastructure_reason(exc) is not None


_DEFECTS = (AttributeError, TypeError, NameError, AssertionError, NotImplementedError)


def is_defect(exc: BaseException) -> bool:
    """True for errors that say the code is wrong, not the data: a SQL statement the
    database cannot parse or a missing table (SQLSTATE 42, 0A), or a Python programming
    error. Such an error must not dead-letter record after record."""
    if isinstance(exc, _DEFECTS):
        return True
    state = str(getattr(exc, "sqlstate", "") or "")
    return state[:2] in {"42", "0A", "XX"}


def reason_code(exc: BaseException, default: str = "UNPROCESSABLE") -> str:
    """The stable code an exception carries (`code` attribute); for a database error, what
    its SQLSTATE class says (`CONSTRAINT_VIOLATION`, `INVALID_DATA`); else `default`."""
    code = getattr(exc, "code", None)
    if isinstance(code, str) and code:
        return code
    state = str(getattr(exc, "sqlstate", "") or "")
    if state.startswith("23"):
        return "CONSTRAINT_VIOLATION"
    if state.startswith("22"):
        return "INVALID_DATA"
    return default
