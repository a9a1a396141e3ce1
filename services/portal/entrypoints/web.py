"""The portal's HTTP side (aiohttp.web): routes, forms, cookies, CSRF, security headers.

Handlers stay thin: read the form, call accounts, render a template or redirect. What
every request shares lives in middlewares: the access log (route templates only, never
a path with a card token in it), security headers, CSRF on every POST, and the mapping
of accounts' refusals to pages (NOT_SIGNED_IN: back to sign-in; another's card: 404).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import jinja2
from aiohttp import web
from multidict import MultiDictProxy
from opentelemetry import metrics

from clearway.money import Money
from services.portal.adapters.accounts import (
    AccountsClient,
    AccountsRefusalError,
    AccountsUnavailableError,
    Session,
)
from services.portal.adapters.benefits import BenefitsClient
from services.portal.domain.balance import DEFAULT_MAX_TOP_UP_MINOR, AmountError, parse_amount
from services.portal.domain.claims import ClaimView, Stop
from services.portal.domain.csrf import csrf_token, csrf_valid
from services.portal.domain.entitlements import (
    CouncilView,
    category_text,
    day_text,
    month_text,
)
from services.portal.domain.journeys import (
    format_money,
    journeys_csv,
    leg_text,
    signed_money,
)
from services.portal.domain.messages import message_for, notice_for, top_up_message
from services.portal.domain.roles import OFFICER, TRAVELLER, Role, role_cookie, role_from_cookie

log = logging.getLogger(__name__)
T = TypeVar("T")

# The portal's metrics (served at /metrics on their own port; docs/metrics.md): requests by
# route template (never the path: card tokens are in paths), method and status.
_meter = metrics.get_meter("clearway.portal")
REQUESTS = _meter.create_counter(
    "clearway.portal.requests", unit="{request}", description="HTTP requests answered"
)
REQUEST_DURATION = _meter.create_histogram(
    "clearway.portal.request.duration",
    unit="s",
    description="HTTP requests answered, from arrival to the response",
    explicit_bucket_boundaries_advisory=[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
)

SESSION_COOKIE = "clearway_session"
CSRF_COOKIE = "clearway_csrf"
ROLE_COOKIE = "clearway_role"
CSRF_FIELD = "csrf_token"
FIELD_LIMIT = 4096
CSRF_SEED = web.RequestKey("csrf_seed", str)
ROLE_LEARNT = web.RequestKey("role_learnt", Role)
NOT_AN_OFFICER = "These pages are for council officers only."
# Accounts' answers about a card URL that must look like "no such page": whether another
# account owns the card, or the token is malformed, is not the visitor's business.
CARD_NOT_FOUND = {"NOT_YOUR_CARD", "BAD_CARD_TOKEN", "RAW_CARD_NUMBER", "MISSING_CARD_TOKEN"}
# Top-up refusals shown on the card's page with its form (anything else: the error page).
TOP_UP_REFUSALS = {
    "BAD_AMOUNT",
    "CURRENCY_MISMATCH",
    "IDEMPOTENCY_KEY_REUSED",
    "BAD_IDEMPOTENCY_KEY",
}
# Claim refusals shown on the journeys page with its forms.
CLAIM_REFUSALS = {
    "MISSING_JOURNEY_ID",
    "BAD_EXIT_STOP",
    "UNKNOWN_STOP",
    "BAD_EXIT_TIME",
    "UNKNOWN_JOURNEY",
    "CLAIM_EXISTS",
    "NOT_INCOMPLETE",
    "CLAIM_TOO_LATE",
    "JOURNEY_CHANGED",
    "FARES_UNAVAILABLE",
}
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
TEMPLATES_DIR = Path(__file__).resolve().parents[1] / "templates"


@dataclass(frozen=True, slots=True)
class WebConfig:
    """What the HTTP side needs from the portal's settings."""

    secret: bytes  # the CSRF HMAC key; every instance behind one name needs the same
    secure_cookies: str = "auto"  # "auto" (when the request is HTTPS), "always", "never"
    page_size: int = 20
    csv_limit: int = 10_000
    max_top_up_minor: int = DEFAULT_MAX_TOP_UP_MINOR  # as accounts' CLEARWAY_MAX_TOP_UP_MINOR
    currency: str = "GBP"  # the scheme's currency (accounts' CLEARWAY_SCHEME_CURRENCY)
    stops: tuple[Stop, ...] = ()  # what a claim may name as its exit (empty: typed stop id)


