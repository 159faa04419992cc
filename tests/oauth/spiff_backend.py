"""spiff-arena's side of the browser OAuth flow, served for the tests on 127.0.0.1:0: the backend's
``GET /v1.0/authentication_callback/<service>/<auth_method>?token=…&response=…``, which checks the
user's token, stores ``response`` as the secret ``<service>/<auth_method>`` and redirects to the
frontend's ``/configuration`` (spec §7 step 5), and that frontend page.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, abort, redirect, request

from tests.oauth.wsgi import serving

__all__ = ["SpiffBackend", "running_backend"]

USER_TOKEN = "arena-user-token.eyJzdWIiOiJhZGEifQ"  # what spiff-arena puts in redirect_url's ?token=


@dataclass
class SpiffBackend:
    url: str = ""
    secrets: dict[str, str] = field(default_factory=dict)
    callbacks: list[dict[str, str]] = field(default_factory=list)

    def redirect_url(self, auth_id: str) -> str:
        """The redirect_url spiff-arena's frontend puts, unencoded, in the link to the proxy."""
        return f"{self.url}/v1.0/authentication_callback/{auth_id}?token={USER_TOKEN}"


def _app(backend: SpiffBackend) -> Flask:
    app = Flask(__name__)

    @app.get("/v1.0/authentication_callback/<service>/<auth_method>")
    def authentication_callback(service: str, auth_method: str) -> Any:
        backend.callbacks.append(dict(request.args))
        if request.args.get("token") != USER_TOKEN:
            abort(401)
        backend.secrets[f"{service}/{auth_method}"] = request.args["response"]
        return redirect(f"{backend.url}/configuration")

    @app.get("/configuration")
    def configuration() -> Any:
        return "<h1>Configuration</h1>"

    return app


@contextlib.contextmanager
def running_backend() -> Iterator[SpiffBackend]:
    backend = SpiffBackend()
    with serving(_app(backend)) as backend.url:
        yield backend
