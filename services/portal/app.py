"""Composition root of the portal: settings, the accounts channel, the HTTP server.

The portal is an HTTP service (aiohttp.web on the same asyncio loop style as the gRPC
services); it holds no database of its own. `clearway serve portal` runs it until
SIGTERM, then it stops within `CLEARWAY_GRACE_SECONDS`: /healthz turns 503 first, the
listener closes, in-flight requests finish, the accounts channel closes last.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

import grpc
from aiohttp import web

from clearway.logs import configure_logging
from clearway.pki import service_channel
from clearway.settings import (
    DEFAULT_PORTS,
    REPO_ROOT,
    SettingsError,
    env_float_seconds,
    env_int,
    env_path,
    env_str,
    metrics_port_from_env,
    metrics_port_of,
)
from clearway.telemetry import MetricsServer, setup_metrics, setup_tracing
from services.portal.adapters.accounts import AccountsClient
from services.portal.adapters.benefits import BenefitsClient
from services.portal.adapters.evidence import EvidenceShelf
from services.portal.domain.balance import DEFAULT_MAX_TOP_UP_MINOR
from services.portal.domain.claims import Stop, load_stops_of
from services.portal.entrypoints.benefits import BenefitsPages, add_benefits_routes
from services.portal.entrypoints.evidence import EvidencePages, add_evidence_routes
from services.portal.entrypoints.web import Portal, WebConfig, web_app

SERVICE = "portal"
DEFAULT_PORT = 8080
DEFAULT_FEED = REPO_ROOT / "examples" / "feeds" / "london"  # as fares' default
REPORTS_DIR_VAR = "CLEARWAY_REPORTS_DIR"
DEFAULT_REPORTS_DIR = REPO_ROOT / "var" / "reports"
COOKIE_MODES = ("auto", "always", "never")
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PortalSettings:
    """Where the portal listens, where accounts is, and how its cookies are set."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    accounts_target: str = f"127.0.0.1:{DEFAULT_PORTS['accounts']}"
    # The CA that signed accounts' server certificate (CLEARWAY_ACCOUNTS_TLS_CA): TLS to
    # accounts when set, plaintext otherwise.
    accounts_ca: Path | None = None
    secure_cookies: str = "auto"
    secret: bytes = b""  # empty: a random one per process (one instance only)
    page_size: int = 20
    max_top_up_minor: int = DEFAULT_MAX_TOP_UP_MINOR
    currency: str = "GBP"
    stops: tuple[Stop, ...] = ()
    reports_dir: Path = DEFAULT_REPORTS_DIR  # the evidence packs (`clearway reports --packs`)
    log_level: str = "INFO"
    grace_seconds: float = 10.0
    # CLEARWAY_METRICS_PORT as the gRPC services read it: None = the portal's port + 3000
    # (any free port when that is 0), METRICS_OFF = no /metrics.
    metrics_port: int | None = None
    worker_index: int = 0

    @property
    def http_metrics_port(self) -> int | None:
        """Where /metrics listens (0: any free port), or None when it is off."""
        return metrics_port_of(self.metrics_port, self.port, self.worker_index)

    @classmethod
    def from_env(cls) -> PortalSettings:
        """Read `CLEARWAY_PORTAL_*` and the shared `CLEARWAY_*` variables."""
        mode = env_str("CLEARWAY_PORTAL_SECURE_COOKIES", "auto").lower()
        if mode not in COOKIE_MODES:
            raise SettingsError(
                f"CLEARWAY_PORTAL_SECURE_COOKIES must be one of {COOKIE_MODES}, got {mode!r}"
            )
        secret = os.environ.get("CLEARWAY_PORTAL_SECRET", "").strip()
        if secret and len(secret) < 32:
            raise SettingsError("CLEARWAY_PORTAL_SECRET must be at least 32 characters")
        currency = env_str("CLEARWAY_SCHEME_CURRENCY", "GBP")
        if len(currency) != 3 or not currency.isalpha() or not currency.isupper():
            raise SettingsError(f"CLEARWAY_SCHEME_CURRENCY must be an ISO 4217 code: {currency!r}")
        return cls(
            host=env_str("CLEARWAY_PORTAL_HOST", "127.0.0.1"),
            port=env_int("CLEARWAY_PORTAL_PORT", DEFAULT_PORT),
            accounts_target=env_str(
                "CLEARWAY_ACCOUNTS_TARGET", f"127.0.0.1:{DEFAULT_PORTS['accounts']}"
            ),
            accounts_ca=env_path("CLEARWAY_ACCOUNTS_TLS_CA"),
            secure_cookies=mode,
            secret=secret.encode(),
            page_size=env_int("CLEARWAY_PORTAL_PAGE_SIZE", 20, minimum=1),
            # The same variables accounts reads, so the form checks what accounts will.
            max_top_up_minor=env_int(
                "CLEARWAY_MAX_TOP_UP_MINOR", DEFAULT_MAX_TOP_UP_MINOR, minimum=1
            ),
            currency=currency,
            # The stops a claim may name: those of fares' feed (CLEARWAY_FEED_DIR, versions
            # separated by ':'), as fares reads it.
            stops=load_stops_of(
                [Path(p) for p in os.environ.get("CLEARWAY_FEED_DIR", "").split(":") if p]
                or [DEFAULT_FEED]
            ),
            reports_dir=Path(env_str(REPORTS_DIR_VAR, str(DEFAULT_REPORTS_DIR))),
            log_level=env_str("CLEARWAY_LOG_LEVEL", "INFO"),
            grace_seconds=env_float_seconds("CLEARWAY_GRACE_SECONDS", 10.0),
            metrics_port=metrics_port_from_env(),
            worker_index=env_int("CLEARWAY_WORKER_INDEX", 0),
        )