class SignInRequiredError(Exception):
    """The page needs a signed-in traveller and there is none."""


def not_an_officer() -> web.HTTPForbidden:
    """The 403 of an officer page asked for by an account that is not an officer."""
    return web.HTTPForbidden(text=NOT_AN_OFFICER)


def templates(stops: tuple[Stop, ...] = ()) -> jinja2.Environment:
    """The Jinja2 environment: HTML autoescaped, undefined variables an error."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["money"] = format_money
    env.filters["signed_money"] = signed_money
    env.filters["leg"] = leg_text
    env.filters["path_part"] = lambda value: quote(str(value), safe="")
    env.filters["when"] = lambda value: value.strftime("%H:%M") if value else ""
    env.filters["date"] = lambda value: value.strftime("%d %b %Y") if value else ""
    env.filters["day"] = day_text
    env.filters["month_name"] = month_text
    env.filters["category"] = category_text
    names = {stop.stop_id: stop.name for stop in stops}
    env.filters["stop_name"] = lambda stop_id: names.get(stop_id, stop_id)
    return env


def form_field(form: MultiDictProxy[Any], name: str) -> str:
    """A text field of a posted form, cut to FIELD_LIMIT ('' when absent or a file)."""
    value = form.get(name)
    return value[:FIELD_LIMIT] if isinstance(value, str) else ""


def see_other(location: str) -> web.Response:
    """A 303 to `location` (a response, not the raised exception aiohttp deprecates
    returning)."""
    return web.Response(status=303, headers={"Location": location})


def _route(request: web.Request) -> str:
    """The route's template (`/cards/{card}/journeys`), never the path itself."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "(unmatched)"


