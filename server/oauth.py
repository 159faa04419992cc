"""OAuth 2.0 for connectors: the auth handlers their protos declare, the provider's token endpoint
(exchanging an authorization code, refreshing a token set), and the token-set parameters the server
refreshes before a command gets them.

A token set is the JSON object the provider's token endpoint answered (``access_token``,
``token_type``, ``refresh_token``, ``expires_in``, ...) plus ``expires_at``, the absolute expiry in
seconds since the epoch, which the proxy adds. spiff-arena stores it as the secret
``<connector>/<handler>`` when the browser flow ends (``rest_shim`` serves that flow) and sends it for
a parameter ``secret:<connector>/<handler>``.

The token endpoint is called with aiohttp, the proxy's outbound HTTP client, in the form RFC 6749
§4.1.3 and §6 define, with PKCE (RFC 7636, S256). Refreshes of one token set are done once at a
time per process, and a refreshed set is remembered for a while: a second call bringing the old set
(spiff-arena did not store the new one, or two tasks ran at once) gets the new one instead of
spending a refresh token that the provider may have rotated away.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import functools
import hashlib
import json
import logging
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus, urlsplit

from google.protobuf import descriptor, message
from spiff.connector.v1 import options_pb2

from server.errors import (
    FailedPrecondition,
    InvalidParameters,
    Unauthenticated,
    Unavailable,
    Violation,
)
from server.schema import connector_name, connector_options, field_options

__all__ = [
    "CallTokens",
    "OAuth2Handler",
    "Provider",
    "TokenField",
    "TokenRefresh",
    "access_token",
    "code_challenge",
    "exchange_code",
    "handlers_of",
    "new_code_verifier",
    "refresh_refused_token",
    "reset",
    "token_fields",
    "using",
]

logger = logging.getLogger(__name__)

# A token this close to its expiry is refreshed first: it could expire on its way to the upstream.
EXPIRY_LEEWAY = 60.0
# How long a refreshed set stands in for the set it replaced, and how many are kept.
REMEMBER_SECONDS = 24 * 3600.0
REMEMBER_MAX = 1024
# The most a token endpoint exchange may take, within the call's own time.
TOKEN_TIMEOUT = 15.0
_AUTH_METHODS = ("client_secret_basic", "client_secret_post")


@dataclass(frozen=True)
class Provider:
    """An OAuth 2.0 provider as one handler's declaration and the settings resolve it."""

    authorize_url: str
    token_url: str
    scopes: tuple[str, ...]
    client_id: str
    client_secret: str | None = field(repr=False)
    authorize_params: Mapping[str, str]
    auth_method: str


@dataclass(frozen=True)
class OAuth2Handler:
    """One OAuth 2.0 auth handler a connector declares (``AuthHandler.oauth2``)."""

    id: str  # "<connector>/<name>", the secret spiff-arena stores the token set as
    description: str
    flow: options_pb2.OAuth2Flow

    def provider(self, env: Mapping[str, str] | None = None) -> Provider:
        """The provider, with the settings the declaration names read now.

        Raises:
            FailedPrecondition: ``OAuthNotConfigured``, a setting the handler needs is unset.
        """
        env = os.environ if env is None else env
        flow = self.flow

        def setting(name: str) -> str:
            return env.get(name, "").strip() if name else ""

        def needed(value: str, what: str, setting_name: str) -> str:
            if not value:
                where = f"set {setting_name}" if setting_name else "the handler declares none"
                msg = f"The auth handler {self.id} is not configured: it has no {what} ({where})."
                raise FailedPrecondition(msg, error_code="OAuthNotConfigured")
            return value

        scopes_text = setting(flow.scopes_setting)
        scopes = tuple(scopes_text.replace(",", " ").split()) if scopes_text else tuple(flow.scopes)
        return Provider(
            authorize_url=needed(
                setting(flow.authorize_url_setting) or flow.authorize_url,
                "authorization endpoint",
                flow.authorize_url_setting,
            ),
            token_url=needed(
                setting(flow.token_url_setting) or flow.token_url, "token endpoint", flow.token_url_setting
            ),
            scopes=scopes,
            client_id=needed(setting(flow.client_id_setting), "client id", flow.client_id_setting),
            client_secret=setting(flow.client_secret_setting) or None,
            authorize_params=dict(flow.authorize_params),
            auth_method=flow.token_endpoint_auth_method or _AUTH_METHODS[0],
        )


