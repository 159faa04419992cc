"""The deployment files in deploy/: Docker Compose (deploy/compose) and Kubernetes (deploy/kubernetes).

Nothing is started here (spiff-arena's published images cannot be pulled on a machine without
registry access); the files are checked the way the tools would read them, plus the wiring
between the services:

- Compose: both files against the Compose Specification's JSON Schema (the copy check-jsonschema
  ships and keeps current), then merged and interpolated as Compose does
  with the values of ``.env.example``, in the default and the scale-out mode. The backend must reach
  the proxy with the proxy's own API key, the proxy the Node.js server with that server's key, and
  callbacks must go to the backend; every ``CONNECTOR_PROXY_*`` variable must be a real setting and
  the proxy's environment must load with ``Settings.from_env``.
- Kubernetes: the base and the scale-out overlay rendered by a real kustomize (``kustomize build``,
  or ``kubectl kustomize``), with the Secrets the manifests expect generated from the
  ``*.env.example`` files, and every object validated offline against the Kubernetes 1.30 and 1.37
  schemas (kubernetes-validate, strict: unknown fields are errors). Then the security context,
  probes against the ports, PodDisruptionBudgets, grace periods, and every ConfigMap and Secret
  reference, with each container's resulting environment loaded like the programs load it.
"""

from __future__ import annotations

import base64
import importlib.resources
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from jobs import callback_delivery
from server.settings import Settings
from server.upstreams import parse_upstreams

ROOT = Path(__file__).resolve().parent.parent.parent
COMPOSE_DIR = ROOT / "deploy" / "compose"
KUBERNETES_DIR = ROOT / "deploy" / "kubernetes"
COMPOSE_SCHEMA = importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"

# The oldest Kubernetes these manifests claim (gRPC probes are GA since 1.27) and the newest
# schema kubernetes-validate bundles.
KUBERNETES_VERSIONS = ("1.30", "1.37")

BACKEND, FRONTEND, PROXY, NODE, WORKER = (
    "spiffworkflow-backend",
    "spiffworkflow-frontend",
    "connector-proxy",
    "connector-node",
    "worker",
)
SCALE_OUT_FILES = "compose.yaml:compose.scale-out.yaml"
CONTAINER_TMP = "/tmp"  # noqa: S108 - the containers' /tmp, which must be a writable volume


# --- the settings the programs read ------------------------------------------------------------

_LITERAL = re.compile(r"""["'](CONNECTOR_(?:PROXY|NODE)_[A-Z0-9_]*[A-Z0-9])["']""")


def _names_in(paths: list[Path]) -> frozenset[str]:
    return frozenset(name for path in paths for name in _LITERAL.findall(path.read_text()))


def _python_sources() -> list[Path]:
    packages = ("server", "rest_shim", "jobs", "connector_proxy", "connectors")
    return [path for package in packages for path in sorted((ROOT / package).rglob("*.py"))]


# Every variable name the Python proxy (and its connectors) reads, and the Node.js server's.
PROXY_SETTINGS = _names_in(_python_sources())
NODE_SETTINGS = _names_in(sorted((ROOT / "connectors-node" / "src").rglob("*.ts")))
# The per-target settings, CONNECTOR_PROXY_UPSTREAM_[<NAME>_]<KEY> (server/upstreams/_config.py).
UPSTREAM_KEYS = frozenset(
    re.findall(r'setting\("([A-Z_]+)"\)', (ROOT / "server" / "upstreams" / "_config.py").read_text())
)


def _is_proxy_setting(name: str, env: Mapping[str, str]) -> bool:
    if name in PROXY_SETTINGS:
        return True
    prefix = "CONNECTOR_PROXY_UPSTREAM_"
    if not name.startswith(prefix):
        return False
    rest = name.removeprefix(prefix)
    targets = ["", *(re.sub(r"[^A-Za-z0-9]", "_", up.name).upper() + "_" for up in parse_upstreams(env))]
    for target in targets:
        if rest.startswith(target):
            key = rest.removeprefix(target)
            if key in UPSTREAM_KEYS or (key.startswith("METADATA_") and len(key) > len("METADATA_")):
                return True
    return False


def _assert_real_settings(env: Mapping[str, str], known: frozenset[str] | None, where: str) -> None:
    """Every CONNECTOR_* name in ``env`` is read by the program (``known``; None: the proxy's)."""
    for name in env:
        if not name.startswith("CONNECTOR_"):
            continue
        real = _is_proxy_setting(name, env) if known is None else name in known
        assert real, f"{where}: {name} is not a setting the program reads"


