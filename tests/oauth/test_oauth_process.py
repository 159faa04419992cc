"""The OAuth sign-in against a real proxy process, as an operator sets it up (README "OAuth sign-in"):
every hop over real sockets, a path prefix, the public URL the provider calls back, and the log
file read for secrets afterwards."""

from __future__ import annotations

import json

import httpx

from tests.oauth.authorization_server import running_provider
from tests.oauth.spiff_backend import USER_TOKEN, running_backend
from tests.ports import free_port
from tests.processes import process, stop, wait_for_http

AUTH = "http/OAuth2"


def test_sign_in_then_a_command_with_the_stored_token_set(tmp_path):
    port, grpc_port = free_port(), free_port()
    public = f"http://127.0.0.1:{port}/standard"
    with running_backend() as backend, running_provider(f"{public}/v1/auth/{AUTH}/callback") as provider:
        env = {
            "CONNECTOR_PROXY_PORT": str(port),
            "CONNECTOR_PROXY_GRPC_PORT": str(grpc_port),
            "CONNECTOR_PROXY_PATH_PREFIX": "/standard",
            "CONNECTOR_PROXY_API_KEY": "proxy-key",  # the browser flow needs none
            "CONNECTOR_PROXY_PUBLIC_URL": public,
            "CONNECTOR_PROXY_OAUTH_REDIRECT_URLS": f"{backend.url}/v1.0/authentication_callback/",
            "CONNECTOR_PROXY_OAUTH_STATE_SECRET": "a-long-random-key-shared-by-replicas",
            "CONNECTOR_PROXY_HTTP_OAUTH2_AUTHORIZE_URL": provider.authorize_url,
            "CONNECTOR_PROXY_HTTP_OAUTH2_TOKEN_URL": provider.token_url,
            "CONNECTOR_PROXY_HTTP_OAUTH2_SCOPES": "openid accounting offline_access",
            "CONNECTOR_PROXY_HTTP_OAUTH2_CLIENT_ID": provider.client.client_id,
            "CONNECTOR_PROXY_HTTP_OAUTH2_CLIENT_SECRET": provider.client.client_secret,
            "CONNECTOR_PROXY_LOG_LEVEL": "DEBUG",
        }
        log = tmp_path / "proxy.log"
        with process(["-m", "connector_proxy"], env, log) as proc:
            wait_for_http(public, proc, log)
            key = {"Spiff-Connector-Proxy-Api-Key": "proxy-key"}
            auths = httpx.get(f"{public}/v1/auths", headers=key).json()
            assert AUTH in [a["id"] for a in auths]

            with httpx.Client(follow_redirects=True, timeout=10) as browser:
                page = browser.get(f"{public}/v1/auth/{AUTH}?redirect_url={backend.redirect_url(AUTH)}")
            assert (page.status_code, str(page.url)) == (200, f"{backend.url}/configuration")
            token_set = json.loads(backend.secrets[AUTH])

            answer = httpx.post(
                f"{public}/v1/do/http/GetRequestV2",
                headers=key,
                json={"url": f"{provider.url}/api/me", "oauth2_token_set": backend.secrets[AUTH]},
                timeout=10,
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["command_response"]["body"]["user"] == "ada"
            stop(proc, log)
    text = log.read_text()
    assert "OAuth flow of http/OAuth2 completed" in text
    for secret in (
        token_set["access_token"],
        token_set["refresh_token"],
        USER_TOKEN,
        provider.client.client_secret,
        *provider.issued_codes,
    ):
        assert secret not in text
    assert provider.issued_codes