def handlers_of(service: descriptor.ServiceDescriptor) -> list[OAuth2Handler]:
    """The OAuth 2.0 handlers ``service`` declares.

    Raises:
        ValueError: at start-up, a declaration that could never work (no client id setting, no
            endpoint, an unknown token endpoint auth method, a URL that is not http(s)).
    """
    found = []
    for auth in connector_options(service).auths:
        if not auth.HasField("oauth2"):
            continue
        handler_id = f"{connector_name(service)}/{auth.name}"
        flow = auth.oauth2
        problem = _flow_problem(flow)
        if problem:
            msg = f"auth handler {handler_id} of {service.full_name}: {problem}"
            raise ValueError(msg)
        found.append(OAuth2Handler(handler_id, auth.description, flow))
    return found


def _flow_problem(flow: options_pb2.OAuth2Flow) -> str:
    if not flow.client_id_setting:
        return "client_id_setting is required"
    for url, setting_name, what in (
        (flow.authorize_url, flow.authorize_url_setting, "authorize_url"),
        (flow.token_url, flow.token_url_setting, "token_url"),
    ):
        if not url and not setting_name:
            return f"{what} or {what}_setting is required"
        if url and urlsplit(url).scheme not in ("http", "https"):
            return f"{what} must be an http(s) URL, got {url!r}"
    if flow.token_endpoint_auth_method and flow.token_endpoint_auth_method not in _AUTH_METHODS:
        return f"token_endpoint_auth_method must be one of {', '.join(_AUTH_METHODS)}"
    return ""


@dataclass(frozen=True)
class TokenField:
    """A request field that holds a handler's token set (``FieldOptions.auth``)."""

    name: str
    handler: OAuth2Handler


@dataclass(frozen=True)
class TokenRefresh:
    """A token set the server refreshed during a call, for spiff-arena to store as secret ``auth``."""

    auth: str
    token_set: Mapping[str, Any] = field(repr=False)

    def to_json(self) -> bytes:
        return json.dumps({"auth": self.auth, "token_set": self.token_set}).encode()

    @classmethod
    def from_json(cls, data: bytes) -> TokenRefresh:
        value = json.loads(data)
        return cls(value["auth"], value["token_set"])


def token_fields(
    service: descriptor.ServiceDescriptor, handlers: list[OAuth2Handler], request: descriptor.Descriptor
) -> tuple[TokenField, ...]:
    """The fields of ``request`` that hold token sets of ``handlers``, ``service``'s (:func:`handlers_of`).

    Raises:
        ValueError: at start-up, a field naming a handler the connector lacks, a field that is not a
            secret string, or more than one such field (spiff-arena stores one refreshed set).
    """
    by_name = {h.id.partition("/")[2]: h for h in handlers}
    found = []
    for request_field in request.fields:
        name = field_options(request_field).auth
        if not name:
            continue
        where = f"{request.full_name}.{request_field.name}"
        if name not in by_name:
            msg = (
                f"{where} holds a token set of auth handler {name!r}, "
                f"which {service.full_name} does not declare with oauth2"
            )
            raise ValueError(msg)
        if (
            request_field.type != descriptor.FieldDescriptor.TYPE_STRING
            or not field_options(request_field).secret
        ):
            msg = f"{where} holds a token set: it must be a string field declared secret"
            raise ValueError(msg)
        found.append(TokenField(request_field.name, by_name[name]))
    if len(found) > 1:
        count = len(found)
        msg = f"{request.full_name} has {count} token-set fields; spiff-arena stores one refreshed set a call"
        raise ValueError(msg)
    return tuple(found)


def access_token(token_set: str) -> str:
    """The access token of a token-set parameter, for a command to send; the server has checked
    and refreshed the set before the command runs."""
    return str(json.loads(token_set)["access_token"])


def new_code_verifier() -> str:
    """A PKCE code verifier: 43 characters of URL-safe randomness (RFC 7636 §4.1)."""
    return secrets.token_urlsafe(32)