def test_the_setting_names_are_found() -> None:
    """The lists above are read from the sources; a broken pattern would pass everything."""
    assert {
        "CONNECTOR_PROXY_API_KEY",
        "CONNECTOR_PROXY_DRAIN_DELAY",
        "CONNECTOR_PROXY_JOBS_DB",
    } <= PROXY_SETTINGS
    assert {"CONNECTOR_NODE_PORT", "CONNECTOR_PROXY_JSONATA_WORKERS"} <= NODE_SETTINGS
    assert {"API_KEY", "TLS", "CA_FILE"} <= UPSTREAM_KEYS
    env = {"CONNECTOR_PROXY_GRPC_TARGETS": "node=connector-node:50052"}
    assert _is_proxy_setting("CONNECTOR_PROXY_UPSTREAM_NODE_API_KEY", env)
    assert _is_proxy_setting("CONNECTOR_PROXY_UPSTREAM_METADATA_AUTHORIZATION", env)
    assert not _is_proxy_setting("CONNECTOR_PROXY_UPSTREAM_JSONATA_API_KEY", env)
    assert not _is_proxy_setting("CONNECTOR_PROXY_JOBS_BROKER", env)


# --- Compose -----------------------------------------------------------------------------------

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


class MissingVariable(Exception):
    pass


def _interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's interpolation (``$$``, ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
    ``${VAR:?error}``, ``${VAR?error}``, ``${VAR:+other}``, ``${VAR+other}``) of every string."""
    if isinstance(value, dict):
        return {key: _interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [_interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["named"]
        op, arg = match["op"] or "", match["arg"] or ""
        current = env.get(name)
        present = current is not None and (current != "" or not op.startswith(":"))
        if op.endswith("-"):
            return current if present and current is not None else arg
        if op.endswith("?"):
            if not present or current is None:
                msg = f"{name}: {arg}"
                raise MissingVariable(msg)
            return current
        if op.endswith("+"):
            return arg if present else ""
        return current or ""

    return _VARIABLE.sub(one, value)


def _variables(text: str) -> set[str]:
    return {m["braced"] or m["named"] for m in _VARIABLE.finditer(text) if not m["escaped"]}


def _dotenv(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f"{path.name}: {line!r} is not NAME=value"
            values[name.strip()] = value.strip()
    return values


def _merge(base: Any, override: Any, where: str = "") -> Any:
    """Compose's merge of a later file into an earlier one, for what these files use: mappings
    merge key by key, scalars are replaced; a sequence set in both would need Compose's per-field
    rules, so it fails here."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = _merge(base[key], value, f"{where}.{key}") if key in base else value
        return merged
    assert not (isinstance(base, list) and isinstance(override, list)), f"{where}: a list in both files"
    return override


ENV_EXAMPLE = _dotenv(COMPOSE_DIR / ".env.example")
# The values left empty in .env.example: the secrets. The tests fill them in.
COMPOSE_SECRETS = {
    name: f"test-{name.lower().replace('_', '-')}-4f1c" for name, v in ENV_EXAMPLE.items() if not v
}


def compose_model(compose_file: str = "compose.yaml", **env: str) -> dict[str, Any]:
    """The project as Compose sees it with .env.example, its secrets filled in, and ``env``."""
    values = {**ENV_EXAMPLE, **COMPOSE_SECRETS, "COMPOSE_FILE": compose_file, **env}
    model: dict[str, Any] = {}
    for name in values["COMPOSE_FILE"].split(":"):
        model = _merge(model, yaml.safe_load((COMPOSE_DIR / name).read_text()))
    interpolated: dict[str, Any] = _interpolate(model, values)
    return interpolated


def service_env(model: Mapping[str, Any], service: str) -> dict[str, str]:
    environment = model["services"][service].get("environment", {})
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {str(name): "" if value is None else str(value) for name, value in environment.items()}


def _duration(text: str) -> float:
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 0.000001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|m|s)", text)
    assert parts, f"not a Compose duration: {text!r}"
    assert "".join(n + u for n, u in parts) == text, f"not a Compose duration: {text!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


def _host_port(url: str) -> tuple[str | None, int | None]:
    parts = urlsplit(url)
    return parts.hostname, parts.port


@pytest.fixture(scope="module")
def compose_schema() -> jsonschema.protocols.Validator:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator: jsonschema.protocols.Validator = validator_class(schema)
    return validator


@pytest.mark.parametrize("compose_file", ["compose.yaml", SCALE_OUT_FILES])
def test_compose_matches_the_compose_specification(
    compose_schema: jsonschema.protocols.Validator, compose_file: str
) -> None:
    for name in compose_file.split(":"):
        compose_schema.validate(yaml.safe_load((COMPOSE_DIR / name).read_text()))
    compose_schema.validate(compose_model(compose_file))


def test_the_env_example_documents_every_variable() -> None:
    used = set().union(*(_variables(path.read_text()) for path in COMPOSE_DIR.glob("compose*.yaml")))
    documented = set(ENV_EXAMPLE) - {"COMPOSE_FILE"}
    assert used == documented, f"used, not in .env.example: {used - documented}; unused: {documented - used}"
    for name in ENV_EXAMPLE["COMPOSE_FILE"].split(":") + SCALE_OUT_FILES.split(":"):
        assert (COMPOSE_DIR / name).is_file()


