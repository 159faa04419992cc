"""A real OAuth 2.0 authorization server for the tests: Authlib's Flask ``AuthorizationServer`` with
the authorization code grant (PKCE required, S256), the refresh token grant (rotating: a refresh token
works once) and a resource protected by its bearer tokens, served by werkzeug on 127.0.0.1:0.

The protocol is Authlib's; what is written here is only the storage it asks for (in memory) and
one user who consents to everything. It counts what it was asked, for the tests to check.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from authlib.common.security import generate_token
from authlib.integrations.flask_oauth2 import AuthorizationServer, ResourceProtector, current_token
from authlib.oauth2.rfc6749 import OAuth2Error, grants
from authlib.oauth2.rfc6750 import BearerTokenGenerator, BearerTokenValidator
from authlib.oauth2.rfc7636 import CodeChallenge
from flask import Flask, jsonify, request

from tests.oauth.wsgi import serving

__all__ = ["Provider", "running_provider"]

USER = "ada"


@dataclass
class Client:
    client_id: str
    client_secret: str
    redirect_uris: list[str]
    scope: str

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uris[0]

    def get_allowed_scope(self, scope: str) -> str:
        allowed = set(self.scope.split())
        return " ".join(s for s in (scope or "").split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return secrets.compare_digest(client_secret, self.client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == "client_secret_basic" if endpoint == "token" else True

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in ("authorization_code", "refresh_token")


@dataclass
class Code:
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    code_challenge: str
    code_challenge_method: str

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope


@dataclass
class Token:
    client_id: str
    access_token: str
    refresh_token: str | None
    scope: str
    expires_in: int
    issued_at: float = field(default_factory=time.time)
    revoked: bool = False

    def check_client(self, client: Client) -> bool:
        return client.client_id == self.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return self.expires_in

    def is_expired(self) -> bool:
        return time.time() >= self.issued_at + self.expires_in

    def is_revoked(self) -> bool:
        return self.revoked

    def get_user(self) -> str:
        return USER

    def get_client(self) -> Client:
        raise NotImplementedError


@dataclass
class Provider:
    """The running server: its URL, its one client, and what it saw."""

    url: str
    client: Client
    codes: dict[str, Code] = field(default_factory=dict)
    issued_codes: list[str] = field(default_factory=list)
    tokens: list[Token] = field(default_factory=list)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    # Lifetimes of the access tokens it issues, by grant type.
    expires_in: dict[str, int] = field(
        default_factory=lambda: {"authorization_code": 3600, "refresh_token": 3600}
    )

    @property
    def authorize_url(self) -> str:
        return f"{self.url}/authorize"

    @property
    def token_url(self) -> str:
        return f"{self.url}/token"

    def grants(self, grant_type: str) -> int:
        return sum(1 for r in self.token_requests if r.get("grant_type") == grant_type)


def _app(provider: Provider) -> Flask:
    app = Flask(__name__)

    class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc]
        TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = ["client_secret_basic"]

        def save_authorization_code(self, code: str, req: Any) -> None:
            provider.issued_codes.append(code)
            provider.codes[code] = Code(
                code,
                req.client.client_id,
                req.payload.redirect_uri,
                req.payload.scope,
                req.payload.data.get("code_challenge"),
                req.payload.data.get("code_challenge_method"),
            )

        def query_authorization_code(self, code: str, client: Client) -> Code | None:
            found = provider.codes.get(code)
            return found if found is not None and found.client_id == client.client_id else None

        def delete_authorization_code(self, authorization_code: Code) -> None:
            provider.codes.pop(authorization_code.code, None)

        def authenticate_user(self, authorization_code: Code) -> str:
            return USER

    class RefreshTokenGrant(grants.RefreshTokenGrant):  # type: ignore[misc]
        TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = ["client_secret_basic"]
        INCLUDE_NEW_REFRESH_TOKEN = True  # rotation: each refresh token works once

        def authenticate_refresh_token(self, refresh_token: str) -> Token | None:
            return next(
                (t for t in provider.tokens if t.refresh_token == refresh_token and not t.revoked), None
            )

        def authenticate_user(self, refresh_token: Token) -> str:
            return USER

        def revoke_old_credential(self, refresh_token: Token) -> None:
            refresh_token.revoked = True

    def query_client(client_id: str) -> Client | None:
        return provider.client if client_id == provider.client.client_id else None

    def save_token(token: dict[str, Any], req: Any) -> None:
        provider.tokens.append(
            Token(
                req.client.client_id,
                token["access_token"],
                token.get("refresh_token"),
                token.get("scope", ""),
                int(token["expires_in"]),
            )
        )

    server = AuthorizationServer(app, query_client=query_client, save_token=save_token)
    server.register_token_generator(
        "default",
        BearerTokenGenerator(
            lambda **_: generate_token(42),
            lambda **_: generate_token(48),  # every grant brings a refresh token
            lambda _client, grant_type: provider.expires_in[grant_type],
        ),
    )
    server.register_grant(AuthorizationCodeGrant, [CodeChallenge(required=True)])
    server.register_grant(RefreshTokenGrant)

    class Validator(BearerTokenValidator):  # type: ignore[misc]
        def authenticate_token(self, token_string: str) -> Token | None:
            return next((t for t in provider.tokens if t.access_token == token_string), None)

    protect = ResourceProtector()
    protect.register_token_validator(Validator())

    @app.get("/authorize")
    def authorize() -> Any:
        provider.authorize_requests.append(dict(request.args))
        try:  # the consent page: its checks (client, redirect_uri, PKCE challenge), then the user agrees
            grant = server.get_consent_grant(end_user=USER)
        except OAuth2Error as error:
            return server.handle_error_response(None, error)
        return server.create_authorization_response(grant_user=USER, grant=grant)

    @app.post("/token")
    def token() -> Any:
        provider.token_requests.append(dict(request.form))
        return server.create_token_response()

    @app.get("/api/me")
    @protect("accounting")  # type: ignore[untyped-decorator]
    def me() -> Any:
        return jsonify(user=USER, scope=current_token.scope)

    return app


@contextlib.contextmanager
def running_provider(
    redirect_uri: str, scope: str = "openid accounting offline_access"
) -> Iterator[Provider]:
    """The server on 127.0.0.1:<free port>, with one client allowed to return to ``redirect_uri``."""
    os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"  # plain http on loopback (the tests' own process)
    client = Client("proxy-client", secrets.token_urlsafe(16), [redirect_uri], scope)
    provider = Provider("", client)
    with serving(_app(provider)) as provider.url:
        yield provider
