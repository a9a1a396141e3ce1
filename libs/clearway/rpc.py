"""What every RPC of every service shares, in one server interceptor:

- the readiness gate: until the service has started (and again once it stops), every call
  except health and reflection is refused with UNAVAILABLE and reason `NOT_READY`;
- W3C trace context extracted from the metadata and a SERVER span around the call;
- the caller's identity: with `Authentication.REQUIRED`, a call whose peer presented no
  verified client certificate carrying a `clearway:` identity is refused with
  UNAUTHENTICATED (reason `UNAUTHENTICATED`); the `Principal` is bound for the call, where
  use cases read it with `clearway.auth.current_principal()` and authorize;
- errors mapped once: a `ClearwayError` becomes its `kind` as the status, with its stable
  `code` in the `reason-code` trailer and at the start of the details; an infrastructure
  error becomes UNAVAILABLE with a reason (`DATABASE_UNAVAILABLE`, ...); anything else
  becomes INTERNAL (logged with its traceback), never UNKNOWN;
- requests that do not decode as the method's message are refused with INVALID_ARGUMENT
  and reason `UNDECODABLE_REQUEST` (the deserializer is wrapped, so a DecodeError never
  escapes as UNKNOWN);
- a client that goes away mid-call is a normal event: logged at DEBUG, never as an ERROR.

Servicers therefore raise domain errors and never hand-write a status. Their dependencies
come from a `Slot` that the service fills during start-up; the gate guarantees a call
never sees it empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Generic, NoReturn, TypeAlias, TypeVar

import grpc
from opentelemetry import trace

from clearway.auth import (
    Authentication,
    Principal,
    UnauthenticatedError,
    acting_as,
    principal_from_auth_context,
)
from clearway.errors import ClearwayError, ErrorKind, NotReadyError, infrastructure_reason
from clearway.telemetry import context_from_grpc_metadata

log = logging.getLogger(__name__)
tracer = trace.get_tracer("clearway.rpc")

T = TypeVar("T")
REASON_METADATA_KEY = "reason-code"
UNGATED_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
Context = grpc.aio.ServicerContext[Any, Any]
if TYPE_CHECKING:
    Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]
else:  # the stubs are generic, the runtime class is not
    Handler = grpc.RpcMethodHandler

_STATUS = {kind: getattr(grpc.StatusCode, kind.value) for kind in ErrorKind}


class UndecodableRequestError(ClearwayError):
    """The request bytes are not the method's request message."""

    code = "UNDECODABLE_REQUEST"
    kind = ErrorKind.INVALID_ARGUMENT


class _Undecodable:
    """What the wrapped deserializer returns for bytes that do not decode."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _safe(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def decode(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # DecodeError, or anything a custom deserializer raises
            return _Undecodable(exc)

    return decode


def _decoded(request: Any) -> Any:
    if isinstance(request, _Undecodable):
        raise UndecodableRequestError(
            f"the request is not a valid message of this method ({type(request.error).__name__})"
        )
    return request


async def _decoded_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        yield _decoded(request)


class Slot(Generic[T]):
    """A dependency filled in during start-up (servicers are registered before it exists)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._value: T | None = None

    def fill(self, value: T) -> None:
        """Provide the value (once the service's resources are up)."""
        self._value = value

    def clear(self) -> None:
        """Forget the value (the service is stopping)."""
        self._value = None

    def get(self) -> T:
        """The value; NotReadyError when the service has not started."""
        if self._value is None:
            raise NotReadyError(f"{self.name} is not ready")
        return self._value


class Readiness:
    """The one readiness gate: open after start-up, closed before and while stopping."""

    def __init__(self) -> None:
        self.ready = False

    def open(self) -> None:
        """Accept calls."""
        self.ready = True

    def close(self) -> None:
        """Refuse new calls."""
        self.ready = False


# Server errors, as OpenTelemetry's RPC conventions count them on a server span; a client's
# mistake (INVALID_ARGUMENT, NOT_FOUND, ...) leaves the span's status unset.
_SERVER_ERRORS = {
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DATA_LOSS,
}


async def abort(context: Context, status: grpc.StatusCode, code: str, detail: str) -> NoReturn:
    """End the call with `status`, the reason code in the trailer and the details."""
    span = trace.get_current_span()
    span.set_attribute("rpc.grpc.status_code", status.value[0])
    span.set_attribute("clearway.reason_code", code)
    if status in _SERVER_ERRORS:
        span.set_status(trace.Status(trace.StatusCode.ERROR, code))
    context.set_trailing_metadata(((REASON_METADATA_KEY, code),))
    await context.abort(status, f"{code}: {detail}")
    raise AssertionError("unreachable")  # abort raises