@pytest.mark.parametrize("compose_file", ["compose.yaml", SCALE_OUT_FILES])
def test_compose_refuses_to_start_without_a_secret(compose_file: str) -> None:
    """Each secret (empty in .env.example) is required where it is used: no service starts with a
    blank API key or password (the proxy would refuse a blank key anyway, RabbitMQ would not)."""
    texts = "".join((COMPOSE_DIR / name).read_text() for name in compose_file.split(":"))
    for name in COMPOSE_SECRETS:
        if name not in _variables(texts):
            continue
        with pytest.raises(MissingVariable, match=name):
            compose_model(compose_file, **{name: ""})


@pytest.mark.parametrize("compose_file", ["compose.yaml", SCALE_OUT_FILES])
def test_secrets_are_never_written_into_compose(compose_file: str) -> None:
    raw: dict[str, Any] = {}
    for name in compose_file.split(":"):
        raw = _merge(raw, yaml.safe_load((COMPOSE_DIR / name).read_text()))
    secret = re.compile(r"KEY|SECRET|PASS|TOKEN|AUTH|JOBS_.*_URL")
    for service_name, service in raw["services"].items():
        for name, value in service.get("environment", {}).items():
            if secret.search(name):
                used = _variables(str(value))
                assert used & set(COMPOSE_SECRETS), f"{service_name}: {name} is not taken from .env"


def test_the_backend_reaches_the_proxy_with_its_key() -> None:
    model = compose_model()
    backend, proxy = service_env(model, BACKEND), service_env(model, PROXY)
    settings = Settings.from_env(proxy)
    for variable in (
        "SPIFFWORKFLOW_BACKEND_CONNECTOR_PROXY_URL",
        "SPIFFWORKFLOW_BACKEND_CONNECTOR_PROXY_TYPEAHEAD_URL",
    ):
        url = backend[variable]
        assert urlsplit(url).scheme == "http"
        assert urlsplit(url).path in ("", "/")
        assert _host_port(url) == (PROXY, settings.port), variable
    assert settings.host == "0.0.0.0"
    assert settings.api_key is not None
    assert backend["SPIFFWORKFLOW_BACKEND_CONNECTOR_PROXY_API_KEY"] == settings.api_key
    # spiff-arena's images, as spiff-arena's own docker-compose.yml names them.
    assert model["services"][BACKEND]["image"] == "ghcr.io/sartography/spiffworkflow-backend:latest"
    assert model["services"][FRONTEND]["image"] == "ghcr.io/sartography/spiffworkflow-frontend:latest"
    # The frontend finds the backend on localhost at its own port minus one.
    assert int(service_env(model, FRONTEND)["PORT0"]) - 1 == int(backend["SPIFFWORKFLOW_BACKEND_PORT"])


@pytest.mark.parametrize("service", [PROXY, WORKER])
def test_the_proxy_reaches_the_node_server_with_its_key(service: str) -> None:
    model = compose_model(SCALE_OUT_FILES)
    settings = Settings.from_env(service_env(model, service))
    node = service_env(model, NODE)
    (upstream,) = settings.upstreams
    host, _, port = upstream.target.rpartition(":")
    assert host == NODE
    assert not upstream.tls
    assert int(port) == int(node["CONNECTOR_NODE_PORT"])
    assert node["CONNECTOR_NODE_HOST"] == "0.0.0.0"
    assert dict(upstream.metadata)["spiff-connector-proxy-api-key"] == node["CONNECTOR_PROXY_API_KEY"]


@pytest.mark.parametrize(("compose_file", "service"), [("compose.yaml", PROXY), (SCALE_OUT_FILES, WORKER)])
def test_callbacks_go_to_the_backend(compose_file: str, service: str) -> None:
    """spiff-arena builds the callback URL from SPIFFWORKFLOW_BACKEND_URL (localhost, for the
    browser); the proxy rewrites it to the backend's service, with the credential."""
    model = compose_model(compose_file)
    backend = service_env(model, BACKEND)
    delivery = callback_delivery(Settings.from_env(service_env(model, service)))
    spiff_url = backend["SPIFFWORKFLOW_BACKEND_URL"] + "/v1.0/tasks/42/88f9b549-5a29-483c-9f1e/callback"
    assert delivery.credential
    assert delivery.problem(spiff_url) is None
    target = delivery.target(spiff_url)
    assert _host_port(target) == (BACKEND, int(backend["SPIFFWORKFLOW_BACKEND_PORT"]))
    assert urlsplit(target).path == "/v1.0/tasks/42/88f9b549-5a29-483c-9f1e/callback"


