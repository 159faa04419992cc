"""Declaring OAuth 2.0 auth handlers and token-set fields: mistakes that could never work stop
start-up; a good declaration resolves its provider from the settings it names."""

from __future__ import annotations

import types

import pytest

from server._registry import load_connector
from server.errors import FailedPrecondition
from server.oauth import handlers_of
from server.settings import Settings
from tests.protos_util import compile_proto, connector_module
from tests.server.test_registry import servicer_for

PROTO = """
syntax = "proto3";

package spiff.connector.oauthtest.v1;

import "spiff/connector/v1/options.proto";

service GoodService {
  option (spiff.connector.v1.connector) = {
    auths: {
      name: "OAuth"
      oauth2: {
        authorize_url: "https://login.example/authorize"
        token_url_setting: "OAUTHTEST_TOKEN_URL"
        scopes: ["a", "b"]
        client_id_setting: "OAUTHTEST_CLIENT_ID"
        client_secret_setting: "OAUTHTEST_CLIENT_SECRET"
        authorize_params: {key: "access_type" value: "offline"}
      }
    }
  };
  rpc Go(TokenRequest) returns (Done);
}
service NoClientIdService {
  option (spiff.connector.v1.connector) = {
    auths: {name: "OAuth" oauth2: {
      authorize_url: "https://a/"
      token_url: "https://t/"
    }}
  };
  rpc Go(Plain) returns (Done);
}
service NoTokenUrlService {
  option (spiff.connector.v1.connector) = {
    auths: {name: "OAuth" oauth2: {
      authorize_url: "https://a/"
      client_id_setting: "X"
    }}
  };
  rpc Go(Plain) returns (Done);
}
service FtpUrlService {
  option (spiff.connector.v1.connector) = {
    auths: {name: "OAuth" oauth2: {
      authorize_url: "ftp://a/"
      token_url: "https://t/"
      client_id_setting: "X"
    }}
  };
  rpc Go(Plain) returns (Done);
}
service BadMethodService {
  option (spiff.connector.v1.connector) = {
    auths: {name: "OAuth" oauth2: {
      authorize_url: "https://a/"
      token_url: "https://t/"
      client_id_setting: "X"
      token_endpoint_auth_method: "private_key_jwt"
    }}
  };
  rpc Go(Plain) returns (Done);
}
service UnknownHandlerService { rpc Go(TokenRequest) returns (Done); }
service NotSecretService {
  option (spiff.connector.v1.connector) = {
    auths: {name: "OAuth" oauth2: {
      authorize_url: "https://a/"
      token_url: "https://t/"
      client_id_setting: "X"
    }}
  };
  rpc Go(NotSecretRequest) returns (Done);
}
service TwoTokensService {
  option (spiff.connector.v1.connector) = {
    auths: {name: "OAuth" oauth2: {
      authorize_url: "https://a/"
      token_url: "https://t/"
      client_id_setting: "X"
    }}
  };
  rpc Go(TwoTokensRequest) returns (Done);
}

message Plain {}
message Done {}
message TokenRequest {
  string token_set = 1 [(spiff.connector.v1.field) = {secret: true auth: "OAuth"}];
}
message NotSecretRequest {
  string token_set = 1 [(spiff.connector.v1.field) = {auth: "OAuth"}];
}
message TwoTokensRequest {
  string one = 1 [(spiff.connector.v1.field) = {secret: true auth: "OAuth"}];
  string two = 2 [(spiff.connector.v1.field) = {secret: true auth: "OAuth"}];
}
"""

MISTAKES = {
    "NoClientId": "client_id_setting is required",
    "NoTokenUrl": "token_url or token_url_setting is required",
    "FtpUrl": "authorize_url must be an http",
    "BadMethod": "token_endpoint_auth_method must be one of",
    "UnknownHandler": "does not declare with oauth2",
    "NotSecret": "must be a string field declared secret",
    "TwoTokens": "2 token-set fields",
}


@pytest.fixture(scope="module")
def protos(tmp_path_factory: pytest.TempPathFactory) -> tuple[types.ModuleType, types.ModuleType]:
    return compile_proto(tmp_path_factory.mktemp("protos"), "oauth_declarations_test", PROTO)


@pytest.mark.parametrize(("service", "problem"), MISTAKES.items(), ids=list(MISTAKES))
def test_declarations_that_could_never_work_stop_start_up(protos, service, problem):
    _, pb2_grpc = protos
    with pytest.raises(ValueError, match=problem):
        load_connector(connector_module(f"tests.oauth_{service.lower()}", servicer_for(pb2_grpc, service)))


def test_a_good_declaration_reads_its_settings_when_used(protos):
    _, pb2_grpc = protos
    connector = load_connector(connector_module("tests.oauth_good", servicer_for(pb2_grpc, "Good")))
    (token_field,) = connector.commands[0].tokens
    assert (token_field.name, token_field.handler.id) == ("token_set", "oauthtest/OAuth")
    (handler,) = handlers_of(connector.service)
    with pytest.raises(FailedPrecondition, match="OAUTHTEST_TOKEN_URL") as missing:
        handler.provider({"OAUTHTEST_CLIENT_ID": "id"})
    assert missing.value.error_code == "OAuthNotConfigured"
    provider = handler.provider(
        {
            "OAUTHTEST_TOKEN_URL": "https://t.example/token",
            "OAUTHTEST_CLIENT_ID": "id",
            "OAUTHTEST_CLIENT_SECRET": "the-client-secret",
        }
    )
    assert provider.authorize_url == "https://login.example/authorize"
    assert provider.token_url == "https://t.example/token"
    assert provider.scopes == ("a", "b")
    assert dict(provider.authorize_params) == {"access_type": "offline"}
    assert provider.auth_method == "client_secret_basic"
    assert provider.client_secret == "the-client-secret"
    assert "the-client-secret" not in repr(provider)


def test_the_flows_settings():
    settings = Settings.from_env(
        {
            "CONNECTOR_PROXY_OAUTH_REDIRECT_URLS": (
                "https://spiff.example/api/v1.0/authentication_callback/, "
                "http://localhost:7000/v1.0/authentication_callback/"
            ),
            "CONNECTOR_PROXY_OAUTH_STATE_SECRET": "k" * 32,
            "CONNECTOR_PROXY_PUBLIC_URL": "https://proxy.example/standard/",
        }
    )
    assert settings.oauth_redirect_urls == (
        "https://spiff.example/api/v1.0/authentication_callback/",
        "http://localhost:7000/v1.0/authentication_callback/",
    )
    assert settings.public_url == "https://proxy.example/standard"
    assert "k" * 32 not in repr(settings)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CONNECTOR_PROXY_OAUTH_REDIRECT_URLS", "spiff.example/callback"),
        ("CONNECTOR_PROXY_OAUTH_REDIRECT_URLS", "https://spiff.example/cb?token=x"),
        ("CONNECTOR_PROXY_PUBLIC_URL", "proxy.example"),
        ("CONNECTOR_PROXY_PUBLIC_URL", "https://proxy.example/?a=b"),
        ("CONNECTOR_PROXY_OAUTH_STATE_SECRET", " "),
    ],
)
def test_malformed_flow_settings_stop_start_up(name, value):
    with pytest.raises(ValueError, match=name):
        Settings.from_env({name: value})
