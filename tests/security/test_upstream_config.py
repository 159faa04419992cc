"""``CONNECTOR_PROXY_GRPC_TARGETS`` and the ``CONNECTOR_PROXY_UPSTREAM_*`` settings
(``server.upstreams.parse_upstreams``), and the gRPC port's TLS settings (``Settings.from_env``).

Configuration mistakes stop start-up with a message naming the variable; secrets (metadata, API
keys) never appear in a ``repr`` or an error message, so they cannot reach a log.
"""

from __future__ import annotations

import dataclasses
import re

import pytest

from server.settings import Settings
from server.upstreams import UpstreamConfig, parse_upstreams
from server.wire import API_KEY_METADATA

TARGETS = "CONNECTOR_PROXY_GRPC_TARGETS"
ALL = "CONNECTOR_PROXY_UPSTREAM_"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def parse(targets: str, **env: str) -> tuple[UpstreamConfig, ...]:
    return parse_upstreams({TARGETS: targets, **env})


def only(targets: str, **env: str) -> UpstreamConfig:
    [config] = parse(targets, **env)
    return config


# -- targets, schemes and names ----------------------------------------------------------------


@pytest.mark.parametrize("raw", [None, "", " ", " , ,"])
def test_no_targets_means_no_upstreams(raw):
    env = {} if raw is None else {TARGETS: raw}
    assert parse_upstreams(env) == ()
    assert Settings.from_env(env).upstreams == ()


@pytest.mark.parametrize(
    ("raw", "tls"),
    [("h:1", False), ("grpc://h:1", False), ("grpcs://h:1", True), (" grpcs://h:1 ", True)],
)
def test_a_scheme_says_whether_the_target_is_tls(raw, tls):
    assert only(raw) == UpstreamConfig(name="h_1", target="h:1", tls=tls)
    assert only(raw).address == ("grpcs://h:1" if tls else "grpc://h:1")


def test_a_named_target():
    assert only("node=grpcs://h:1") == UpstreamConfig(name="node", target="h:1", tls=True)
    assert only(" node = h:1 ") == UpstreamConfig(name="node", target="h:1")


def test_several_targets_keep_their_order():
    configs = parse("b=grpcs://x.example:443, ,127.0.0.1:50051,a=y:2")
    assert [(c.name, c.target, c.tls) for c in configs] == [
        ("b", "x.example:443", True),
        ("127.0.0.1_50051", "127.0.0.1:50051", False),
        ("a", "y:2", False),
    ]


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("h:1", "h_1"),
        ("127.0.0.1:50051", "127.0.0.1_50051"),
        ("grpcs://connectors.svc.cluster.local:443", "connectors.svc.cluster.local_443"),
        ("my-host:8080", "my-host_8080"),
    ],
)
def test_an_unnamed_target_is_named_after_its_address(raw, name):
    assert only(raw).name == name


@pytest.mark.parametrize("raw", ["[::1]:50051", "grpcs://[2001:db8::7]:443", "a" * 70 + ".example:50051"])
def test_every_target_grpc_accepts_gets_a_usable_default_name(raw):
    """A target nobody named must not be refused for its name."""
    config = only(raw)
    assert NAME.match(config.name), config.name
    assert config.target == raw.removeprefix("grpcs://")


@pytest.mark.parametrize(
    "raw",
    [
        "a=h:1,a=k:2",
        "h:1,grpcs://h:1",  # the same default name
        "node-a=h:1,node_a=k:2",  # one set of CONNECTOR_PROXY_UPSTREAM_NODE_A_* variables
        "Node=h:1,node=k:2",
    ],
)
def test_two_targets_with_one_name_are_refused(raw):
    with pytest.raises(ValueError, match="two targets are named") as caught:
        parse(raw)
    assert "name them apart" in str(caught.value)
    with pytest.raises(ValueError, match="two targets are named"):
        Settings.from_env({TARGETS: raw})


