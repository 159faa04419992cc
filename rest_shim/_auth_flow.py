"""spiff-arena's browser OAuth flow (spec §7): ``GET /v1/auth/{connector}/{auth}`` sends the browser
to the provider, ``GET /v1/auth/{connector}/{auth}/callback`` exchanges the code and sends the browser
back to spiff-arena with ``response=<token set JSON>``, which spiff-arena stores as the secret
``{connector}/{auth}``.

Both routes are browser navigations: no API key, and every refusal is a readable HTML page.

What binds the two halves:
- ``state``, sent to the provider: signed, expiring after ``STATE_SECONDS``, naming the handler, a
  nonce and a hash of ``redirect_url``. It carries nothing secret: the provider and its logs see it.
- a cookie named after the nonce, on the callback's path only (HttpOnly, SameSite=Lax): signed, with
  the PKCE code verifier and ``redirect_url`` (which holds the user's spiff-arena token). A callback
  in another browser, or with a state that is not this flow's, is refused.

``redirect_url`` must start with one of the operator's allowed URLs (``CONNECTOR_PROXY_OAUTH_REDIRECT_URLS``):
the proxy never sends a browser, let alone a token set, anywhere else. The frontend puts it in the query
without encoding it (its own ``?token=`` inside), so it is read raw, to the end of the query.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from server.errors import CommandError
from server.oauth import OAuth2Handler, code_challenge, exchange_code, new_code_verifier

__all__ = ["AuthFlow", "allowed_redirect"]

logger = logging.getLogger(__name__)

STATE_SECONDS = 600  # from leaving for the provider to coming back
_COOKIE_PREFIX = "spiff_oauth_"


@dataclass
class AuthFlow:
    """The browser flow's configuration.

    Args:
        redirect_urls: where the browser may be sent back: URL prefixes (scheme, host, port and the
            start of the path), e.g. ``https://spiff.example.com/api/v1.0/authentication_callback/``.
        state_secret: signs ``state`` and the flow's cookie; replicas behind one URL need the same.
            A random one when None (one process).
        public_url: the proxy's base URL as browsers and providers reach it, before ``/v1/``; by
            default the request's scheme and host, and the path prefix.
    """

    redirect_urls: tuple[str, ...] = ()
    state_secret: str | None = field(default=None, repr=False)
    public_url: str = ""
    _key: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._key = self.state_secret or secrets.token_urlsafe(32)

    def _signer(self, salt: str) -> Any:
        from itsdangerous import URLSafeTimedSerializer  # imported on first use

        return URLSafeTimedSerializer(self._key, salt=salt)

    async def start(self, request: Request, handler: OAuth2Handler | None, path_prefix: str) -> Response:
        if handler is None:
            return _page(404, "Auth not found", "This proxy has no such auth handler.")
        redirect_url = redirect_url_of(request.url.query)
        if not redirect_url:
            return _page(400, "No redirect_url", "Start the sign-in from spiff-arena's Authentications page.")
        if not allowed_redirect(redirect_url, self.redirect_urls):
            logger.warning(
                "OAuth flow of %s refused: redirect to %s is not allowed", handler.id, _safe(redirect_url)
            )
            return _page(
                400,
                "Redirect not allowed",
                f"This proxy does not send browsers back to {_safe(redirect_url)}. Its operator lists the "
                "spiff-arena URLs it may return to in CONNECTOR_PROXY_OAUTH_REDIRECT_URLS.",
            )
        try:
            provider = handler.provider()
        except CommandError as exc:
            return _page(503, "Sign-in not configured", exc.message)
        verifier, nonce = new_code_verifier(), secrets.token_urlsafe(16)
        state = self._signer("state").dumps({"h": handler.id, "n": nonce, "r": _digest(redirect_url)})
        query = {
            "response_type": "code",
            "client_id": provider.client_id,
            "redirect_uri": self._callback_uri(request, handler, path_prefix),
            "state": state,
            "code_challenge": code_challenge(verifier),
            "code_challenge_method": "S256",
        }
        if provider.scopes:
            query["scope"] = " ".join(provider.scopes)
        query.update(provider.authorize_params)
        response = RedirectResponse(_with_query(provider.authorize_url, query), status_code=302)
        response.set_cookie(
            _COOKIE_PREFIX + nonce,
            self._signer("cookie").dumps({"n": nonce, "v": verifier, "r": redirect_url}),
            max_age=STATE_SECONDS,
            path=_flow_path(handler, path_prefix),
            secure=request.url.scheme == "https" or self.public_url.startswith("https:"),
            httponly=True,
            samesite="lax",
        )
        return _private(response)

    async def finish(self, request: Request, handler: OAuth2Handler | None, path_prefix: str) -> Response:
        if handler is None:
            return _page(404, "Auth not found", "This proxy has no such auth handler.")
        params = request.query_params
        if "error" in params:
            # Anyone can send a browser here with any text: shortened, quoted in the log, escaped on the page.
            reason, description = params["error"][:100], params.get("error_description", "")[:300]
            logger.info("OAuth flow of %s ended at the provider: %r", handler.id, reason)
            return _page(400, "Sign-in refused", f"The provider answered {reason}. {description}".strip())
        bound = self._bound(request, handler)
        if isinstance(bound, str):
            logger.warning("OAuth callback of %s refused: %s", handler.id, bound)
            return _page(400, "Sign-in expired or not recognised", f"{bound} Start again from spiff-arena.")
        nonce, verifier, redirect_url = bound
        code = params.get("code", "")
        if not code:
            return _page(400, "No authorization code", "The provider sent the browser back without a code.")
        try:
            provider = handler.provider()
            token_set = await exchange_code(
                provider, code, verifier, self._callback_uri(request, handler, path_prefix)
            )
        except CommandError as exc:
            status = 503 if exc.error_code in ("OAuthProviderUnavailable", "OAuthNotConfigured") else 400
            return _page(status, "Sign-in failed", exc.message)
        logger.info("OAuth flow of %s completed; the token set goes to %s", handler.id, _safe(redirect_url))
        joiner = "&" if "?" in redirect_url else "?"
        target = f"{redirect_url}{joiner}response={quote(json.dumps(token_set), safe='')}"
        response = RedirectResponse(target, status_code=302)
        response.delete_cookie(_COOKIE_PREFIX + nonce, path=_flow_path(handler, path_prefix))
        return _private(response)

    def _bound(self, request: Request, handler: OAuth2Handler) -> tuple[str, str, str] | str:
        """The flow's nonce, code verifier and redirect URL, or why the callback is not this flow's."""
        from itsdangerous import BadData, SignatureExpired

        try:
            state = self._signer("state").loads(request.query_params.get("state", ""), max_age=STATE_SECONDS)
        except SignatureExpired:
            return "The sign-in took longer than allowed."
        except BadData:
            return "The state parameter is not one this proxy issued."
        if not isinstance(state, dict) or state.get("h") != handler.id:
            return "The state parameter belongs to another auth handler."
        nonce = str(state.get("n", ""))
        try:
            cookie = self._signer("cookie").loads(
                request.cookies.get(_COOKIE_PREFIX + nonce, ""), max_age=STATE_SECONDS
            )
        except BadData:
            return "This browser did not start the sign-in (its cookie is missing or not valid)."
        if (
            not isinstance(cookie, dict)
            or cookie.get("n") != nonce
            or _digest(cookie.get("r", "")) != state.get("r")
        ):
            return "The state parameter does not match this browser's sign-in."
        redirect_url = str(cookie["r"])
        if not allowed_redirect(redirect_url, self.redirect_urls):  # the allow-list may have changed
            return "The redirect URL is no longer allowed."
        return nonce, str(cookie["v"]), redirect_url

    def _callback_uri(self, request: Request, handler: OAuth2Handler, path_prefix: str) -> str:
        base = self.public_url.rstrip("/") or f"{request.url.scheme}://{request.url.netloc}{path_prefix}"
        return f"{base}/v1/auth/{handler.id}/callback"


def redirect_url_of(query: str) -> str:
    """``redirect_url`` from a raw query string, encoded or not (spiff-arena's frontend does not
    encode it, so its own query is part of it): everything after ``redirect_url=`` to the end."""
    key = "redirect_url="
    at = 0 if query.startswith(key) else query.find("&" + key) + 1
    if at == 0 and not query.startswith(key):
        return ""
    value = query[at + len(key) :]
    return unquote(value) if value.lower().startswith(("http%3a", "https%3a")) else value


def allowed_redirect(url: str, allowed: Iterable[str]) -> bool:
    """``url`` is an http(s) URL on an allowed origin whose path starts with that entry's path, with
    no dot segments, credentials or fragment that could lead elsewhere."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc or parts.fragment:
        return False
    if any(c in url for c in "\\\r\n\t ") or _has_dot_segment(parts.path):
        return False
    for entry in allowed:
        base = urlsplit(entry)
        if (
            base.scheme == parts.scheme
            and base.hostname == parts.hostname
            and (base.port or _default_port(base.scheme)) == (port or _default_port(parts.scheme))
            and parts.path.startswith(base.path or "/")
        ):
            return True
    return False


def _has_dot_segment(path: str) -> bool:
    segments = unquote(path).split("/")
    return any(s in (".", "..") for s in segments)


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def _flow_path(handler: OAuth2Handler, path_prefix: str) -> str:
    return f"{path_prefix}/v1/auth/{handler.id}/callback"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _safe(url: str) -> str:
    """A URL for logs and pages: scheme, host and path only (its query holds a spiff-arena token)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def _with_query(url: str, extra: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = urlencode([*parse_qsl(parts.query, keep_blank_values=True), *extra.items()])
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def _private(response: Response) -> Response:
    """No caching, and no Referer carrying the code or token onwards."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def _page(status: int, title: str, text: str) -> Response:
    body = (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title>"
        "<body style='font-family:sans-serif;max-width:40em;margin:3em auto'>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(text)}</p></body></html>"
    )
    return _private(HTMLResponse(body, status_code=status))
