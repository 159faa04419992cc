"""End to end: a diagram whose service tasks use an OAuth 2.0 token set spiff-arena stores.

The admin signs in once (the browser flow of spec §7, against Authlib's authorization server);
spiff-arena's secret store then holds the token set. The diagram passes it as
``secret:http/OAuth2`` to two tasks. When the first runs, the access token has expired: the proxy
refreshes it, and the backend's rules (spec §3.2 step 7) store the new set, which the second task
then gets, with no second refresh.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.oauth.authorization_server import Provider, running_provider
from tests.oauth.spiff_backend import SpiffBackend, running_backend

from .backend_rules import BackendServiceDelegate
from .conftest import ProxyProcess, _proxy
from .test_bpmn import run, state_of

AUTH = "http/OAuth2"


@pytest.fixture(scope="module")
def parties(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ProxyProcess, Provider, SpiffBackend]]:
    with running_backend() as backend, running_provider("http://placeholder/") as provider:
        settings = {
            "CONNECTOR_PROXY_OAUTH_REDIRECT_URLS": f"{backend.url}/v1.0/authentication_callback/",
            "CONNECTOR_PROXY_HTTP_OAUTH2_AUTHORIZE_URL": provider.authorize_url,
            "CONNECTOR_PROXY_HTTP_OAUTH2_TOKEN_URL": provider.token_url,
            "CONNECTOR_PROXY_HTTP_OAUTH2_SCOPES": "openid accounting offline_access",
            "CONNECTOR_PROXY_HTTP_OAUTH2_CLIENT_ID": provider.client.client_id,
            "CONNECTOR_PROXY_HTTP_OAUTH2_CLIENT_SECRET": provider.client.client_secret,
        }
        with _proxy(tmp_path_factory.mktemp("oauth") / "proxy.log", **settings) as proxy:
            provider.client.redirect_uris = [f"{proxy.url}/v1/auth/{AUTH}/callback"]
            yield proxy, provider, backend


def test_an_expired_token_set_is_refreshed_once_and_stored_for_the_next_task(parties):
    proxy, provider, backend = parties
    provider.expires_in["authorization_code"] = 1
    with httpx.Client(trust_env=False, follow_redirects=True, timeout=10) as browser:
        page = browser.get(f"{proxy.url}/v1/auth/{AUTH}?redirect_url={backend.redirect_url(AUTH)}")
    assert str(page.url) == f"{backend.url}/configuration"
    signed_in = json.loads(backend.secrets[AUTH])
    time.sleep(1.2)  # the access token has expired, at the provider too

    with httpx.Client(trust_env=False, follow_redirects=True) as client:
        delegate = BackendServiceDelegate(proxy.url, client, secrets=backend.secrets)
        workflow = run("oauth_token_refresh", delegate, api_url=f"{provider.url}/api/me")

    assert state_of(workflow, "end") == "COMPLETED", proxy.log()
    data = workflow.get_tasks(spec_name="end")[0].data
    for result in (data["first"], data["second"]):
        assert result["body"] == {"user": "ada", "scope": "openid accounting offline_access"}
        assert (result["http_status"], result["operator_identifier"]) == (200, "http/GetRequestV2")
    assert provider.grants("refresh_token") == 1
    stored = json.loads(backend.secrets[AUTH])
    assert stored["access_token"] != signed_in["access_token"]
    assert stored["expires_at"] > time.time() + 3000
    first, second = delegate.exchanges
    assert "refreshed_token_set" in json.loads(first["text"])
    assert "refreshed_token_set" not in json.loads(second["text"])
    assert second["request"]["oauth2_token_set"] == backend.secrets[AUTH]