def test_the_embedded_job_store_is_on_a_named_volume() -> None:
    model = compose_model()
    settings = Settings.from_env(service_env(model, PROXY))
    assert settings.jobs_broker_url is None
    directory = str(PurePosixPath(settings.jobs_db).parent)
    sources = {volume.split(":")[1]: volume.split(":")[0] for volume in model["services"][PROXY]["volumes"]}
    assert sources[directory] in model["volumes"], f"{directory} is not on a named volume"


def test_the_scale_out_mode_switches_the_proxy_to_the_broker() -> None:
    model = compose_model(SCALE_OUT_FILES)
    services = model["services"]
    rabbitmq = service_env(model, "rabbitmq")
    command = services["redis"]["command"]
    redis_password = command[command.index("--requirepass") + 1]
    assert service_env(model, "redis")["REDISCLI_AUTH"] == redis_password  # for the healthcheck
    for name in (PROXY, WORKER):
        settings = Settings.from_env(service_env(model, name))
        assert settings.jobs_broker_url is not None, name
        broker = urlsplit(settings.jobs_broker_url)
        assert (broker.hostname, broker.port or 5672) == ("rabbitmq", 5672)
        assert (broker.username, broker.password) == (
            rabbitmq["RABBITMQ_DEFAULT_USER"],
            rabbitmq["RABBITMQ_DEFAULT_PASS"],
        )
        redis = urlsplit(settings.jobs_redis_url)
        assert (redis.hostname, redis.port or 6379) == ("redis", 6379)
        assert redis.password == redis_password
        for dependency in ("rabbitmq", "redis"):
            assert services[name]["depends_on"][dependency]["condition"] == "service_healthy"
    assert services[WORKER]["command"] == ["--worker", "--workers", "2"]
    assert services[WORKER]["image"] == services[PROXY]["image"] == "spiff-connector-proxy:latest"
    assert services[WORKER].get("build") == services[PROXY]["build"]
    assert "ports" not in services[WORKER]
    # RabbitMQ keeps its data under a node name taken from the host name: it must not change.
    assert services["rabbitmq"]["hostname"] == "rabbitmq"
    # Its consumer_timeout outlasts a job, or a long job is handed to a second worker.
    (conf,) = [
        COMPOSE_DIR / volume.split(":")[0]
        for volume in services["rabbitmq"]["volumes"]
        if volume.split(":")[1].startswith("/etc/rabbitmq/conf.d/")
    ]
    timeout = re.search(r"^consumer_timeout\s*=\s*(\d+)", conf.read_text(), re.M)
    assert timeout is not None
    assert int(timeout[1]) / 1000 > Settings.job_timeout


def _healthcheck(model: Mapping[str, Any], name: str) -> bool:
    service = model["services"][name]
    if "healthcheck" in service:
        return not service["healthcheck"].get("disable", False)
    build = service.get("build")
    if build is None:
        return False
    dockerfile = (COMPOSE_DIR / build["context"] / build.get("dockerfile", "Dockerfile")).read_text()
    return re.search(r"^HEALTHCHECK\s+(?!NONE)", dockerfile, re.M) is not None


@pytest.mark.parametrize("compose_file", ["compose.yaml", SCALE_OUT_FILES])
def test_services_restart_wait_for_health_and_stop_in_time(compose_file: str) -> None:
    model = compose_model(compose_file)
    for name, service in model["services"].items():
        assert service.get("restart") == "unless-stopped", name
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in model["services"], f"{name} depends on an unknown {dependency}"
            if condition["condition"] == "service_healthy":
                assert _healthcheck(model, dependency), (
                    f"{name} waits for {dependency}, which has no healthcheck"
                )
    assert model["services"][FRONTEND]["depends_on"][BACKEND]["condition"] == "service_healthy"
    assert model["services"][PROXY]["depends_on"][NODE]["condition"] == "service_healthy"
    proxy = Settings.from_env(service_env(model, PROXY))
    assert _duration(model["services"][PROXY]["stop_grace_period"]) > proxy.drain_delay + proxy.shutdown_grace
    node_grace = float(service_env(model, NODE)["CONNECTOR_PROXY_SHUTDOWN_GRACE"])
    assert _duration(model["services"][NODE]["stop_grace_period"]) > node_grace
    if WORKER in model["services"]:
        worker = Settings.from_env(service_env(model, WORKER))
        assert _duration(model["services"][WORKER]["stop_grace_period"]) > worker.shutdown_grace


@pytest.mark.parametrize("compose_file", ["compose.yaml", SCALE_OUT_FILES])
def test_compose_sets_only_real_settings(compose_file: str) -> None:
    model = compose_model(compose_file)
    for name in model["services"]:
        env = service_env(model, name)
        if name == NODE:
            _assert_real_settings(env, NODE_SETTINGS, name)
        elif name in (PROXY, WORKER):
            _assert_real_settings(env, None, name)
            Settings.from_env(env)
        else:
            assert not any(variable.startswith("CONNECTOR_") for variable in env), name