@pytest.mark.parametrize(
    "raw",
    [
        "http://h:1",
        "https://h:1",
        "unix:///tmp/connectors.sock",
        "dns:///h:1",
        "grpc://h:1/spiff",
        "h:1/",
        "grpcs://",
        "node=",
        "grpc://",
    ],
)
def test_a_malformed_target_is_refused_with_a_message(raw):
    with pytest.raises(ValueError, match=TARGETS) as caught:
        parse(raw)
    message = str(caught.value)
    assert repr(raw.strip()) in message
    assert "grpcs://host:port" in message
    with pytest.raises(ValueError, match=TARGETS):
        Settings.from_env({TARGETS: raw})


@pytest.mark.parametrize("name", ["my node", "-node", "_node", "nø", "a/b", "x" * 64, "metadata", "METADATA"])
def test_a_name_that_cannot_name_variables_is_refused(name):
    with pytest.raises(ValueError, match="the name") as caught:
        parse(f"{name}=h:1")
    assert repr(name) in str(caught.value)


def test_a_name_may_hold_dots_dashes_and_underscores():
    assert only("eu-west_1.node=h:1").name == "eu-west_1.node"


# -- per-target and all-target settings --------------------------------------------------------


@pytest.mark.parametrize(("value", "tls"), [("true", True), ("1", True), ("YES", True), ("on", True)])
def test_the_tls_flag_turns_a_plain_target_to_tls(value, tls):
    assert only("node=h:1", CONNECTOR_PROXY_UPSTREAM_NODE_TLS=value).tls is tls
    assert only("node=h:1", CONNECTOR_PROXY_UPSTREAM_TLS=value).tls is tls


def test_a_target_may_opt_out_of_the_all_target_tls_flag():
    configs = parse(
        "a=h:1,b=k:2", CONNECTOR_PROXY_UPSTREAM_TLS="true", CONNECTOR_PROXY_UPSTREAM_B_TLS="false"
    )
    assert [c.tls for c in configs] == [True, False]


def test_grpcs_stays_tls_whatever_the_flag_says():
    assert only("node=grpcs://h:1", CONNECTOR_PROXY_UPSTREAM_NODE_TLS="false").tls is True


@pytest.mark.parametrize("variable", ["CONNECTOR_PROXY_UPSTREAM_NODE_TLS", "CONNECTOR_PROXY_UPSTREAM_TLS"])
def test_a_tls_flag_that_is_not_a_boolean_is_refused(variable):
    with pytest.raises(ValueError, match="CONNECTOR_PROXY_UPSTREAM_NODE_TLS must be true or false"):
        parse("node=h:1", **{variable: "maybe"})


def test_all_target_settings_apply_to_every_target():
    env = {
        f"{ALL}CA_FILE": "/etc/ca.pem",
        f"{ALL}CERT_FILE": "/etc/client.pem",
        f"{ALL}KEY_FILE": "/etc/client.key",
        f"{ALL}SERVER_NAME": "connectors.internal",
    }
    configs = parse("a=grpcs://h:1,b=grpcs://k:2", **env)
    for config in configs:
        assert (config.ca_file, config.cert_file, config.key_file, config.server_name) == (
            "/etc/ca.pem",
            "/etc/client.pem",
            "/etc/client.key",
            "connectors.internal",
        )