class Portal:
    """Every page of the portal."""

    def __init__(
        self, accounts: AccountsClient, benefits: BenefitsClient, config: WebConfig
    ) -> None:
        self.accounts = accounts
        self.benefits = benefits
        self.config = config
        self.env = templates(config.stops)
        self.stopping = False

    # -- plumbing -------------------------------------------------------------------------

    def session_of(self, request: web.Request) -> str:
        """The accounts session token from the cookie ('' when signed out)."""
        return request.cookies.get(SESSION_COOKIE, "")[:FIELD_LIMIT]

    def require_session(self, request: web.Request) -> str:
        """The session token, or a redirect to sign-in."""
        session = self.session_of(request)
        if not session:
            raise SignInRequiredError
        return session

    def csrf_seed(self, request: web.Request) -> str:
        """The browser's CSRF seed; a new one (set on the response) when it has none."""
        seed = request.get(CSRF_SEED)
        if seed is None:
            seed = request.cookies.get(CSRF_COOKIE, "")[:FIELD_LIMIT] or secrets.token_urlsafe(32)
            request[CSRF_SEED] = seed
        return seed

    def _secure(self, request: web.Request) -> bool:
        mode = self.config.secure_cookies
        return mode == "always" or (mode == "auto" and request.secure)

    def set_cookie(
        self,
        request: web.Request,
        response: web.StreamResponse,
        name: str,
        value: str,
        max_age: int | None = None,
    ) -> None:
        """An HttpOnly, SameSite=Lax cookie for the whole site (Secure over HTTPS)."""
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path="/",
            httponly=True,
            samesite="Lax",
            secure=self._secure(request),
        )

    def start_session(
        self,
        request: web.Request,
        response: web.StreamResponse,
        session: Session,
        role: Role | None = None,
    ) -> None:
        """Keep the session in its cookie, give the browser a fresh CSRF seed, and
        remember the account's role when known (for as long as the session lasts)."""
        max_age = None
        if session.expires_at is not None:
            max_age = max(0, int((session.expires_at - datetime.now(UTC)).total_seconds()))
        self.set_cookie(request, response, SESSION_COOKIE, session.token, max_age)
        self.set_cookie(request, response, CSRF_COOKIE, secrets.token_urlsafe(32))
        if role is not None:
            value = role_cookie(self.config.secret, session.token, role)
            self.set_cookie(request, response, ROLE_COOKIE, value, max_age)
        else:  # one of an earlier session would be refused anyway
            response.del_cookie(ROLE_COOKIE, path="/")

    def end_session(self, response: web.StreamResponse) -> None:
        """Forget the session, the CSRF seed and the remembered role in the browser."""
        response.del_cookie(SESSION_COOKIE, path="/")
        response.del_cookie(CSRF_COOKIE, path="/")
        response.del_cookie(ROLE_COOKIE, path="/")

    # -- the officer role -----------------------------------------------------------------

    def role_of(self, request: web.Request) -> Role | None:
        """What the portal knows of the account: learnt during this request, else from the
        role cookie (None when it does not know, or the cookie is another session's)."""
        if ROLE_LEARNT in request:
            return request[ROLE_LEARNT]
        value = request.cookies.get(ROLE_COOKIE, "")[:FIELD_LIMIT]
        return role_from_cookie(self.config.secret, self.session_of(request), value)

    def remember_role(self, request: web.Request, role: Role) -> None:
        """Remember `role` in the browser (the middleware sets the cookie on the answer)."""
        if self.role_of(request) != role:
            request[ROLE_LEARNT] = role

    async def learn_role(self, session: str) -> Role | None:
        """Ask accounts whether the account is an officer (ListEntitlementSchemes answers
        with its council) or a traveller (PERMISSION_DENIED). None when accounts cannot
        tell (an accounts without OfficerService, an outage): the portal then offers the
        traveller pages only, and asks again on the next officer page."""
        try:
            council = await self.benefits.council(session)
        except AccountsRefusalError as refusal:
            if refusal.code == "NOT_SIGNED_IN":
                raise
            if refusal.status == "PERMISSION_DENIED":
                return Role(TRAVELLER)
            log.warning("officer role unknown", extra={"reason": refusal.code})
            return None
        except AccountsUnavailableError:
            return None
        return Role(OFFICER, council.funder_id)

    async def officer_council(self, request: web.Request) -> tuple[str, CouncilView]:
        """The session and council of an officer page's caller: sign-in without a session,
        403 for an account accounts says is not an officer (remembered, so a traveller's
        later visits are refused without asking). Asked of accounts on every officer page,
        so budgets are current and a removed officer loses the pages at once."""
        session = self.require_session(request)
        remembered = self.role_of(request)
        if remembered is not None and not remembered.officer:
            raise not_an_officer()
        try:
            council = await self.benefits.council(session)
        except AccountsRefusalError as refusal:
            if refusal.status == "PERMISSION_DENIED":
                self.remember_role(request, Role(TRAVELLER))
                raise not_an_officer() from None
            raise
        self.remember_role(request, Role(OFFICER, council.funder_id))
        return session, council

    def page(
        self, request: web.Request, template: str, *, status: int = 200, **context: Any
    ) -> web.Response:
        """Render a page with what every page needs (CSRF token, signed-in state, notice)."""
        session = self.session_of(request)
        role = self.role_of(request)
        values = {
            "signed_in": bool(session),
            "officer": role is not None and role.officer,
            "request_path": request.path,
            "csrf_token": csrf_token(self.config.secret, self.csrf_seed(request), session),
            "notice": notice_for(request.query.get("notice")),
            "error": None,
            **context,
        }
        body = self.env.get_template(template).render(**values)
        return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")

    def error_page(self, request: web.Request, status: int, title: str, text: str) -> web.Response:
        """The page for a refused or failed request."""
        return self.page(request, "error.html", status=status, title=title, text=text)

    async def optional(self, call: Awaitable[T]) -> T | None:
        """A section a page can do without (caps progress, claims): None when accounts
        cannot answer it (an older accounts, fares unavailable). A session that ended or a
        card that is not the caller's still ends the page as usual."""
        try:
            return await call
        except AccountsRefusalError as refusal:
            if refusal.code == "NOT_SIGNED_IN" or refusal.code in CARD_NOT_FOUND:
                raise
            log.warning("optional section unavailable", extra={"reason": refusal.code})
        except AccountsUnavailableError:
            log.warning("optional section unavailable", extra={"reason": "UNAVAILABLE"})
        return None

    # -- middlewares ----------------------------------------------------------------------

    @web.middleware
    async def access_log(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """One line per request with the route template, never the path or query (card
        tokens and page tokens are in them) nor cookies."""
        started = time.monotonic()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            route, elapsed = _route(request), time.monotonic() - started
            attributes: dict[str, str | int] = {
                "http.request.method": request.method,
                "http.route": route,
                "http.response.status_code": status,
            }
            REQUESTS.add(1, attributes)
            REQUEST_DURATION.record(elapsed, attributes)
            log.info(
                "request",
                extra={
                    "method": request.method,
                    "route": route,
                    "status": status,
                    "ms": round(elapsed * 1000, 1),
                },
            )

    @web.middleware
    async def security(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Security headers on every answer, the CSRF seed cookie, and refusals as pages."""
        try:
            response = await self._answer(request, handler)
        except web.HTTPException as exc:
            if exc.status < 400:  # aiohttp's own redirects: keep them, with the headers
                exc.headers.update(SECURITY_HEADERS)
                raise
            else:
                titles = {403: "Not allowed", 404: "Page not found", 405: "Not allowed"}
                response = self.error_page(
                    request,
                    exc.status,
                    titles.get(exc.status, "Something went wrong"),
                    (exc.text or "") if exc.status == 403 else "There is nothing here.",
                )
        if response.prepared:  # streamed (the CSV): it set its own headers
            return response
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if not request.path.startswith("/static/"):
            response.headers.setdefault("Cache-Control", "no-store")
        new_seed = CSRF_COOKIE not in request.cookies and CSRF_SEED in request
        if new_seed and CSRF_COOKIE not in response.cookies:
            self.set_cookie(request, response, CSRF_COOKIE, request[CSRF_SEED])
        session = self.session_of(request)
        if ROLE_LEARNT in request and session and SESSION_COOKIE not in response.cookies:
            value = role_cookie(self.config.secret, session, request[ROLE_LEARNT])
            self.set_cookie(request, response, ROLE_COOKIE, value)
        return response

    async def _answer(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            if request.method == "POST":
                await self._check_csrf(request)
            return await handler(request)
        except SignInRequiredError:
            return see_other("/sign-in")
        except AccountsRefusalError as refusal:
            if refusal.code == "NOT_SIGNED_IN":
                response = see_other("/sign-in?notice=session-ended")
                self.end_session(response)
                return response
            if refusal.code in CARD_NOT_FOUND:
                return self.error_page(
                    request, 404, "Page not found", "We could not find that card among yours."
                )
            return self.error_page(request, 400, "That did not work", message_for(refusal.code))
        except AccountsUnavailableError:
            log.warning("accounts unavailable")
            return self.error_page(
                request,
                503,
                "Service unavailable",
                "We cannot reach your account right now. Please try again in a minute.",
            )

    async def _check_csrf(self, request: web.Request) -> None:
        form = await request.post()
        seed = request.cookies.get(CSRF_COOKIE, "")
        if not csrf_valid(
            self.config.secret, seed, self.session_of(request), form_field(form, CSRF_FIELD)
        ):
            log.warning("csrf check failed", extra={"route": _route(request)})
            raise web.HTTPForbidden(
                text="This form has expired or did not come from this site. Go back, reload "
                "the page and try again."
            )

    # -- pages ----------------------------------------------------------------------------

    async def home(self, request: web.Request) -> web.StreamResponse:
        """Signed in: the cards (an officer: the council's page); otherwise sign-in."""
        if not self.session_of(request):
            return see_other("/sign-in")
        role = self.role_of(request)
        return see_other("/officer" if role is not None and role.officer else "/cards")

    async def sign_up_form(self, request: web.Request) -> web.StreamResponse:
        return self.page(request, "sign_up.html", title="Create an account", email="")

    async def sign_up(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        email, password = form_field(form, "email"), form_field(form, "password")
        if password != form_field(form, "password_again"):
            error = message_for("MISMATCHED_PASSWORDS")
        else:
            try:
                await self.accounts.sign_up(email, password)
            except AccountsRefusalError as refusal:
                error = message_for(refusal.code)
            else:
                return see_other("/sign-in?notice=signed-up")
        return self.page(
            request,
            "sign_up.html",
            status=400,
            title="Create an account",
            email=email,
            error=error,
        )

    async def sign_in_form(self, request: web.Request) -> web.StreamResponse:
        return self.page(request, "sign_in.html", title="Sign in", email="")

    async def sign_in(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        email = form_field(form, "email")
        try:
            session = await self.accounts.sign_in(email, form_field(form, "password"))
        except AccountsRefusalError as refusal:
            status = 429 if refusal.code == "SIGN_IN_RATE_LIMITED" else 400
            return self.page(
                request,
                "sign_in.html",
                status=status,
                title="Sign in",
                email=email,
                error=message_for(refusal.code),
            )
        role = await self.learn_role(session.token)
        response = see_other("/officer" if role is not None and role.officer else "/cards")
        self.start_session(request, response, session, role)
        return response

    async def sign_out(self, request: web.Request) -> web.StreamResponse:
        session = self.session_of(request)
        if session:
            # An already ended session: the browser forgets it all the same.
            with contextlib.suppress(AccountsRefusalError):
                await self.accounts.sign_out(session)
        response = see_other("/sign-in?notice=signed-out")
        self.end_session(response)
        return response

    async def reset_request_form(self, request: web.Request) -> web.StreamResponse:
        return self.page(request, "reset_request.html", title="Reset your password", email="")

    async def reset_request(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        email = form_field(form, "email")
        try:
            await self.accounts.request_reset(email)
        except AccountsRefusalError as refusal:
            return self.page(
                request,
                "reset_request.html",
                status=400,
                title="Reset your password",
                email=email,
                error=message_for(refusal.code),
            )
        return see_other("/password/reset?notice=reset-sent")

    async def reset_form(self, request: web.Request) -> web.StreamResponse:
        return self.page(request, "reset.html", title="Choose a new password")

    async def reset(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        password = form_field(form, "password")
        if password != form_field(form, "password_again"):
            error = message_for("MISMATCHED_PASSWORDS")
        else:
            try:
                token = form_field(form, "reset_token").strip()
                await self.accounts.reset_password(token, password)
            except AccountsRefusalError as refusal:
                error = message_for(refusal.code)
            else:
                response = see_other("/sign-in?notice=password-reset")
                self.end_session(response)  # the reset ended every session anyway
                return response
        return self.page(
            request, "reset.html", status=400, title="Choose a new password", error=error
        )

    async def cards(self, request: web.Request) -> web.StreamResponse:
        return await self._cards_page(request)

    async def _cards_page(
        self,
        request: web.Request,
        *,
        status: int = 200,
        error: str | None = None,
        card_token: str = "",
        label: str = "",
    ) -> web.Response:
        session = self.require_session(request)
        cards = await self.accounts.list_cards(session)
        balances = await asyncio.gather(
            *(self.accounts.get_balance(session, c.token) for c in cards)
        )
        return self.page(
            request,
            "cards.html",
            status=status,
            title="My cards",
            cards=list(zip(cards, balances, strict=True)),
            error=error,
            card_token=card_token,
            label=label,
        )

    async def add_card(self, request: web.Request) -> web.StreamResponse:
        session = self.require_session(request)
        form = await request.post()
        card_token = form_field(form, "card_token").strip()
        label = form_field(form, "label").strip()
        try:
            added = await self.accounts.add_card(session, card_token, label)
        except AccountsRefusalError as refusal:
            if refusal.code == "NOT_SIGNED_IN":
                raise
            # A card number typed by mistake is never sent back to the page.
            keep = "" if refusal.code == "RAW_CARD_NUMBER" else card_token
            return await self._cards_page(
                request,
                status=400,
                error=message_for(refusal.code),
                card_token=keep,
                label=label,
            )
        return see_other(f"/cards?notice={'card-added' if added else 'card-known'}")

    async def remove_card(self, request: web.Request) -> web.StreamResponse:
        session = self.require_session(request)
        form = await request.post()
        await self.accounts.remove_card(session, form_field(form, "card_token"))
        return see_other("/cards?notice=card-removed")

    async def card(self, request: web.Request) -> web.StreamResponse:
        return await self._card_page(request, request.match_info["card"])

    async def _card_page(
        self,
        request: web.Request,
        card: str,
        *,
        status: int = 200,
        error: str | None = None,
        amount: str = "",
    ) -> web.Response:
        """One card: its balance, what moved it (paged), and the top-up form.

        Accounts answers only for the caller's own card; another's is NOT_YOUR_CARD, a 404
        with none of the card's data. A fresh idempotency key is put in the form on every
        render, so a form submitted twice (a double click, a refreshed POST) credits once.
        """
        session = self.require_session(request)
        page_token = request.query.get("movements", "")[:FIELD_LIMIT]
        balance = await self.accounts.get_balance(session, card)
        movements = await self.accounts.list_movements(
            session, card, self.config.page_size, page_token
        )
        cards = await self.accounts.list_cards(session)
        label = next((c.label for c in cards if c.token == card), "")
        caps = await self.optional(self.accounts.caps_progress(session, card))
        return self.page(
            request,
            "card.html",
            caps=caps,
            status=status,
            title=f"Card: {label or card}",
            card=card,
            label=label,
            balance=balance,
            movements=movements.movements,
            next_page=movements.next_page_token,
            first_page=not page_token,
            error=error,
            amount=amount,
            idempotency_key=secrets.token_urlsafe(24),
            max_top_up=format_money(Money(self.config.max_top_up_minor, self.config.currency)),
        )

    async def top_up(self, request: web.Request) -> web.StreamResponse:
        session = self.require_session(request)
        form = await request.post()
        card = form_field(form, "card_token")
        amount_text = form_field(form, "amount")[:64]
        max_top_up = format_money(Money(self.config.max_top_up_minor, self.config.currency))
        try:
            minor = parse_amount(amount_text, self.config.max_top_up_minor)
            result = await self.accounts.top_up(
                session,
                card,
                Money(minor, self.config.currency),
                form_field(form, "idempotency_key"),
            )
        except AmountError as bad:
            error = top_up_message(bad.code, max_top_up)
        except AccountsRefusalError as refusal:
            if refusal.code not in TOP_UP_REFUSALS:
                raise  # another's card: 404; no session: sign-in
            error = top_up_message(refusal.code, max_top_up)
        else:
            notice = "top-up-replayed" if result.replayed else "topped-up"
            return see_other(f"/cards/{quote(card, safe='')}?notice={notice}")
        return await self._card_page(request, card, status=400, error=error, amount=amount_text)

    async def journeys(self, request: web.Request) -> web.StreamResponse:
        return await self._journeys_page(request, request.match_info["card"])

    async def _journeys_page(
        self,
        request: web.Request,
        card: str,
        *,
        status: int = 200,
        error: str | None = None,
        claim_journey: str = "",
        exit_stop: str = "",
    ) -> web.Response:
        """A page of the card's history, its claims, and a claim form on each incomplete
        journey not claimed yet."""
        session = self.require_session(request)
        page_token = request.query.get("page", "")[:FIELD_LIMIT]
        page = await self.accounts.list_journeys(session, card, self.config.page_size, page_token)
        cards = await self.accounts.list_cards(session)
        label = next((c.label for c in cards if c.token == card), "")
        claims = await self.optional(self.accounts.list_claims(session, card))
        claimed: dict[str, ClaimView] = {c.journey_id: c for c in reversed(claims or [])}
        return self.page(
            request,
            "journeys.html",
            status=status,
            title=f"Journeys: {label or card}",
            card=card,
            label=label,
            journeys=page.journeys,
            next_page=page.next_page_token,
            first_page=not page_token,
            claims=claims,
            claimed=claimed,
            stops=self.config.stops,
            error=error,
            claim_journey=claim_journey,
            exit_stop=exit_stop,
        )

    async def claim(self, request: web.Request) -> web.StreamResponse:
        """Claim the missing exit of one incomplete journey (another's card: 404)."""
        session = self.require_session(request)
        form = await request.post()
        card = form_field(form, "card_token")
        journey_id = form_field(form, "journey_id")
        exit_stop = form_field(form, "exit_stop_id").strip()[:256]
        try:
            await self.accounts.claim_missing_exit(session, card, journey_id, exit_stop)
        except AccountsRefusalError as refusal:
            if refusal.code not in CLAIM_REFUSALS:
                raise
            return await self._journeys_page(
                request,
                card,
                status=400,
                error=message_for(refusal.code),
                claim_journey=journey_id,
                exit_stop=exit_stop,
            )
        return see_other(f"/cards/{quote(card, safe='')}/journeys?notice=claim-made#claims")

    async def journeys_csv(self, request: web.Request) -> web.StreamResponse:
        session = self.require_session(request)
        card = request.match_info["card"]
        # The first page is read before any byte is sent, so another's card is a 404 page.
        page = await self.accounts.list_journeys(session, card, 100, "")
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/csv; charset=utf-8",
                "Content-Disposition": 'attachment; filename="clearway-journeys.csv"',
            }
        )
        for name, value in SECURITY_HEADERS.items():
            response.headers[name] = value
        response.headers["Cache-Control"] = "no-store"
        await response.prepare(request)
        await response.write(journeys_csv(page.journeys).encode())
        sent = len(page.journeys)
        while page.next_page_token and sent < self.config.csv_limit:
            page = await self.accounts.list_journeys(session, card, 100, page.next_page_token)
            await response.write(journeys_csv(page.journeys, header=False).encode())
            sent += len(page.journeys)
        await response.write_eof()
        return response

    async def healthz(self, request: web.Request) -> web.StreamResponse:
        """Readiness: 200 only while accounts answers SERVING and the portal is not stopping."""
        ready = not self.stopping and await self.accounts.serving()
        return web.Response(
            text="SERVING\n" if ready else "NOT_SERVING\n", status=200 if ready else 503
        )

    async def livez(self, request: web.Request) -> web.StreamResponse:
        """Liveness: the process answers HTTP."""
        return web.Response(text="ok\n")


def web_app(portal: Portal) -> web.Application:
    """The aiohttp application with every route and middleware."""
    app = web.Application(
        middlewares=[portal.access_log, portal.security], client_max_size=64 * 1024
    )
    r = app.router
    r.add_get("/", portal.home)
    r.add_get("/sign-up", portal.sign_up_form)
    r.add_post("/sign-up", portal.sign_up)
    r.add_get("/sign-in", portal.sign_in_form)
    r.add_post("/sign-in", portal.sign_in)
    r.add_post("/sign-out", portal.sign_out)
    r.add_get("/password/forgot", portal.reset_request_form)
    r.add_post("/password/forgot", portal.reset_request)
    r.add_get("/password/reset", portal.reset_form)
    r.add_post("/password/reset", portal.reset)
    r.add_get("/cards", portal.cards)
    r.add_post("/cards", portal.add_card)
    r.add_post("/cards/remove", portal.remove_card)
    r.add_post("/cards/top-up", portal.top_up)
    r.add_post("/cards/claim", portal.claim)
    r.add_get("/cards/{card}", portal.card)
    r.add_get("/cards/{card}/journeys", portal.journeys)
    r.add_get("/cards/{card}/journeys.csv", portal.journeys_csv)
    r.add_get("/healthz", portal.healthz)
    r.add_get("/livez", portal.livez)
    r.add_static("/static/", STATIC_DIR, append_version=False)
    return app
