"""The OAuth 2.0 flow behind ``/v1/auths`` (spec §7), end to end: a real authorization server
(Authlib's), spiff-arena's callback route, the shim on both execution paths, and a browser played
by httpx following redirects across the three.

The browser's requests to the proxy go through the ASGI transport (``http://proxy.test``), its
requests to the provider and to spiff-arena over real sockets.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from rest_shim import AuthFlow
from rest_shim._auth_flow import allowed_redirect, redirect_url_of
from tests.conftest import AppFactory, client_for
from tests.connectors.commands import Commands
from tests.oauth.authorization_server import Provider, running_provider
from tests.oauth.spiff_backend import USER_TOKEN, SpiffBackend, running_backend
from tests.ports import free_port

pytestmark = pytest.mark.anyio

PROXY = "http://proxy.test"
AUTH = "http/OAuth2"
CALLBACK = f"{PROXY}/v1/auth/{AUTH}/callback"
HTTP = Commands("http")
PROXY_LOGGERS = {"server", "rest_shim", "connectors", "connector_proxy", "access"}


@pytest.fixture
def backend() -> Iterator[SpiffBackend]:
    with running_backend() as backend:
        yield backend


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> Iterator[Provider]:
    with running_provider(CALLBACK) as provider:
        for name, value in {
            "AUTHORIZE_URL": provider.authorize_url,
            "TOKEN_URL": provider.token_url,
            "SCOPES": "openid, accounting offline_access",
            "CLIENT_ID": provider.client.client_id,
            "CLIENT_SECRET": provider.client.client_secret,
        }.items():
            monkeypatch.setenv(f"CONNECTOR_PROXY_HTTP_OAUTH2_{name}", value)
        yield provider


@pytest.fixture
async def app(make_app: AppFactory, backend: SpiffBackend, provider: Provider) -> Any:
    return make_app(auth_flow=AuthFlow((f"{backend.url}/v1.0/authentication_callback/",)))


@pytest.fixture
async def proxy(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as client:
        yield client


@pytest.fixture
async def browser(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """Follows redirects and keeps cookies, like a browser; the proxy is reached in-process."""
    mounts = {f"{PROXY}/": httpx.ASGITransport(app), "all://": httpx.AsyncHTTPTransport()}
    async with httpx.AsyncClient(mounts=mounts, follow_redirects=True, timeout=10) as client:
        yield client


def start_url(backend: SpiffBackend) -> str:
    """The link spiff-arena's Authentications page gives: redirect_url not encoded (spec §7 step 2)."""
    return f"{PROXY}/v1/auth/{AUTH}?redirect_url={backend.redirect_url(AUTH)}"


async def sign_in(browser: httpx.AsyncClient, backend: SpiffBackend) -> dict[str, Any]:
    """Runs the whole sign-in; returns the token set spiff-arena stored."""
    page = await browser.get(start_url(backend))
    assert (page.status_code, str(page.url)) == (200, f"{backend.url}/configuration"), page.text
    token_set: dict[str, Any] = json.loads(backend.secrets[AUTH])
    return token_set


async def test_auths_lists_the_handler_in_spiffs_shape(proxy):
    auths = (await proxy.get("/v1/auths")).json()
    (handler,) = [a for a in auths if a["id"] == AUTH]
    assert handler["parameters"] == []
    assert "OAuth 2.0" in handler["description"]


async def test_sign_in_stores_the_token_set_in_spiff_and_commands_use_it(browser, proxy, backend, provider):
    token_set = await sign_in(browser, backend)

    assert backend.callbacks[0]["token"] == USER_TOKEN  # spiff-arena's own query survived the round
    assert token_set["token_type"].lower() == "bearer"
    assert token_set["refresh_token"]
    assert token_set["expires_at"] == pytest.approx(time.time() + 3600, abs=30)
    # PKCE: the provider saw an S256 challenge, then the verifier, and the same callback URI both times.
    (authorize,) = provider.authorize_requests
    assert authorize["code_challenge_method"] == "S256"
    assert authorize["scope"] == "openid accounting offline_access"
    assert authorize["redirect_uri"] == CALLBACK
    (exchange,) = provider.token_requests
    assert exchange["grant_type"] == "authorization_code"
    assert exchange["redirect_uri"] == CALLBACK
    assert len(exchange["code_verifier"]) >= 43

    body = await HTTP.ok(
        proxy, "GetRequestV2", url=f"{provider.url}/api/me", oauth2_token_set=backend.secrets[AUTH]
    )
    assert body == {"user": "ada", "scope": "openid accounting offline_access"}


async def test_an_encoded_redirect_url_works_too(browser, backend):
    encoded = httpx.QueryParams({"redirect_url": backend.redirect_url(AUTH)})
    page = await browser.get(f"{PROXY}/v1/auth/{AUTH}?{encoded}")
    assert str(page.url) == f"{backend.url}/configuration"
    assert AUTH in backend.secrets