def test_a_targets_own_settings_override_the_all_target_ones():
    env = {
        f"{ALL}CA_FILE": "/etc/ca.pem",
        f"{ALL}CERT_FILE": "/etc/client.pem",
        f"{ALL}KEY_FILE": "/etc/client.key",
        f"{ALL}SERVER_NAME": "connectors.internal",
        f"{ALL}API_KEY": "shared-key",
        f"{ALL}NODE_CA_FILE": "/node/ca.pem",
        f"{ALL}NODE_CERT_FILE": "/node/client.pem",
        f"{ALL}NODE_KEY_FILE": "/node/client.key",
        f"{ALL}NODE_SERVER_NAME": "node.internal",
        f"{ALL}NODE_API_KEY": "node-key",
        f"{ALL}OTHER_CA_FILE": "  ",  # blank: the all-target value still applies
    }
    node, other = parse("node=grpcs://h:1,other=grpcs://k:2", **env)
    assert node == UpstreamConfig(
        name="node",
        target="h:1",
        tls=True,
        ca_file="/node/ca.pem",
        cert_file="/node/client.pem",
        key_file="/node/client.key",
        server_name="node.internal",
        metadata=((API_KEY_METADATA, "node-key"),),
    )
    assert other == UpstreamConfig(
        name="other",
        target="k:2",
        tls=True,
        ca_file="/etc/ca.pem",
        cert_file="/etc/client.pem",
        key_file="/etc/client.key",
        server_name="connectors.internal",
        metadata=((API_KEY_METADATA, "shared-key"),),
    )


def test_a_names_variables_are_its_name_upper_cased_with_underscores():
    config = only("eu-west.node=grpcs://h:1", CONNECTOR_PROXY_UPSTREAM_EU_WEST_NODE_CA_FILE="/eu/ca.pem")
    assert config.ca_file == "/eu/ca.pem"


def test_metadata_keys_are_lower_case_and_dashed():
    env = {
        f"{ALL}METADATA_AUTHORIZATION": "Bearer shared",
        f"{ALL}METADATA_X_TENANT": "acme",
        f"{ALL}NODE_METADATA_AUTHORIZATION": " Bearer node ",
        f"{ALL}NODE_METADATA_X_REQUEST_SOURCE": "spiff",
        f"{ALL}NODE_METADATA_EMPTY": "",  # unset
    }
    node, other = parse("node=h:1,other=k:2", **env)
    assert node.metadata == (
        ("authorization", "Bearer node"),
        ("x-request-source", "spiff"),
        ("x-tenant", "acme"),
    )
    assert other.metadata == (("authorization", "Bearer shared"), ("x-tenant", "acme"))


def test_the_api_key_becomes_the_proxy_api_key_metadata():
    config = only("node=h:1", CONNECTOR_PROXY_UPSTREAM_NODE_API_KEY=" k ")
    assert config.metadata == ((API_KEY_METADATA, "k"),)
    assert API_KEY_METADATA == "spiff-connector-proxy-api-key"


def test_the_api_key_is_sent_once_even_when_also_set_as_metadata():
    config = only(
        "node=h:1",
        CONNECTOR_PROXY_UPSTREAM_NODE_API_KEY="from-api-key",
        CONNECTOR_PROXY_UPSTREAM_NODE_METADATA_SPIFF_CONNECTOR_PROXY_API_KEY="from-metadata",
    )
    assert config.metadata == ((API_KEY_METADATA, "from-api-key"),)


@pytest.mark.parametrize(
    "variable",
    [
        "CONNECTOR_PROXY_UPSTREAM_METADATA_GRPC_TIMEOUT",
        "CONNECTOR_PROXY_UPSTREAM_NODE_METADATA_GRPC_STATUS",
        "CONNECTOR_PROXY_UPSTREAM_NODE_METADATA_TRACE_BIN",
        "CONNECTOR_PROXY_UPSTREAM_NODE_METADATA_",
        "CONNECTOR_PROXY_UPSTREAM_NODE_METADATA_X:Y",
        "CONNECTOR_PROXY_UPSTREAM_METADATA__X",
    ],
)
def test_metadata_that_grpc_cannot_send_is_refused_without_echoing_the_value(variable):
    with pytest.raises(ValueError, match="cannot be sent as gRPC metadata") as caught:
        parse("node=h:1", **{variable: "s3cret-value"})
    assert variable in str(caught.value)
    assert "s3cret-value" not in str(caught.value)