def code_challenge(verifier: str) -> str:
    """The S256 code challenge of ``verifier`` (RFC 7636 §4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


async def exchange_code(
    provider: Provider, code: str, verifier: str, redirect_uri: str, timeout: float = TOKEN_TIMEOUT
) -> dict[str, Any]:
    """The token set for an authorization code (RFC 6749 §4.1.3, with the PKCE verifier).

    Raises:
        Unauthenticated: ``OAuthCodeRefused``, the provider refused the code.
        Unavailable: ``OAuthProviderUnavailable``, the token endpoint could not be reached or failed.
    """
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": verifier,
    }
    return await _token_request(provider, form, timeout, refused="OAuthCodeRefused")


class CallTokens:
    """The token-set fields of one call: checked, and refreshed when expired, before the command
    runs (:meth:`prepare`); refreshed again when the upstream refuses the access token
    (:func:`refresh_refused_token`). ``refreshed`` is the set spiff-arena should store; ``values``
    the tokens seen, to keep out of logs."""

    def __init__(self, fields: tuple[TokenField, ...], request: message.Message, context: Any) -> None:
        self.fields = {f.name: f for f in fields}
        self.request = request
        self.context = context
        self.refreshed: TokenRefresh | None = None
        self.values: list[str] = []
        self._refused: set[str] = set()

    async def prepare(self) -> None:
        """Checks each token-set field and refreshes an expired set in place.

        Raises:
            InvalidParameters: a field holds no token set.
            Unauthenticated: the set expired and cannot be refreshed, or the provider refused.
            Unavailable: the token endpoint could not be reached.
        """
        for token_field in self.fields.values():
            text = getattr(self.request, token_field.name)
            if not text:
                continue  # an absent optional set: the command decides
            token_set = _parse(token_field, text)
            self.values += _token_values(token_set)
            if _expired(token_set):
                await self._refresh(token_field, token_set, refused=False)

    async def refused(self, name: str) -> str | None:
        """A new token set for field ``name`` after the upstream refused its access token; None when
        there is none to get (no such field, no refresh token, or already refreshed for a refusal)."""
        token_field = self.fields.get(name)
        text = getattr(self.request, name, "") if token_field is not None else ""
        if token_field is None or not text or name in self._refused:
            return None
        token_set = json.loads(text)  # parsed once already by prepare()
        if not token_set.get("refresh_token"):
            return None
        self._refused.add(name)
        await self._refresh(token_field, token_set, refused=True)
        return str(getattr(self.request, name))

    async def _refresh(self, token_field: TokenField, token_set: dict[str, Any], *, refused: bool) -> None:
        remaining = self.context.time_remaining()
        timeout = TOKEN_TIMEOUT if remaining is None else min(TOKEN_TIMEOUT, remaining - 0.5)
        if timeout <= 0:
            msg = f"No time was left to refresh the token set of {token_field.handler.id}."
            raise Unavailable(msg, error_code="OAuthProviderUnavailable")
        new = await _refresher.fresh(token_field.handler, token_set, timeout, refused=refused)
        self.values += _token_values(new)
        setattr(self.request, token_field.name, json.dumps(new))
        self.refreshed = TokenRefresh(token_field.handler.id, new)


_call_tokens: contextvars.ContextVar[CallTokens | None] = contextvars.ContextVar("call_tokens", default=None)


def using(tokens: CallTokens) -> contextvars.Token[CallTokens | None]:
    """Makes ``tokens`` the running command's (for :func:`refresh_refused_token`)."""
    return _call_tokens.set(tokens)


def reset(token: contextvars.Token[CallTokens | None]) -> None:
    _call_tokens.reset(token)


async def refresh_refused_token(field: str) -> str | None:
    """For a command whose upstream refused (401) the access token of its token-set parameter
    ``field``: the refreshed token set, already in the request, to send again once; None when no
    refresh is possible (no refresh token, or this call refreshed it for a refusal already).

    Raises:
        Unauthenticated: ``OAuthRefreshFailed``, the provider refused the refresh token too.
        Unavailable: ``OAuthProviderUnavailable``.
    """
    tokens = _call_tokens.get()
    return None if tokens is None else await tokens.refused(field)


def _parse(token_field: TokenField, text: str) -> dict[str, Any]:
    try:
        token_set = json.loads(text)
    except ValueError:
        token_set = None
    if not isinstance(token_set, dict) or not isinstance(token_set.get("access_token"), str):
        problem = (
            f"is not a token set of {token_field.handler.id}: authenticate it on spiff-arena's "
            f"Authentications page and pass secret:{token_field.handler.id}"
        )
        msg = f"Invalid parameters: {token_field.name} {problem}."
        raise InvalidParameters(
            msg,
            violations=[Violation(token_field.name, problem)],
        )
    return token_set


def _token_values(token_set: Mapping[str, Any]) -> list[str]:
    return [
        v
        for k in ("access_token", "refresh_token", "id_token")
        if isinstance(v := token_set.get(k), str) and v
    ]


def _expired(token_set: Mapping[str, Any]) -> bool:
    expires_at = token_set.get("expires_at")
    if not isinstance(expires_at, int | float) or isinstance(expires_at, bool):
        return False  # the provider gave no lifetime: the set is used until the upstream refuses it
    return float(expires_at) <= time.time() + EXPIRY_LEEWAY