async def test_a_callback_in_another_browser_is_refused(proxy, backend, provider):
    """The state alone is not enough: the flow's cookie, in the browser that started it, is needed."""
    to_provider = await proxy.get(start_url(backend))
    assert to_provider.status_code == 302
    async with httpx.AsyncClient() as outside:
        back = await outside.get(to_provider.headers["location"])  # the provider sends the code back
    callback = back.headers["location"]
    assert callback.startswith(CALLBACK)
    async with client_for(proxy._transport.app) as other_browser:  # no cookie
        page = await other_browser.get(callback)
    assert page.status_code == 400
    assert page.headers["content-type"].startswith("text/html")
    assert "did not start the sign-in" in page.text
    assert provider.grants("authorization_code") == 0  # the code was never spent


async def test_a_forged_state_is_refused(browser, proxy, backend, provider):
    to_provider = await proxy.get(start_url(backend))  # the client keeps the flow's cookie
    async with httpx.AsyncClient() as outside:
        back = await outside.get(to_provider.headers["location"])
    query = parse_qs(urlsplit(back.headers["location"]).query)
    forged = query["state"][0][:-2] + ("AA" if not query["state"][0].endswith("AA") else "BB")
    page = await proxy.get(f"/v1/auth/{AUTH}/callback", params={"code": query["code"][0], "state": forged})
    assert page.status_code == 400
    assert "not one this proxy issued" in page.text
    assert provider.grants("authorization_code") == 0


@pytest.mark.parametrize(
    "redirect",
    [
        "https://evil.example/v1.0/authentication_callback/http/OAuth2?token=t",
        "{backend}/elsewhere?token=t",
        "{backend}/v1.0/authentication_callback/../../admin?token=t",
        "{backend}/v1.0/authentication_callback/%2e%2e/admin",
        "javascript:alert(1)",
    ],
)
async def test_redirects_go_only_to_allowed_spiff_urls(proxy, backend, provider, redirect):
    page = await proxy.get(f"/v1/auth/{AUTH}?redirect_url={redirect.format(backend=backend.url)}")
    assert page.status_code == 400
    assert "location" not in page.headers
    assert "Redirect not allowed" in page.text
    assert "token=t" not in page.text
    assert provider.authorize_requests == []


async def test_readable_pages_for_what_cannot_go_on(proxy, backend, provider, monkeypatch):
    page = await proxy.get(f"/v1/auth/{AUTH}")
    assert (page.status_code, "No redirect_url" in page.text) == (400, True)
    page = await proxy.get(f"/v1/auth/http/Nope?redirect_url={backend.redirect_url('http/Nope')}")
    assert (page.status_code, "Auth not found" in page.text) == (404, True)
    page = await proxy.get(
        f"/v1/auth/{AUTH}/callback", params={"error": "access_denied", "error_description": "<b>no</b>"}
    )
    assert page.status_code == 400
    assert "access_denied" in page.text
    assert "&lt;b&gt;no&lt;/b&gt;" in page.text  # escaped
    monkeypatch.delenv("CONNECTOR_PROXY_HTTP_OAUTH2_CLIENT_ID")
    page = await proxy.get(start_url(backend))
    assert page.status_code == 503
    assert "CONNECTOR_PROXY_HTTP_OAUTH2_CLIENT_ID" in page.text
    for answer in (page,):
        assert answer.headers["cache-control"] == "no-store"


async def test_an_expired_token_set_is_refreshed_and_handed_back_for_spiff_to_store(
    browser, proxy, backend, provider
):
    provider.expires_in["authorization_code"] = 1
    old = await sign_in(browser, backend)
    await asyncio.sleep(1.2)  # the access token has expired at the provider too

    response = await proxy.post(
        "/v1/do/http/GetRequestV2",
        json={"url": f"{provider.url}/api/me", "oauth2_token_set": json.dumps(old)},
    )
    payload = response.json()
    assert response.status_code == 200, payload
    assert provider.grants("refresh_token") == 1
    new = payload["refreshed_token_set"]
    assert new["access_token"] != old["access_token"]
    assert new["refresh_token"] != old["refresh_token"]  # this provider rotates them
    assert new["expires_at"] == pytest.approx(time.time() + 3600, abs=30)
    # The backend's step 7 (spec §3.2): stores refreshed_token_set as secret "auth", and the task's
    # result is api_response, here the same as a plain v2 answer's. spiff__logs would hide all that.
    assert payload["auth"] == AUTH
    assert payload["api_response"] == {
        **payload["command_response"],
        "operator_identifier": "http/GetRequestV2",
    }
    assert payload["api_response"]["body"]["user"] == "ada"
    assert "spiff__logs" not in payload

    # spiff-arena did not store it (or a second task ran with the old set): the new one is used, and the
    # rotated-away refresh token is not spent again.
    response = await proxy.post(
        "/v1/do/http/GetRequestV2",
        json={"url": f"{provider.url}/api/me", "oauth2_token_set": json.dumps(old)},
    )
    again = response.json()
    assert response.status_code == 200, again
    assert again["refreshed_token_set"] == new
    assert provider.grants("refresh_token") == 1

    # The new set, stored, is used as it is.
    response = await proxy.post(
        "/v1/do/http/GetRequestV2",
        json={"url": f"{provider.url}/api/me", "oauth2_token_set": json.dumps(new)},
    )
    assert response.status_code == 200
    assert "refreshed_token_set" not in response.json()
    assert response.json()["spiff__logs"][0].startswith("GET ")  # the lines come back where they were