async def _fail(context: Context, method: str, exc: BaseException) -> NoReturn:
    """Map an exception a servicer raised to a status with a reason code."""
    span = trace.get_current_span()
    if isinstance(exc, ClearwayError):
        await abort(context, _STATUS[exc.kind], exc.code, str(exc))
    reason = infrastructure_reason(exc)
    if reason is not None:
        log.warning("rpc failed on an outage", extra={"rpc": method, "reason": reason})
        await abort(context, grpc.StatusCode.UNAVAILABLE, reason, "try again later")
    span.record_exception(exc)
    log.error("rpc failed", extra={"rpc": method}, exc_info=exc)
    await abort(context, grpc.StatusCode.INTERNAL, "INTERNAL", "internal error")


def _client_gone(context: Context) -> bool:
    done = getattr(context, "done", None)
    return bool(done()) if callable(done) else False


class ServiceInterceptor(grpc.aio.ServerInterceptor):
    """Caller identity, readiness gate, trace context, server span and error mapping for
    every RPC."""

    def __init__(
        self,
        readiness: Readiness,
        authentication: Authentication = Authentication.NONE,
        authenticated_services: frozenset[str] = frozenset(),
    ) -> None:
        self.readiness = readiness
        self.authentication = authentication
        self.authenticated_services = authenticated_services

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        """Wrap the method's behaviour; health and reflection pass through untouched."""
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(UNGATED_PREFIXES):
            return handler
        return self._wrap(handler, method)

    def _wrap(self, handler: Handler, method: str) -> Handler:
        options = {
            "request_deserializer": _safe(handler.request_deserializer),
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, method, streamed=False), **options
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(handler.stream_unary, method, streamed=True), **options
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(handler.unary_stream, method, streamed=False), **options
            )
        return grpc.stream_stream_rpc_method_handler(
            self._streaming(handler.stream_stream, method, streamed=True), **options
        )

    def _gate(self) -> None:
        if not self.readiness.ready:
            raise NotReadyError("the service is starting or stopping; try again")

    def _authenticate(self, context: Context, service: str) -> Principal | None:
        """The verified caller (None when the service does not authenticate); an unknown
        caller learns nothing else, not even whether the service is ready."""
        required = (
            self.authentication is Authentication.REQUIRED or service in self.authenticated_services
        )
        if not required:
            return None
        principal = principal_from_auth_context(context.auth_context())
        if principal is None:
            where = " on the service's admin port" if self.authenticated_services else ""
            raise UnauthenticatedError(
                "a client certificate of the scheme with a clearway identity is required" + where
            )
        trace.get_current_span().set_attribute("enduser.id", principal.uri)
        return principal

    @contextlib.asynccontextmanager
    async def _served(self, method: str, context: Context) -> AsyncIterator[None]:
        """The server span, the gate and the error mapping around one call's behaviour."""
        parent = context_from_grpc_metadata(context.invocation_metadata())
        service, _, name = method.lstrip("/").partition("/")
        with tracer.start_as_current_span(
            method.lstrip("/"),
            context=parent,
            kind=trace.SpanKind.SERVER,
            record_exception=False,
            set_status_on_exception=False,  # the status follows the gRPC status (abort)
        ) as span:
            span.set_attribute("rpc.system", "grpc")
            span.set_attribute("rpc.service", service)
            span.set_attribute("rpc.method", name)
            try:
                principal = self._authenticate(context, service)
                self._gate()
                with acting_as(principal):
                    yield
            except grpc.aio.AbortError:
                raise
            except asyncio.CancelledError:
                log.debug("client went away", extra={"rpc": method})
                raise
            except Exception as exc:
                if _client_gone(context):
                    log.debug("client went away", extra={"rpc": method})
                    return
                await _fail(context, method, exc)

    def _unary(self, behaviour: Any, method: str, *, streamed: bool) -> Any:
        async def call(request: Any, context: Context) -> Any:
            async with self._served(method, context):
                checked = _decoded_stream(request) if streamed else _decoded(request)
                return await behaviour(checked, context)

        return call

    def _streaming(self, behaviour: Any, method: str, *, streamed: bool) -> Any:
        async def call(request: Any, context: Context) -> AsyncIterator[Any]:
            async with self._served(method, context):
                checked = _decoded_stream(request) if streamed else _decoded(request)
                async for response in behaviour(checked, context):
                    yield response

        return call


def reason_of(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The `reason-code` a server put in trailing metadata (for clients and tests)."""
    for key, value in metadata or ():
        if key == REASON_METADATA_KEY:
            return value.decode() if isinstance(value, bytes) else value
    return None