@pytest.mark.parametrize(("present", "missing"), [("CERT_FILE", "KEY_FILE"), ("KEY_FILE", "CERT_FILE")])
@pytest.mark.parametrize("prefix", [f"{ALL}NODE_", ALL])
def test_a_client_certificate_needs_its_key(prefix, present, missing):
    with pytest.raises(ValueError, match="go together") as caught:
        parse("node=grpcs://h:1", **{prefix + present: "/etc/x.pem"})
    assert f"{ALL}NODE_{present}" in str(caught.value)
    assert f"{ALL}NODE_{missing}" in str(caught.value)


@pytest.mark.parametrize(
    "env",
    [
        {f"{ALL}NODE_CA_FILE": "/ca.pem"},
        {f"{ALL}NODE_SERVER_NAME": "node.internal"},
        {f"{ALL}NODE_CERT_FILE": "/c.pem", f"{ALL}NODE_KEY_FILE": "/c.key"},
        {f"{ALL}NODE_TLS": "false", f"{ALL}NODE_CA_FILE": "/ca.pem"},
    ],
)
@pytest.mark.parametrize("target", ["node=h:1", "node=grpc://h:1"])
def test_tls_files_on_a_plaintext_target_are_refused(target, env):
    with pytest.raises(ValueError, match=r"not TLS; write grpcs://h:1"):
        parse(target, **env)


def test_all_target_tls_files_concern_only_the_tls_targets():
    env = {f"{ALL}CA_FILE": "/ca.pem", f"{ALL}CERT_FILE": "/c.pem", f"{ALL}KEY_FILE": "/c.key"}
    plain, tls = parse("plain=h:1,secure=grpcs://k:2", **env)
    assert (plain.tls, plain.ca_file, plain.cert_file, plain.key_file) == (False, None, None, None)
    assert (tls.tls, tls.ca_file, tls.cert_file, tls.key_file) == (True, "/ca.pem", "/c.pem", "/c.key")


def test_an_explicit_grpc_scheme_stays_plaintext_whatever_the_flag_says():
    assert only("node=grpc://h:1", CONNECTOR_PROXY_UPSTREAM_TLS="true").tls is False
    assert only("node=h:1", CONNECTOR_PROXY_UPSTREAM_TLS="true").tls is True


def test_tls_files_with_the_tls_flag_are_accepted():
    config = only(
        "node=h:1", CONNECTOR_PROXY_UPSTREAM_NODE_TLS="true", CONNECTOR_PROXY_UPSTREAM_CA_FILE="/ca"
    )
    assert (config.tls, config.ca_file) == (True, "/ca")


# -- secrets stay out of logs ------------------------------------------------------------------

SECRETS = {
    "CONNECTOR_PROXY_API_KEY": "proxy-s3cret",
    "CONNECTOR_PROXY_UPSTREAM_API_KEY": "shared-s3cret",
    "CONNECTOR_PROXY_UPSTREAM_NODE_API_KEY": "node-s3cret",
    "CONNECTOR_PROXY_UPSTREAM_NODE_METADATA_AUTHORIZATION": "Bearer token-s3cret",
    "CONNECTOR_PROXY_UPSTREAM_METADATA_X_SHARED_TOKEN": "header-s3cret",
}


def test_metadata_never_appears_in_a_repr():
    node, other = parse("node=grpcs://h:1,other=k:2", **SECRETS)
    assert dict(node.metadata)["authorization"] == "Bearer token-s3cret"  # it is there...
    assert dict(other.metadata)[API_KEY_METADATA] == "shared-s3cret"
    for text in (repr(node), repr(other), str(node), repr((node, other))):
        assert "s3cret" not in text  # ...but not shown
        assert "h:1" in text or "k:2" in text


def test_no_secret_appears_in_the_settings_repr():
    settings = Settings.from_env({TARGETS: "node=grpcs://h:1,other=k:2", **SECRETS})
    assert settings.api_key == "proxy-s3cret"
    assert len(settings.upstreams) == 2
    assert "s3cret" not in repr(settings)
    assert "s3cret" not in str(settings)