class _Refresher:
    """Refreshes token sets, one refresh per set at a time, and remembers recent results."""

    def __init__(self) -> None:
        self._running: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._recent: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()

    async def fresh(
        self, handler: OAuth2Handler, token_set: dict[str, Any], timeout: float, *, refused: bool = False
    ) -> dict[str, Any]:
        """The set that replaces ``token_set``, expired or (``refused``) turned down by an upstream."""
        refresh_token = token_set.get("refresh_token")
        if not isinstance(refresh_token, str) or not refresh_token:
            msg = (
                f"The access token of {handler.id} has expired and the token set has no refresh token: "
                "authenticate again on spiff-arena's Authentications page."
            )
            raise Unauthenticated(msg, error_code="OAuthTokenExpired")
        key = hashlib.sha256(f"{handler.id}\0{refresh_token}".encode()).hexdigest()
        remembered = self._remembered(key)
        if remembered is not None:
            turned_down = refused and remembered.get("access_token") == token_set.get("access_token")
            if not _expired(remembered) and not turned_down:
                return remembered
            if remembered.get("refresh_token") != refresh_token:  # refreshed since, and expired again
                return await self.fresh(handler, remembered, timeout, refused=turned_down)
        running = self._running.get(key)
        if running is None:
            running = asyncio.ensure_future(self._refresh(handler, key, refresh_token, timeout))
            self._running[key] = running
            running.add_done_callback(functools.partial(self._done, key))
        # Shielded: a caller running out of time does not cancel a refresh others wait for, or
        # whose new set, with the old refresh token already spent, must be remembered.
        return await asyncio.shield(running)

    async def _refresh(
        self, handler: OAuth2Handler, key: str, refresh_token: str, timeout: float
    ) -> dict[str, Any]:
        provider = handler.provider()
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        new = await _token_request(provider, form, timeout, refused="OAuthRefreshFailed")
        new.setdefault("refresh_token", refresh_token)  # a provider that does not rotate sends none
        self._remember(key, new)
        logger.info("refreshed the token set of %s", handler.id)
        return new

    def _done(self, key: str, future: asyncio.Future[dict[str, Any]]) -> None:
        self._running.pop(key, None)
        if not future.cancelled():
            future.exception()  # retrieved here: every caller may have stopped waiting

    def _remembered(self, key: str) -> dict[str, Any] | None:
        entry = self._recent.get(key)
        if entry is None or entry[0] < time.monotonic():
            self._recent.pop(key, None)
            return None
        return entry[1]

    def _remember(self, key: str, token_set: dict[str, Any]) -> None:
        self._recent[key] = (time.monotonic() + REMEMBER_SECONDS, token_set)
        self._recent.move_to_end(key)
        while len(self._recent) > REMEMBER_MAX:
            self._recent.popitem(last=False)


_refresher = _Refresher()


async def _token_request(
    provider: Provider, form: dict[str, str], timeout: float, *, refused: str
) -> dict[str, Any]:
    import aiohttp  # imported on first use: most processes never see an OAuth flow

    headers = {"Accept": "application/json"}
    if provider.auth_method == "client_secret_post" or provider.client_secret is None:
        form = {**form, "client_id": provider.client_id}
        if provider.client_secret is not None:
            form["client_secret"] = provider.client_secret
    else:  # RFC 6749 §2.3.1: both form-encoded, then basic auth
        headers["Authorization"] = aiohttp.encode_basic_auth(
            quote_plus(provider.client_id), quote_plus(provider.client_secret)
        )
    host = urlsplit(provider.token_url).netloc
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.post(provider.token_url, data=form, headers=headers) as response,
        ):
            status = response.status
            text = await response.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        msg = f"The token endpoint at {host} could not be reached: {type(exc).__name__}."
        raise Unavailable(msg, error_code="OAuthProviderUnavailable") from None
    try:
        answer = json.loads(text)
    except ValueError:
        answer = None
    if status >= 500 or not isinstance(answer, dict):
        msg = f"The token endpoint at {host} answered HTTP {status} without a token response."
        raise Unavailable(msg, error_code="OAuthProviderUnavailable")
    if status >= 400 or not isinstance(answer.get("access_token"), str):
        # RFC 6749 §5.2: error and error_description say why; neither carries a secret.
        reason = str(answer.get("error") or f"HTTP {status}")
        description = answer.get("error_description")
        detail = f"{reason}: {description}" if isinstance(description, str) and description else reason
        msg = (
            f"The token endpoint at {host} refused: {detail}. "
            "Authenticate again on spiff-arena's Authentications page."
        )
        raise Unauthenticated(msg, error_code=refused)
    expires_in = answer.get("expires_in")
    if isinstance(expires_in, int | float) and not isinstance(expires_in, bool):
        answer["expires_at"] = int(time.time() + float(expires_in))
    return answer