def test_the_images_are_built_from_this_repository() -> None:
    model = compose_model(SCALE_OUT_FILES)
    for name in (PROXY, WORKER, NODE):
        build = model["services"][name]["build"]
        assert (COMPOSE_DIR / build["context"]).resolve() == ROOT
        assert (ROOT / build["dockerfile"]).is_file()


# --- Kubernetes --------------------------------------------------------------------------------


def _kustomize() -> list[str]:
    if found := shutil.which("kustomize"):
        return [found, "build"]
    if found := shutil.which("kubectl"):
        return [found, "kustomize"]
    reason = "neither kustomize nor kubectl is installed (kubectl kustomize renders the manifests)"
    # As the image tests do: skipped on a developer's machine, a failure in CI.
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(f"CI is set, and {reason}")
    pytest.skip(reason)


# The Secrets the manifests expect, from the example files that document them; empty values get
# test values of the right shape.
SECRET_EXAMPLES = {
    "connector-proxy": KUBERNETES_DIR / "base" / "secrets.env.example",
    "connector-proxy-jobs": KUBERNETES_DIR / "scale-out" / "jobs-secrets.env.example",
}
SECRET_TEST_VALUES = {
    "broker-url": "amqp://spiff:test-password@rabbitmq:5672/",
    "redis-url": "redis://redis:6379/0",
}


@dataclass(frozen=True)
class Rendered:
    overlay: str
    objects: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def named(self, kind: str, name: str) -> dict[str, Any]:
        found = [obj for obj in self.of_kind(kind) if obj["metadata"]["name"] == name]
        assert len(found) == 1, f"{len(found)} {kind} named {name} in {self.overlay}"
        return found[0]

    def data(self, kind: str, name: str) -> dict[str, str]:
        obj = self.named(kind, name)
        if kind == "Secret":
            return {key: base64.b64decode(value).decode() for key, value in obj.get("data", {}).items()}
        return dict(obj.get("data", {}))

    def pods(self) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        for deployment in self.of_kind("Deployment"):
            yield deployment, deployment["spec"]["template"]


