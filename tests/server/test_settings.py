"""``Settings.from_env``: defaults, overrides, and configuration mistakes that stop start-up."""

from __future__ import annotations

import dataclasses

import pytest

from server.settings import Settings
from server.upstreams import UpstreamConfig


def test_defaults():
    settings = Settings.from_env({})
    assert settings == Settings()
    assert (settings.host, settings.port, settings.grpc_port) == ("127.0.0.1", 7004, 50051)
    assert settings.api_key is None
    assert settings.command_timeout == 40.0
    assert settings.max_body_bytes == 32 * 1024 * 1024
    assert settings.path_prefix == ""
    assert settings.connector_packages == ("connectors",)
    assert settings.upstreams == ()
    assert settings.discovery_interval == 60.0
    assert settings.shutdown_grace == 30.0
    assert settings.log_level == "INFO"


def test_empty_values_mean_the_default():
    env = {
        "CONNECTOR_PROXY_PORT": "",
        "CONNECTOR_PROXY_COMMAND_TIMEOUT": "",
        "CONNECTOR_PROXY_CONNECTORS": " , ",
    }
    assert Settings.from_env(env) == Settings()


def test_overrides():
    settings = Settings.from_env(
        {
            "CONNECTOR_PROXY_HOST": "0.0.0.0",
            "CONNECTOR_PROXY_PORT": "8000",
            "CONNECTOR_PROXY_GRPC_PORT": "0",
            "CONNECTOR_PROXY_API_KEY": "k",
            "CONNECTOR_PROXY_COMMAND_TIMEOUT": "12.5",
            "CONNECTOR_PROXY_MAX_BODY_BYTES": "1000",
            "CONNECTOR_PROXY_PATH_PREFIX": "standard/",
            "CONNECTOR_PROXY_CONNECTORS": "connectors, more_connectors",
            "CONNECTOR_PROXY_GRPC_TARGETS": "a:1,b:2",
            "CONNECTOR_PROXY_SHUTDOWN_GRACE": "0",
            "CONNECTOR_PROXY_LOG_LEVEL": "debug",
            "UNRELATED": "x",
        }
    )
    assert settings == Settings(
        host="0.0.0.0",
        port=8000,
        grpc_port=0,
        api_key="k",
        command_timeout=12.5,
        max_body_bytes=1000,
        path_prefix="/standard",
        connector_packages=("connectors", "more_connectors"),
        upstreams=(UpstreamConfig("a_1", "a:1"), UpstreamConfig("b_2", "b:2")),
        shutdown_grace=0.0,
        log_level="DEBUG",
    )


def test_reads_os_environ_by_default(monkeypatch):
    monkeypatch.setenv("CONNECTOR_PROXY_PORT", "7777")
    assert Settings.from_env().port == 7777


def test_settings_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CONNECTOR_PROXY_PORT", "abc"),
        ("CONNECTOR_PROXY_PORT", "70.5"),
        ("CONNECTOR_PROXY_PORT", "-1"),
        ("CONNECTOR_PROXY_PORT", "65536"),
        ("CONNECTOR_PROXY_GRPC_PORT", "fifty"),
        ("CONNECTOR_PROXY_GRPC_PORT", "100000"),
        ("CONNECTOR_PROXY_MAX_BODY_BYTES", "32MB"),
        ("CONNECTOR_PROXY_MAX_BODY_BYTES", "0"),
        ("CONNECTOR_PROXY_MAX_BODY_BYTES", "-5"),
        ("CONNECTOR_PROXY_MAX_BODY_BYTES", str(2**31)),
        ("CONNECTOR_PROXY_SHUTDOWN_GRACE", "soon"),
        ("CONNECTOR_PROXY_SHUTDOWN_GRACE", "-1"),
        ("CONNECTOR_PROXY_SHUTDOWN_GRACE", "nan"),
        ("CONNECTOR_PROXY_SHUTDOWN_GRACE", "inf"),
        ("CONNECTOR_PROXY_COMMAND_TIMEOUT", "forty"),
    ],
)
def test_bad_numbers_raise(name, value):
    with pytest.raises(ValueError, match=name):
        Settings.from_env({name: value})


@pytest.mark.parametrize("value", ["45", "60", "0", "-1", "nan", "inf"])
def test_command_timeout_must_stay_below_spiffs_45_seconds(value):
    with pytest.raises(ValueError, match="CONNECTOR_PROXY_COMMAND_TIMEOUT"):
        Settings.from_env({"CONNECTOR_PROXY_COMMAND_TIMEOUT": value})


@pytest.mark.parametrize("value", ["0.5", "44.9"])
def test_command_timeout_just_inside_the_budget(value):
    assert Settings.from_env({"CONNECTOR_PROXY_COMMAND_TIMEOUT": value}).command_timeout == float(value)


@pytest.mark.parametrize(
    ("raw", "prefix"), [("", ""), ("/", ""), ("/standard", "/standard"), ("a/b/", "/a/b")]
)
def test_path_prefix_is_normalised(raw, prefix):
    assert Settings.from_env({"CONNECTOR_PROXY_PATH_PREFIX": raw}).path_prefix == prefix