def test_settings_read_the_targets_with_their_settings():
    env = {
        TARGETS: "node=grpcs://h:1,k:2",
        "CONNECTOR_PROXY_UPSTREAM_NODE_CA_FILE": "/ca.pem",
        "CONNECTOR_PROXY_UPSTREAM_NODE_METADATA_AUTHORIZATION": "Bearer x",
    }
    settings = Settings.from_env(env)
    assert settings.upstreams == parse_upstreams(env)
    assert settings.upstreams[0] == UpstreamConfig(
        name="node", target="h:1", tls=True, ca_file="/ca.pem", metadata=(("authorization", "Bearer x"),)
    )
    assert settings.upstreams[1] == UpstreamConfig(name="k_2", target="k:2")


def test_upstream_config_is_frozen():
    config = only("node=h:1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.tls = True  # type: ignore[misc]


# -- discovery and keepalive -------------------------------------------------------------------


def test_discovery_interval_and_keepalive():
    assert (Settings().discovery_interval, Settings().upstream_keepalive) == (60.0, 300.0)
    settings = Settings.from_env(
        {"CONNECTOR_PROXY_DISCOVERY_INTERVAL": "2.5", "CONNECTOR_PROXY_UPSTREAM_KEEPALIVE": "0"}
    )
    assert (settings.discovery_interval, settings.upstream_keepalive) == (2.5, 0.0)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CONNECTOR_PROXY_DISCOVERY_INTERVAL", "0"),
        ("CONNECTOR_PROXY_DISCOVERY_INTERVAL", "-1"),
        ("CONNECTOR_PROXY_DISCOVERY_INTERVAL", "inf"),
        ("CONNECTOR_PROXY_DISCOVERY_INTERVAL", "nan"),
        ("CONNECTOR_PROXY_DISCOVERY_INTERVAL", "often"),
        ("CONNECTOR_PROXY_UPSTREAM_KEEPALIVE", "-1"),
        ("CONNECTOR_PROXY_UPSTREAM_KEEPALIVE", "nan"),
        ("CONNECTOR_PROXY_UPSTREAM_KEEPALIVE", "5m"),
    ],
)
def test_bad_discovery_and_keepalive_values_are_refused(name, value):
    with pytest.raises(ValueError, match=name):
        Settings.from_env({name: value})


# -- TLS on the proxy's own gRPC port ----------------------------------------------------------

CERT = "CONNECTOR_PROXY_GRPC_TLS_CERT_FILE"
KEY = "CONNECTOR_PROXY_GRPC_TLS_KEY_FILE"
CLIENT_CA = "CONNECTOR_PROXY_GRPC_TLS_CLIENT_CA_FILE"


def _tls(settings: Settings) -> tuple[str | None, str | None, str | None]:
    return settings.grpc_tls_cert_file, settings.grpc_tls_key_file, settings.grpc_tls_client_ca_file


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, (None, None, None)),
        ({CERT: " ", KEY: "", CLIENT_CA: " "}, (None, None, None)),
        ({CERT: "/c.pem", KEY: "/c.key"}, ("/c.pem", "/c.key", None)),
        ({CERT: " /c.pem ", KEY: "/c.key", CLIENT_CA: "/ca.pem"}, ("/c.pem", "/c.key", "/ca.pem")),
    ],
)
def test_grpc_tls_settings(env, expected):
    assert _tls(Settings.from_env(env)) == expected


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({CERT: "/c.pem"}, f"{CERT} and {KEY} go together"),
        ({KEY: "/c.key"}, f"{CERT} and {KEY} go together"),
        ({KEY: "/c.key", CLIENT_CA: "/ca.pem"}, f"{CERT} and {KEY} go together"),
        ({CLIENT_CA: "/ca.pem"}, f"{CLIENT_CA} needs {CERT}"),
    ],
)
def test_grpc_tls_settings_that_do_not_pair_are_refused(env, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Settings.from_env(env)