@pytest.fixture(scope="module", params=["base", "scale-out"])
def rendered(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    """``overlay`` rendered as an operator would deploy it: in a kustomization of their own that
    adds the Secrets (generated, so their names carry a hash that kustomize writes into every
    reference)."""
    overlay: str = request.param
    command = _kustomize()
    work = tmp_path_factory.mktemp(f"kustomize-{overlay}")
    shutil.copytree(KUBERNETES_DIR, work / "kubernetes")
    deployment = work / "deployment"
    deployment.mkdir()
    generators = []
    for name, example in SECRET_EXAMPLES.items():
        if overlay == "base" and name == "connector-proxy-jobs":
            continue
        values = {
            key: value or SECRET_TEST_VALUES.get(key, f"test-{key}-9d2e")
            for key, value in _dotenv(example).items()
        }
        (deployment / f"{name}.env").write_text("".join(f"{key}={value}\n" for key, value in values.items()))
        generators.append({"name": name, "envs": [f"{name}.env"]})
    kustomization = {"resources": [f"../kubernetes/{overlay}"], "secretGenerator": generators}
    (deployment / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    result = subprocess.run(
        [*command, str(deployment)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    objects = [obj for obj in yaml.safe_load_all(result.stdout) if obj]
    return Rendered(overlay, objects)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_matches_the_kubernetes_schema(rendered: Rendered, version: str) -> None:
    assert rendered.objects
    for obj in rendered.objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(part) for part in exc.path)
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} on {version}: {where}: {exc.message}")


def test_the_kustomizations_render_what_they_say(rendered: Rendered) -> None:
    kinds = sorted(f"{obj['kind']}/{obj['metadata']['name']}" for obj in rendered.objects)
    deployments = {d["metadata"]["name"] for d in rendered.of_kind("Deployment")}
    pdbs = {p["metadata"]["name"] for p in rendered.of_kind("PodDisruptionBudget")}
    if rendered.overlay == "base":
        assert deployments == {PROXY, NODE}, kinds
        assert rendered.named("PersistentVolumeClaim", "connector-proxy-jobs")
    else:
        assert deployments == {PROXY, NODE, "connector-proxy-worker"}, kinds
        assert not rendered.of_kind("PersistentVolumeClaim")
    assert pdbs == deployments
    assert {s["metadata"]["name"] for s in rendered.of_kind("Service")} == {PROXY, NODE}
    assert {n["metadata"]["name"] for n in rendered.of_kind("NetworkPolicy")} == {NODE}


def _selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether a label selector (matchLabels and the In/NotIn/Exists expressions) matches ``labels``."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        matched = {
            "In": labels.get(key) in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not matched:
            return False
    return True


def test_only_the_proxy_and_its_workers_may_call_the_node_server(rendered: Rendered) -> None:
    policy = rendered.named("NetworkPolicy", NODE)["spec"]
    pods = {d["metadata"]["name"]: d["spec"]["template"] for d in rendered.of_kind("Deployment")}
    selected = {
        name for name, pod in pods.items() if _selects(policy["podSelector"], pod["metadata"]["labels"])
    }
    assert selected == {NODE}
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    allowed = {
        name
        for name, pod in pods.items()
        if any(_selects(peer["podSelector"], pod["metadata"]["labels"]) for peer in rule["from"])
    }
    callers = {PROXY, "connector-proxy-worker"} & set(pods)
    assert allowed == callers
    (port,) = rule["ports"]
    (node_container,) = pods[NODE]["spec"]["containers"]
    named = {p["name"]: p["containerPort"] for p in node_container["ports"]}
    assert named[port["port"]] == 50052


def _image_user(dockerfile: Path) -> int:
    users = re.findall(r"^USER\s+(\d+)", dockerfile.read_text(), re.M)
    assert users, f"{dockerfile} sets no numeric USER"
    return int(users[-1])


def test_pods_run_unprivileged(rendered: Rendered) -> None:
    expected_user = {"spiff-connector-proxy": _image_user(ROOT / "Dockerfile")}
    expected_user["spiff-connector-node"] = _image_user(ROOT / "connectors-node" / "Dockerfile")
    for deployment, template in rendered.pods():
        name, spec = deployment["metadata"]["name"], template["spec"]
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        # Service links would put e.g. CONNECTOR_PROXY_PORT=tcp://10.0.0.1:7004 into the environment.
        assert spec["enableServiceLinks"] is False, name
        volumes = {volume["name"]: volume for volume in spec["volumes"]}
        for container in spec["containers"]:
            image = container["image"].split(":")[0]
            assert pod["runAsUser"] == expected_user[image], name
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            for bound in ("requests", "limits"):
                assert set(container["resources"][bound]) == {"cpu", "memory"}, f"{name}: {bound}"
            mounts = {mount["mountPath"]: mount["name"] for mount in container.get("volumeMounts", [])}
            assert "emptyDir" in volumes[mounts[CONTAINER_TMP]], f"{name}: /tmp is not a writable emptyDir"
    with pytest.raises(ValueError, match="CONNECTOR_PROXY_PORT"):
        Settings.from_env({"CONNECTOR_PROXY_PORT": "tcp://10.0.0.1:7004"})


def container_env(rendered: Rendered, container: Mapping[str, Any]) -> dict[str, str]:
    """The environment the container gets; every ConfigMap, Secret and key it names must exist."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert "prefix" not in source
        for kind, ref in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            if ref in source:
                env.update(rendered.data(kind, source[ref]["name"]))
    for variable in container.get("env", []):
        if "value" in variable:
            env[variable["name"]] = variable["value"]
            continue
        source = variable["valueFrom"]
        for kind, ref in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
            if ref in source:
                data = rendered.data(kind, source[ref]["name"])
                key = source[ref]["key"]
                assert key in data, f"{kind} {source[ref]['name']} has no key {key}"
                env[variable["name"]] = data[key]
    return env


def _container(rendered: Rendered, deployment: str) -> tuple[dict[str, Any], dict[str, Any]]:
    spec = rendered.named("Deployment", deployment)["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    return spec, container


def _port(container: Mapping[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port]
    return int(number)


def test_every_reference_exists_and_the_settings_load(rendered: Rendered) -> None:
    referenced: set[str] = set()
    for _deployment, template in rendered.pods():
        referenced |= _referenced_names(template)
        for container in template["spec"]["containers"]:
            env = container_env(rendered, container)
            if container["image"].startswith("spiff-connector-node"):
                _assert_real_settings(env, NODE_SETTINGS, container["name"])
                assert int(env["CONNECTOR_NODE_PORT"]) == _port(container, "grpc")
                assert env["CONNECTOR_NODE_HOST"] == "0.0.0.0"
            else:
                _assert_real_settings(env, None, container["name"])
                Settings.from_env(env)
        volumes = {volume["name"] for volume in template["spec"]["volumes"]}
        for container in template["spec"]["containers"]:
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, f"{container['name']} mounts an undefined {mount['name']}"
        for volume in template["spec"]["volumes"]:
            if "persistentVolumeClaim" in volume:
                rendered.named("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    # Each ConfigMap and Secret is used (no stale generator, no Secret the docs ask for in vain),
    # and so is each key of a Secret (they are taken one by one).
    keys = {
        (variable["valueFrom"]["secretKeyRef"]["name"], variable["valueFrom"]["secretKeyRef"]["key"])
        for _deployment, template in rendered.pods()
        for container in template["spec"]["containers"]
        for variable in container.get("env", [])
        if "secretKeyRef" in variable.get("valueFrom", {})
    }
    for obj in rendered.of_kind("ConfigMap") + rendered.of_kind("Secret"):
        name = obj["metadata"]["name"]
        assert name in referenced, f"{obj['kind']} {name} is unused"
        if obj["kind"] == "Secret":
            for key in obj["data"]:
                assert (name, key) in keys, f"Secret {name}: nothing uses {key}"


def _referenced_names(value: Any) -> set[str]:
    """The names of every ConfigMap and Secret a pod template refers to."""
    refs = ("configMapRef", "secretRef", "configMapKeyRef", "secretKeyRef")
    if isinstance(value, dict):
        found = {value[ref]["name"] for ref in refs if ref in value}
        return found.union(*(_referenced_names(item) for item in value.values()))
    if isinstance(value, list):
        return set().union(*(_referenced_names(item) for item in value))
    return set()


def test_the_proxy_serves_what_its_probes_and_services_expect(rendered: Rendered) -> None:
    spec, container = _container(rendered, PROXY)
    settings = Settings.from_env(container_env(rendered, container))
    assert _port(container, "http") == settings.port
    assert _port(container, "grpc") == settings.grpc_port
    assert settings.host == "0.0.0.0"
    readiness, liveness, startup = (
        container[probe] for probe in ("readinessProbe", "livenessProbe", "startupProbe")
    )
    assert readiness["httpGet"]["path"] == f"{settings.path_prefix}/readiness"
    assert _port(container, readiness["httpGet"]["port"]) == settings.port
    # Not gRPC health for liveness: it turns NOT_SERVING while draining.
    assert liveness["httpGet"]["path"] == f"{settings.path_prefix}/liveness"
    assert _port(container, liveness["httpGet"]["port"]) == settings.port
    assert startup["grpc"]["port"] == settings.grpc_port
    assert "service" not in startup["grpc"]
    assert settings.grpc_tls_cert_file is None  # the kubelet's gRPC probe speaks plaintext
    assert spec["terminationGracePeriodSeconds"] > settings.drain_delay + settings.shutdown_grace
    assert settings.drain_delay > 0, "without a drain delay, Endpoints would still route to a stopping pod"
    (upstream,) = settings.upstreams
    node_service = rendered.named("Service", upstream.target.rpartition(":")[0])
    assert int(upstream.target.rpartition(":")[2]) in {port["port"] for port in node_service["spec"]["ports"]}
    node_env = container_env(rendered, _container(rendered, NODE)[1])
    assert dict(upstream.metadata)["spiff-connector-proxy-api-key"] == node_env["CONNECTOR_PROXY_API_KEY"]
    assert settings.api_key is not None
    assert settings.callback_api_key is not None
    assert urlsplit(settings.callback_base_url).hostname


def test_the_node_server_serves_what_its_probes_expect(rendered: Rendered) -> None:
    spec, container = _container(rendered, NODE)
    env = container_env(rendered, container)
    port = int(env["CONNECTOR_NODE_PORT"])
    assert container["startupProbe"]["grpc"]["port"] == port
    assert container["readinessProbe"]["grpc"]["port"] == port
    assert _port(container, container["livenessProbe"]["tcpSocket"]["port"]) == port
    assert spec["terminationGracePeriodSeconds"] > float(env["CONNECTOR_PROXY_SHUTDOWN_GRACE"])
    assert "CONNECTOR_PROXY_API_KEY" in env


def test_the_node_server_is_reached_on_every_pod(rendered: Rendered) -> None:
    """Headless: the proxy's channel resolves every ready Node.js pod and spreads calls over them."""
    service = rendered.named("Service", NODE)["spec"]
    assert service["clusterIP"] == "None"
    assert service.get("publishNotReadyAddresses", False) is False
    targets = container_env(rendered, _container(rendered, PROXY)[1])["CONNECTOR_PROXY_GRPC_TARGETS"]
    assert f"{NODE}:50052" in targets


def test_services_select_pods_and_their_ports(rendered: Rendered) -> None:
    for service in rendered.of_kind("Service"):
        selector = service["spec"]["selector"]
        matches = [
            (deployment, template)
            for deployment, template in rendered.pods()
            if selector.items() <= template["metadata"]["labels"].items()
        ]
        assert len(matches) == 1, f"Service {service['metadata']['name']} selects {len(matches)} Deployments"
        ((_deployment, template),) = matches
        (container,) = template["spec"]["containers"]
        for port in service["spec"]["ports"]:
            assert _port(container, port["targetPort"]) == port["port"]


def test_disruption_budgets_select_one_deployment_and_allow_drains(rendered: Rendered) -> None:
    for budget in rendered.of_kind("PodDisruptionBudget"):
        selector = budget["spec"]["selector"]["matchLabels"]
        matches = [
            deployment
            for deployment, template in rendered.pods()
            if selector.items() <= template["metadata"]["labels"].items()
        ]
        assert len(matches) == 1, f"PodDisruptionBudget {budget['metadata']['name']} selects {len(matches)}"
        (deployment,) = matches
        assert deployment["spec"]["selector"]["matchLabels"] == selector
        replicas = deployment["spec"]["replicas"]
        if "minAvailable" in budget["spec"]:
            assert budget["spec"]["minAvailable"] < replicas, "a drain could never evict these pods"
        else:
            assert budget["spec"]["maxUnavailable"] >= 1
    proxy_budget = rendered.named("PodDisruptionBudget", PROXY)
    assert (
        proxy_budget["spec"]["selector"]["matchLabels"]
        == rendered.named("Deployment", PROXY)["spec"]["selector"]["matchLabels"]
    )


def test_the_job_store_matches_the_mode(rendered: Rendered) -> None:
    spec, container = _container(rendered, PROXY)
    settings = Settings.from_env(container_env(rendered, container))
    deployment = rendered.named("Deployment", PROXY)["spec"]
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    if rendered.overlay == "base":
        # Embedded: one process owns the SQLite file, on a volume that outlives the pod.
        assert settings.jobs_broker_url is None
        assert deployment["replicas"] == 1
        assert deployment["strategy"] == {"type": "Recreate"}
        volume = volumes[mounts[str(PurePosixPath(settings.jobs_db).parent)]]
        claim = rendered.named("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
        assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
        assert spec["securityContext"]["fsGroup"] == spec["securityContext"]["runAsUser"]
    else:
        assert settings.jobs_broker_url is not None
        assert deployment["replicas"] >= 2
        assert deployment["strategy"]["type"] == "RollingUpdate"
        assert all("persistentVolumeClaim" not in volume for volume in volumes.values())


def test_workers_run_the_jobs_in_the_scale_out_mode(rendered: Rendered) -> None:
    if rendered.overlay == "base":
        assert not any(
            d["metadata"]["name"] == "connector-proxy-worker" for d in rendered.of_kind("Deployment")
        )
        return
    spec, container = _container(rendered, "connector-proxy-worker")
    _proxy_spec, proxy = _container(rendered, PROXY)
    assert container["image"] == proxy["image"]
    assert container["args"] == ["--worker", "--workers", "2"]
    assert "command" not in container  # the image's entrypoint, spiff-connector-proxy
    # Its only port is its metrics': nothing to probe (see worker-deployment.yaml).
    assert [port["name"] for port in container["ports"]] == ["metrics"]
    assert not any(probe in container for probe in ("livenessProbe", "readinessProbe", "startupProbe"))
    worker, front = (Settings.from_env(container_env(rendered, c)) for c in (container, proxy))
    assert worker.jobs_broker_url == front.jobs_broker_url is not None
    assert worker.jobs_redis_url == front.jobs_redis_url
    assert worker.jobs_namespace == front.jobs_namespace
    assert worker.callback_api_key is not None
    assert worker.callback_base_url == front.callback_base_url
    assert worker.upstreams == front.upstreams
    # Running jobs finish on SIGTERM: the grace covers a whole job.
    assert spec["terminationGracePeriodSeconds"] > worker.job_timeout


def test_prometheus_finds_the_metrics_port(rendered: Rendered) -> None:
    for deployment in rendered.of_kind("Deployment"):
        name = deployment["metadata"]["name"]
        if name == NODE:
            continue  # the Node.js server serves no metrics
        pod = deployment["spec"]["template"]
        annotations = pod["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true", name
        assert annotations["prometheus.io/path"] == "/metrics", name
        (container,) = pod["spec"]["containers"]
        settings = Settings.from_env(container_env(rendered, container))
        assert settings.metrics_port == int(annotations["prometheus.io/port"]) == _port(container, "metrics")


def test_kubernetes_versions_are_bundled() -> None:
    """kubernetes-validate picks the newest schema not newer than the one asked for: make sure
    each version named above is itself bundled, not silently an older one."""
    minimal = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}
    for version in KUBERNETES_VERSIONS:
        assert kubernetes_validate.validate(minimal, version, strict=True) == version


def test_no_namespace_or_registry_is_written_in() -> None:
    """No manifest names a namespace or a registry: an operator's own kustomization decides both."""
    for path in sorted(KUBERNETES_DIR.rglob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document and "metadata" in document:
                assert "namespace" not in document["metadata"], path.name
            if document and "namespace" in document:
                pytest.fail(f"{path.name} sets a namespace")
            if document and document.get("kind") == "Deployment":
                for container in document["spec"]["template"]["spec"]["containers"]:
                    # (patches name only what they change)
                    assert container.get("image", "spiff-connector-proxy:latest") in (
                        "spiff-connector-proxy:latest",
                        "spiff-connector-node:latest",
                    )