class PortalApp:
    """The running portal: one gRPC channel to accounts, one aiohttp server."""

    def __init__(self, settings: PortalSettings) -> None:
        self.settings = settings
        self.channel: grpc.aio.Channel | None = None
        self.portal: Portal | None = None
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.metrics_server = MetricsServer()
        self.metrics_port: int | None = None  # where /metrics answers, unless turned off

    async def start(self) -> int:
        """Open the accounts channel, bind and serve; the bound port."""
        s = self.settings
        self.channel = service_channel(s.accounts_target, s.accounts_ca)
        config = WebConfig(
            secret=s.secret or secrets.token_bytes(32),
            secure_cookies=s.secure_cookies,
            page_size=s.page_size,
            max_top_up_minor=s.max_top_up_minor,
            currency=s.currency,
            stops=s.stops,
        )
        self.portal = Portal(AccountsClient(self.channel), BenefitsClient(self.channel), config)
        app = web_app(self.portal)
        add_benefits_routes(app, BenefitsPages(self.portal))
        add_evidence_routes(app, EvidencePages(self.portal, EvidenceShelf(s.reports_dir)))
        # access_log=None: the portal logs route templates itself, never paths or queries.
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=s.grace_seconds)
        try:
            metrics_port = s.http_metrics_port
            if metrics_port is not None:
                setup_metrics(f"clearway-{SERVICE}")
                self.metrics_port = await self.metrics_server.start(s.host, metrics_port)
            await self.runner.setup()
            sock = _listening_socket(s.host, s.port)
            self.port = sock.getsockname()[1]
            await web.SockSite(self.runner, sock).start()
        except BaseException:
            await self.stop()
            raise
        log.info(
            "listening",
            extra={
                "address": f"{s.host}:{self.port}",
                "metrics_port": self.metrics_port,
                "service": SERVICE,
            },
        )
        return self.port

    async def stop(self) -> None:
        """Report 503 on /healthz, finish in-flight requests, close the channel last."""
        if self.portal is not None:
            self.portal.stopping = True
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        if self.channel is not None:
            await self.channel.close()
            self.channel = None
        await self.metrics_server.stop()
        log.info("stopped", extra={"service": SERVICE})


def _listening_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket (port 0: any free port); shared by `--workers` processes."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if "CLEARWAY_WORKER_INDEX" in os.environ:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def build(settings: PortalSettings) -> PortalApp:
    """A portal for `settings` (nothing listens until started)."""
    return PortalApp(settings)


def build_from_env() -> PortalApp:
    """A portal configured from environment variables."""
    return build(PortalSettings.from_env())


async def serve_until_signalled(app: PortalApp) -> None:
    """Serve until SIGTERM/SIGINT, then stop gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await app.start()
    await stop.wait()
    log.info("signal received; shutting down")
    await app.stop()


def run_from_env() -> int:
    """Process entry point of `clearway serve portal`: 0 after a clean stop."""
    app = build_from_env()
    configure_logging(SERVICE, app.settings.log_level)
    setup_tracing(f"clearway-{SERVICE}")
    try:
        asyncio.run(serve_until_signalled(app))
    except Exception:
        log.exception("service failed")
        return 1
    return 0


def main() -> int:
    """`python -m services.portal.app`."""
    with contextlib.suppress(KeyboardInterrupt):
        return run_from_env()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