async def test_concurrent_calls_with_one_expired_set_refresh_it_once(browser, proxy, backend, provider):
    provider.expires_in["authorization_code"] = 1
    old = json.dumps(await sign_in(browser, backend))
    await asyncio.sleep(1.2)
    answers = await asyncio.gather(
        *(
            proxy.post(
                "/v1/do/http/GetRequestV2", json={"url": f"{provider.url}/api/me", "oauth2_token_set": old}
            )
            for _ in range(6)
        )
    )
    assert [a.status_code for a in answers] == [200] * 6
    assert provider.grants("refresh_token") == 1
    assert len({json.dumps(a.json()["refreshed_token_set"]) for a in answers}) == 1


async def test_a_refused_refresh_asks_for_a_new_sign_in(browser, proxy, backend, provider):
    provider.expires_in["authorization_code"] = 1
    token_set = await sign_in(browser, backend)
    for token in provider.tokens:
        token.revoked = True  # e.g. the user disconnected the app at the provider
    await asyncio.sleep(1.2)
    payload = await HTTP.fails(
        proxy,
        "GetRequestV2",
        401,
        "OAuthRefreshFailed",
        url=f"{provider.url}/api/me",
        oauth2_token_set=json.dumps(token_set),
    )
    assert "invalid_grant" in payload["error"]["message"]
    assert "Authentications page" in payload["error"]["message"]
    assert "refreshed_token_set" not in payload


async def test_token_set_problems_have_their_own_codes(proxy, provider, monkeypatch):
    url = f"{provider.url}/api/me"
    payload = await HTTP.fails(
        proxy, "GetRequestV2", 400, "InvalidParameters", url=url, oauth2_token_set="secret:http/OAuth2"
    )
    assert "oauth2_token_set is not a token set of http/OAuth2" in payload["error"]["message"]
    expired = json.dumps({"access_token": "a-token", "token_type": "Bearer", "expires_at": 1})
    await HTTP.fails(proxy, "GetRequestV2", 401, "OAuthTokenExpired", url=url, oauth2_token_set=expired)
    with_refresh = json.dumps({"access_token": "a-token", "refresh_token": "r-token", "expires_at": 1})
    await HTTP.fails(
        proxy,
        "GetRequestV2",
        400,
        "InvalidParameters",
        url=url,
        oauth2_token_set=with_refresh[:-1] + ', "x": }',
    )
    fresh = json.dumps({"access_token": "a-token", "expires_at": time.time() + 3600})
    payload = await HTTP.fails(
        proxy,
        "GetRequestV2",
        400,
        "InvalidParameters",
        url=url,
        oauth2_token_set=fresh,
        basic_auth_password="pw",
    )
    assert "cannot be combined" in payload["error"]["message"]
    monkeypatch.setenv("CONNECTOR_PROXY_HTTP_OAUTH2_TOKEN_URL", f"http://127.0.0.1:{free_port()}/token")
    await HTTP.fails(
        proxy, "GetRequestV2", 503, "OAuthProviderUnavailable", url=url, oauth2_token_set=with_refresh
    )
    monkeypatch.delenv("CONNECTOR_PROXY_HTTP_OAUTH2_CLIENT_ID")
    await HTTP.fails(proxy, "GetRequestV2", 400, "OAuthNotConfigured", url=url, oauth2_token_set=with_refresh)


async def test_no_token_code_or_spiff_user_token_reaches_a_log(browser, proxy, backend, provider, caplog):
    caplog.set_level(logging.DEBUG)
    provider.expires_in["authorization_code"] = 1
    token_set = await sign_in(browser, backend)
    await asyncio.sleep(1.2)
    response = await proxy.post(
        "/v1/do/http/GetRequestV2",
        json={"url": f"{provider.url}/api/me", "oauth2_token_set": json.dumps(token_set)},
    )
    new = response.json()["refreshed_token_set"]
    # The proxy's own loggers; the provider, spiff-arena and the browser here log what they like.
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.split(".")[0] in PROXY_LOGGERS)
    assert "OAuth flow of http/OAuth2 completed" in logged
    assert "refreshed the token set of http/OAuth2" in logged
    assert "http/GetRequestV2: GET " in logged  # the refreshed answer's spiff__logs lines, kept
    for value in (
        token_set["access_token"],
        token_set["refresh_token"],
        new["access_token"],
        new["refresh_token"],
        USER_TOKEN,
        provider.client.client_secret,
    ):
        assert value not in logged


def test_redirect_url_is_read_encoded_or_not():
    raw = "http://spiff:7000/v1.0/authentication_callback/http/OAuth2?token=a.b-c_d"
    assert redirect_url_of(f"redirect_url={raw}") == raw
    assert redirect_url_of(f"x=1&redirect_url={raw}&more=2") == f"{raw}&more=2"
    assert redirect_url_of(str(httpx.QueryParams({"redirect_url": raw}))) == raw
    assert redirect_url_of("x_redirect_url=http://a") == ""
    assert redirect_url_of("") == ""


def test_allowed_redirects_match_origin_and_path():
    allowed = ["https://spiff.example/api/v1.0/authentication_callback/"]
    ok = "https://spiff.example/api/v1.0/authentication_callback/http/OAuth2?token=x"
    assert allowed_redirect(ok, allowed)
    assert allowed_redirect(ok.replace("spiff.example", "spiff.example:443"), allowed)
    for bad in (
        ok.replace("https:", "http:"),
        ok.replace("spiff.example", "spiff.example:8443"),
        ok.replace("spiff.example", "spiff.example.evil"),
        ok.replace("https://", "https://user@"),
        "https://spiff.example/api/v1.0/other",
        ok + "#frag",
        ok.replace("/http/", "/../"),
        "https://spiff.example\\@evil/api/v1.0/authentication_callback/",
        f"https://spiff.example:{free_port()}x/api/v1.0/authentication_callback/",
    ):
        assert not allowed_redirect(bad, allowed), bad


async def test_an_old_set_whose_remembered_successor_expired_too_follows_the_chain(
    browser, proxy, backend, provider
):
    """With short-lived tokens, the set remembered for an old one may itself have expired: it is
    refreshed with its own refresh token, never with the old one the provider rotated away."""
    provider.expires_in.update(authorization_code=1, refresh_token=1)
    old = json.dumps(await sign_in(browser, backend))
    call = {"url": f"{provider.url}/api/me", "oauth2_token_set": old}
    await asyncio.sleep(1.2)
    first = await proxy.post("/v1/do/http/GetRequestV2", json=call)
    await asyncio.sleep(1.2)
    second = await proxy.post("/v1/do/http/GetRequestV2", json=call)
    assert (first.status_code, second.status_code) == (200, 200), second.text
    assert provider.grants("refresh_token") == 2
    assert second.json()["refreshed_token_set"] != first.json()["refreshed_token_set"]


async def test_a_token_the_upstream_refuses_is_refreshed_and_sent_once_more(
    browser, proxy, backend, provider, caplog
):
    """A provider may end a token before its expires_at, or give none: a 401 brings one refresh
    and one more try, and the new set is handed back."""
    caplog.set_level(logging.INFO)
    provider.expires_in["authorization_code"] = 1
    token_set = await sign_in(browser, backend)
    del token_set["expires_at"]  # the proxy cannot tell it has expired
    await asyncio.sleep(1.2)
    response = await proxy.post(
        "/v1/do/http/GetRequestV2",
        json={"url": f"{provider.url}/api/me", "oauth2_token_set": json.dumps(token_set)},
    )
    payload = response.json()
    assert response.status_code == 200, payload
    assert payload["api_response"]["body"]["user"] == "ada"
    assert payload["refreshed_token_set"]["access_token"] != token_set["access_token"]
    assert provider.grants("refresh_token") == 1
    assert "-> 401: the OAuth token set was refreshed; sending again" in caplog.text


async def test_a_refusal_brings_one_refresh_at_most(browser, proxy, backend, provider):
    token_set = await sign_in(browser, backend)
    always_401 = f"{backend.url}/v1.0/authentication_callback/http/OAuth2"  # refuses a call without its token
    payload = await HTTP.fails(
        proxy, "GetRequestV2", 401, "HttpError401", url=always_401, oauth2_token_set=json.dumps(token_set)
    )
    assert provider.grants("refresh_token") == 1  # refreshed once, sent twice, then the 401 stands
    assert sum("GET " in line and "/authentication_callback/" in line for line in payload["spiff__logs"]) == 2
    without_refresh = json.dumps({"access_token": "a-token", "token_type": "Bearer"})
    await HTTP.fails(
        proxy, "GetRequestV2", 401, "HttpError401", url=always_401, oauth2_token_set=without_refresh
    )
    assert provider.grants("refresh_token") == 1
