"""The deployment files agree with the local hub config and hold no secrets (offline, fast).

- ``jupyterhub/k8s/values.yaml`` (Zero to JupyterHub) carries the settings of
  ``jupyterhub/jupyterhub_config.py``: the config is executed here with a traitlets ``Config``
  (its state in a temporary folder, a generated vault key) and compared key by key. A table maps
  every ``c.<Section>.<trait>`` the local config sets to its place in the Helm values, or to why
  it has none; a new setting in either file without the other fails the suite.
- ``jupyterhub/k8s/services.yaml`` runs the two hub services as the local config starts them.
- The ``Dockerfile`` pins its bases, installs with the lock, runs as a non-root user, holds no
  secret and copies files that exist; ``binder/`` is what repo2docker expects.

Nothing here talks to a cluster, a registry or a container engine: ``helm template``, a real
``docker build`` and a cluster run are beyond an offline check (docs/kubernetes.md).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from cryptography.fernet import Fernet
from traitlets.config import Config

import qmlops_jupyter

# nativeauthenticator (imported by the local config) still calls locale.getdefaultlocale.
pytestmark = pytest.mark.filterwarnings("ignore:'locale.getdefaultlocale':DeprecationWarning")

ROOT = Path(__file__).resolve().parents[1]
LOCAL_CONFIG = ROOT / "jupyterhub" / "jupyterhub_config.py"
K8S = ROOT / "jupyterhub" / "k8s"
VALUES = K8S / "values.yaml"
SERVICES = K8S / "services.yaml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
BINDER = ROOT / "binder"

Path_ = tuple[str, ...]

#: Where values.yaml carries each setting of the local config (a path of keys), or why it has
#: none (a sentence). Every ``c.<Section>.<trait>`` the local config sets must be here.
COUNTERPARTS: dict[str, Path_ | str] = {
    "JupyterHub.bind_url": ("proxy", "service", "type"),
    "JupyterHub.hub_ip": "Zero to JupyterHub binds the hub to its pod (hub_bind_url) and "
    "reaches it through the `hub` Service.",
    "JupyterHub.hub_port": "The chart's hub listens on 8081 in its pod (services.yaml's "
    "JUPYTERHUB_API_URL).",
    "JupyterHub.db_url": ("hub", "db", "url"),
    "JupyterHub.cookie_secret_file": "The chart generates the cookie secret into its `hub` Secret.",
    "JupyterHub.log_level": ("hub", "config", "JupyterHub", "log_level"),
    "ConfigurableHTTPProxy.command": "Zero to JupyterHub runs its own proxy image in the "
    "proxy pod.",
    "ConfigurableHTTPProxy.api_url": "The chart points the hub at its `proxy-api` Service.",
    "ConfigurableHTTPProxy.pid_file": "The proxy runs in a pod of its own, not as the hub's "
    "child process.",
    "JupyterHub.authenticator_class": ("hub", "config", "JupyterHub", "authenticator_class"),
    "JupyterHub.template_paths": ("hub", "extraConfig", "qmlops-native-templates"),
    "NativeAuthenticator.open_signup": ("hub", "config", "NativeAuthenticator", "open_signup"),
    "NativeAuthenticator.minimum_password_length": (
        "hub",
        "config",
        "NativeAuthenticator",
        "minimum_password_length",
    ),
    "NativeAuthenticator.check_common_password": (
        "hub",
        "config",
        "NativeAuthenticator",
        "check_common_password",
    ),
    "NativeAuthenticator.allowed_failed_logins": (
        "hub",
        "config",
        "NativeAuthenticator",
        "allowed_failed_logins",
    ),
    "Authenticator.allow_all": ("hub", "config", "Authenticator", "allow_all"),
    "Authenticator.admin_users": ("hub", "config", "Authenticator", "admin_users"),
    "SharedPasswordAuthenticator.user_password": "Tests only (QMLOPS_HUB_TESTING=1).",
    "SharedPasswordAuthenticator.admin_password": "Tests only (QMLOPS_HUB_TESTING=1).",
    "Authenticator.allowed_users": "Set only with the tests' shared password; NativeAuthenticator "
    "lets in whom an admin approved.",
    "JupyterHub.custom_scopes": ("hub", "config", "JupyterHub", "custom_scopes"),
    "JupyterHub.load_groups": ("hub", "config", "JupyterHub", "load_groups"),
    "JupyterHub.load_roles": ("hub", "loadRoles"),
    "JupyterHub.services": ("hub", "services"),
    "JupyterHub.spawner_class": "Zero to JupyterHub sets KubeSpawner.",
    "SimpleLocalProcessSpawner.home_dir_template": ("singleuser", "storage"),
    "Spawner.cmd": ("singleuser", "cmd"),
    "Spawner.default_url": ("singleuser", "defaultUrl"),
    "Spawner.http_timeout": ("hub", "config", "Spawner", "http_timeout"),
    "Spawner.start_timeout": ("singleuser", "startTimeout"),
    "Spawner.args": "--allow-root only when the hub runs as root; users' pods run as uid 1000.",
    "Spawner.server_token_scopes": ("hub", "config", "Spawner", "server_token_scopes"),
    "Spawner.environment": ("singleuser", "extraEnv"),
}

#: The scopes of the role Zero to JupyterHub gives its culler, `jupyterhub-idle-culler`
#: (cull.enabled, without cull.users): the local config's `idle-culler` role under another name.
CHART_CULLER_SCOPES = {"list:users", "read:users:activity", "read:servers", "delete:servers"}
#: Settings that name a secret: never a literal value in the deployment files.
SECRET_NAME = re.compile(r"(?i)(password|passwd|token|secret|crypt|credential|_key$)")


# -- loading ---------------------------------------------------------------------------------------


def _load_yaml(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    (doc,) = _load_yaml(VALUES)
    return doc


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    return _load_yaml(SERVICES)


def _dig(tree: Any, path: Path_) -> Any:
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            raise KeyError(".".join(path))
        tree = tree[key]
    return tree


def load_local_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **environ: str
) -> tuple[Config, Path]:
    """Run jupyterhub/jupyterhub_config.py as JupyterHub would, with its state in tmp_path."""
    for name in list(os.environ):
        if name.startswith(("QMLOPS_", "JUPYTERHUB_")):
            monkeypatch.delenv(name)
    state = tmp_path / "hub-state"
    monkeypatch.setenv("QMLOPS_HUB_STATE", str(state))
    monkeypatch.setenv("QMLOPS_CRYPT_KEY", Fernet.generate_key().decode())
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    c = Config()
    code = compile(LOCAL_CONFIG.read_text(), str(LOCAL_CONFIG), "exec")
    exec(code, {"get_config": lambda: c, "__file__": str(LOCAL_CONFIG), "__name__": "__config__"})
    return c, state


@pytest.fixture
def local(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Config:
    """The local config with its defaults (NativeAuthenticator, the simple spawner)."""
    c, state = load_local_config(monkeypatch, tmp_path)
    assert state.is_dir() and not (state / "crypt.key").exists(), "the config wrote its key"
    return c


#: Environments that take the local config through its other branches.
VARIANTS = {
    "default": {},
    "tests": {
        "QMLOPS_HUB_AUTHENTICATOR": "shared-password",
        "QMLOPS_HUB_TESTING": "1",
        "QMLOPS_HUB_TEST_PASSWORD": "password-for-tests",
        "QMLOPS_HUB_TEST_ADMIN_PASSWORD": "x" * 32,
        "QMLOPS_HUB_TEST_API_TOKEN": "test-token",
        "QMLOPS_HUB_PROMETHEUS_TOKEN": "prometheus-token",
        "QMLOPS_HUB_USERS": "alice,bob",
        "QMLOPS_HUB_VIEWERS": "carol",
        "QMLOPS_HUB_GRANTS": "carol=alice+bob",
        "QMLOPS_HUB_SPAWNER": "localprocess",
    },
    "oauth": {"QMLOPS_HUB_AUTHENTICATOR": "github"},
}


def _set_keys(c: Config) -> set[str]:
    return {
        f"{section}.{trait}"
        for section, traits in c.items()
        if isinstance(traits, Config)
        for trait in traits
    }


def _static_keys() -> set[str]:
    """Every ``c.<Section>.<trait>`` the config's source assigns or extends, in any branch."""
    source = LOCAL_CONFIG.read_text()
    return {f"{s}.{t}" for s, t in re.findall(r"\bc\.([A-Z]\w*)\.(\w+)\s*(?:=|\.append\()", source)}


# -- every YAML parses --------------------------------------------------------------------------


def test_every_yaml_under_k8s_parses() -> None:
    files = sorted([*K8S.rglob("*.yaml"), *K8S.rglob("*.yml")])
    assert VALUES in files and SERVICES in files
    for path in files:
        assert _load_yaml(path), f"{path.name} is empty"


def test_every_manifest_is_named_and_typed(manifests: list[dict[str, Any]]) -> None:
    kinds = {(doc["kind"], doc["metadata"]["name"]) for doc in manifests}
    for doc in manifests:
        assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"], doc
    for name in ("qmlops", "mlflow"):
        assert {("Deployment", name), ("Service", name), ("NetworkPolicy", name)} <= kinds


# -- the table of counterparts ---------------------------------------------------------------------


def test_every_local_setting_has_a_counterpart(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    keys = _static_keys()
    for name, environ in VARIANTS.items():
        c, _ = load_local_config(monkeypatch, tmp_path / name, **environ)
        keys |= _set_keys(c)
    missing = sorted(keys - COUNTERPARTS.keys())
    assert not missing, (
        f"jupyterhub/jupyterhub_config.py sets {missing}: give each its counterpart in "
        "jupyterhub/k8s/values.yaml and a row in COUNTERPARTS (or the reason it has none)"
    )


def test_no_counterpart_outlives_its_setting() -> None:
    stale = sorted(COUNTERPARTS.keys() - _static_keys())
    assert not stale, f"the local config no longer sets {stale}: drop their rows"


def test_every_counterpart_is_in_the_values(values: dict[str, Any]) -> None:
    for key, where in COUNTERPARTS.items():
        if isinstance(where, str):
            assert len(where) > 20, f"{key}: say why values.yaml has no counterpart"
        else:
            _dig(values, where)  # KeyError names the missing path


# -- the same settings ----------------------------------------------------------------------------


def test_authenticator(local: Config, values: dict[str, Any]) -> None:
    config = values["hub"]["config"]
    assert config["JupyterHub"]["authenticator_class"] == local.JupyterHub.authenticator_class
    assert config["NativeAuthenticator"] == dict(local.NativeAuthenticator)
    assert set(config["Authenticator"]["admin_users"]) == local.Authenticator.admin_users
    assert config["Authenticator"]["allow_all"] is local.Authenticator.allow_all
    # The chart's own default (admin_access: true) would let admins into users' servers.
    assert config["JupyterHub"]["admin_access"] is False
    assert "admin_access" not in local.JupyterHub


def test_native_templates_come_from_the_same_place(local: Config, values: dict[str, Any]) -> None:
    c = Config()
    exec(values["hub"]["extraConfig"]["qmlops-native-templates"], {"c": c})
    assert c.JupyterHub.template_paths == local.JupyterHub.template_paths


def test_custom_scopes(local: Config, values: dict[str, Any]) -> None:
    assert values["hub"]["config"]["JupyterHub"]["custom_scopes"] == local.JupyterHub.custom_scopes


def test_groups(local: Config, values: dict[str, Any]) -> None:
    groups = values["hub"]["config"]["JupyterHub"]["load_groups"]
    assert groups.keys() == local.JupyterHub.load_groups.keys()
    assert (
        groups["qmlops-admins"]["users"] == local.JupyterHub.load_groups["qmlops-admins"]["users"]
    )


def _role(role: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": role.get("description"),
        "scopes": sorted(role["scopes"]),
        "groups": sorted(role.get("groups", [])),
        "services": sorted(role.get("services", [])),
        "users": sorted(role.get("users", [])),
    }


def test_roles(local: Config, values: dict[str, Any]) -> None:
    local_roles = {role["name"]: _role(role) for role in local.JupyterHub.load_roles}
    culler = local_roles.pop("idle-culler")
    helm_roles = {
        role.get("name", key): _role(role) for key, role in values["hub"]["loadRoles"].items()
    }
    assert helm_roles == local_roles
    # The culler's role is the chart's, with the same scopes, when cull.enabled.
    assert values["cull"]["enabled"] is True
    assert set(culler["scopes"]) == CHART_CULLER_SCOPES


def test_server_token_scopes(local: Config, values: dict[str, Any]) -> None:
    helm = values["hub"]["config"]["Spawner"]["server_token_scopes"]
    assert helm == local.Spawner.server_token_scopes


def test_services(local: Config, values: dict[str, Any]) -> None:
    local_services = {service["name"]: service for service in local.JupyterHub.services}
    helm_services = values["hub"]["services"]
    assert {*helm_services, "idle-culler"} == local_services.keys()
    for name, service in helm_services.items():
        # The same port as on one machine, on the service's Kubernetes Service.
        assert urlsplit(service["url"]).port == urlsplit(local_services[name]["url"]).port
        assert "apiToken" not in service and "api_token" not in service, "generated by the chart"
        for key in ("oauth_no_confirm", "oauth_client_allowed_scopes"):
            assert service.get(key) == local_services[name].get(key), (name, key)


def test_culler(local: Config, values: dict[str, Any]) -> None:
    (culler,) = [s for s in local.JupyterHub.services if s["name"] == "idle-culler"]
    flags = dict(arg.removeprefix("--").split("=", 1) for arg in culler["command"] if "=" in arg)
    cull = values["cull"]
    assert cull["enabled"] is True
    assert cull["timeout"] == int(flags["timeout"])
    assert cull["every"] == int(flags["cull-every"])
    # Neither culls users nor spares admins' servers, like the local culler's defaults.
    assert cull["users"] is False and cull["adminUsers"] is True


def test_spawner(local: Config, values: dict[str, Any]) -> None:
    singleuser = values["singleuser"]
    assert singleuser["defaultUrl"] == local.Spawner.default_url
    assert singleuser["cmd"] == Path(local.Spawner.cmd[0]).name
    assert values["hub"]["config"]["Spawner"]["http_timeout"] == local.Spawner.http_timeout
    assert values["hub"]["config"]["JupyterHub"]["log_level"] == local.JupyterHub.log_level
    env = singleuser["extraEnv"]
    assert local.Spawner.environment.keys() <= env.keys()
    assert (
        urlsplit(env["QMLOPS_SERVICE_URL"]).path
        == urlsplit(local.Spawner.environment["QMLOPS_SERVICE_URL"]).path
    )
    # A user's server gets neither the ledger nor the vault's key.
    assert not {"QMLOPS_DATABASE_URL", "QMLOPS_CRYPT_KEY"} & env.keys()
    assert not {"QMLOPS_DATABASE_URL", "QMLOPS_CRYPT_KEY"} & local.Spawner.environment.keys()


def test_service_url_reaches_the_qmlops_service(
    values: dict[str, Any], manifests: list[dict[str, Any]]
) -> None:
    url = urlsplit(values["singleuser"]["extraEnv"]["QMLOPS_SERVICE_URL"])
    assert url.path == "/services/qmlops/"
    service = _manifest(manifests, "Service", url.hostname)
    assert url.port in {port["port"] for port in service["spec"]["ports"]}
    assert values["hub"]["services"]["qmlops"]["url"] == f"http://{url.hostname}:{url.port}"


def test_hub_database_is_postgres_without_a_password(values: dict[str, Any]) -> None:
    db = values["hub"]["db"]
    assert db["type"] == "postgres"
    url = urlsplit(db["url"])
    assert url.scheme == "postgresql" and url.password is None  # hub.db.password: SECRETS.yaml
    assert "password" not in db


def test_image_tags_follow_the_package_version(
    values: dict[str, Any], manifests: list[dict[str, Any]]
) -> None:
    version = qmlops_jupyter.__version__
    assert values["singleuser"]["image"]["tag"] == version
    assert values["hub"]["image"]["tag"] == version
    for deployment in _deployments(manifests):
        qmlops_image = _containers(deployment)[0]["image"]
        assert qmlops_image.endswith(f":{version}"), qmlops_image


# -- the services' Deployments ---------------------------------------------------------------------


def _manifest(manifests: list[dict[str, Any]], kind: str, name: str | None) -> dict[str, Any]:
    (doc,) = [d for d in manifests if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def _deployments(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in manifests if d["kind"] == "Deployment"]


def _containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    return deployment["spec"]["template"]["spec"]["containers"]


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}


@pytest.mark.parametrize("name", ["qmlops", "mlflow"])
def test_service_deployment_runs_what_the_hub_would(
    name: str, local: Config, values: dict[str, Any], manifests: list[dict[str, Any]]
) -> None:
    (service,) = [s for s in local.JupyterHub.services if s["name"] == name]
    deployment = _manifest(manifests, "Deployment", name)
    main, proxy = _containers(deployment)
    # The same module, started with the image's python.
    assert main["command"][1:] == service["command"][1:]
    env = _env(main)
    assert service["environment"].keys() <= env.keys()
    assert env["JUPYTERHUB_SERVICE_NAME"]["value"] == name
    assert env["JUPYTERHUB_SERVICE_PREFIX"]["value"] == f"/services/{name}/"
    # Its hub token: generated by the chart for hub.services.NAME, read from the `hub` Secret.
    assert name in values["hub"]["services"]
    assert env["JUPYTERHUB_API_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "hub",
        "key": f"hub.services.{name}.apiToken",
    }
    # Secrets come from Secrets, everything else is literal.
    for variable, value in service["environment"].items():
        item = env[variable]
        if variable in ("QMLOPS_DATABASE_URL", "QMLOPS_CRYPT_KEY", "QMLOPS_MLFLOW_BACKEND_URI"):
            assert item["valueFrom"]["secretKeyRef"]["name"] == "qmlops", variable
        else:
            assert "value" in item, variable
            if not variable.endswith(("_HOME", "_URI", "_ARTIFACTS")):
                assert item["value"] == value, variable
    # The sidecar takes the pod's port and hands requests to the service on loopback.
    args = dict(arg.removeprefix("--").partition("=")[::2] for arg in proxy["command"][1:])
    assert args["default-target"] == env["JUPYTERHUB_SERVICE_URL"]["value"]
    assert urlsplit(env["JUPYTERHUB_SERVICE_URL"]["value"]).hostname == "127.0.0.1"
    port = int(args["port"])
    assert args["ip"] == "0.0.0.0" and args["api-ip"] == "127.0.0.1"
    assert urlsplit(values["hub"]["services"][name]["url"]).port == port
    k8s_service = _manifest(manifests, "Service", name)
    assert [p["port"] for p in k8s_service["spec"]["ports"]] == [port]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert k8s_service["spec"]["selector"].items() <= labels.items()
    assert labels["hub.jupyter.org/network-access-hub"] == "true"
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False


def test_qmlops_service_settings_parse(manifests: list[dict[str, Any]], tmp_path: Path) -> None:
    """The Deployment's environment gives the service its port and prefix; the sidecar sets
    the Host header to the target, which the jupyter server on loopback insists on."""
    from qmlops_jupyter.server.hub.service import server_arguments

    main, proxy = _containers(_manifest(manifests, "Deployment", "qmlops"))
    env = {k: v["value"] for k, v in _env(main).items() if "value" in v}
    env["QMLOPS_HOME"] = str(tmp_path)
    argv = server_arguments(env)
    assert "--ServerApp.ip=127.0.0.1" in argv and "--ServerApp.port=10103" in argv
    assert "--ServerApp.base_url=/services/qmlops/" in argv
    assert "--change-origin" in proxy["command"]


def test_mlflow_service_settings_parse(manifests: list[dict[str, Any]], tmp_path: Path) -> None:
    from qmlops_jupyter.server.hub.mlflow_service import ServiceSettings

    main, _ = _containers(_manifest(manifests, "Deployment", "mlflow"))
    env = {k: v["value"] for k, v in _env(main).items() if "value" in v}
    env["QMLOPS_MLFLOW_BACKEND_URI"] = "postgresql+psycopg://qmlops@db:5432/qmlops_mlflow"
    env["QMLOPS_MLFLOW_ARTIFACTS"] = str(tmp_path / "artifacts")
    settings = ServiceSettings.from_env(env)
    assert (settings.name, settings.prefix, settings.port) == ("mlflow", "/services/mlflow/", 10104)
    assert json.loads(env["JUPYTERHUB_OAUTH_ACCESS_SCOPES"]) == ["access:services!service=mlflow"]
    assert env["JUPYTERHUB_OAUTH_CALLBACK_URL"] == "/services/mlflow/oauth_callback"


# -- network policies ---------------------------------------------------------------------------


def _ports(rule: dict[str, Any]) -> set[int]:
    return {port["port"] for port in rule.get("ports", [])}


def _selects(rule: dict[str, Any], labels: dict[str, str]) -> bool:
    for peer in rule.get("to", rule.get("from", [])):
        match = peer.get("podSelector", {}).get("matchLabels")
        if match and match.items() <= labels.items():
            return True
    return False


def test_users_pods_reach_the_services_but_not_postgres(
    values: dict[str, Any], manifests: list[dict[str, Any]]
) -> None:
    policy = values["singleuser"]["networkPolicy"]
    assert policy["enabled"] is True
    allow = policy["egressAllowRules"]
    # privateIPs would open in-cluster PostgreSQL; nonPrivateIPs a public endpoint's port.
    assert allow["privateIPs"] is False and allow["nonPrivateIPs"] is False
    assert allow["cloudMetadataServer"] is False
    for rule in policy["egress"]:
        assert rule.get("ports"), f"an egress rule without ports opens every port: {rule}"
        assert 5432 not in _ports(rule), rule
    for name, port in (("qmlops", 10101), ("mlflow", 10102)):
        labels = _manifest(manifests, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert any(_selects(r, labels) and port in _ports(r) for r in policy["egress"]), name


def test_hub_and_proxy_reach_the_services(values: dict[str, Any]) -> None:
    for policy in (values["hub"]["networkPolicy"], values["proxy"]["chp"]["networkPolicy"]):
        assert policy["enabled"] is True
        assert any(
            _selects(rule, {"app.kubernetes.io/part-of": "qmlops"})
            and {10101, 10102} <= _ports(rule)
            for rule in policy["egress"]
        )


@pytest.mark.parametrize("name", ["qmlops", "mlflow"])
def test_service_policies(name: str, manifests: list[dict[str, Any]]) -> None:
    policy = _manifest(manifests, "NetworkPolicy", name)["spec"]
    labels = _manifest(manifests, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    sources = [
        expr["values"]
        for rule in policy["ingress"]
        for peer in rule["from"]
        for expr in peer.get("podSelector", {}).get("matchExpressions", [])
    ]
    assert any({"proxy", "hub", "singleuser-server"} <= set(v) for v in sources)
    # Only the services' pods are let out to PostgreSQL.
    assert any(5432 in _ports(rule) for rule in policy["egress"])


# -- no secrets in the deployment files ----------------------------------------------------------


def _walk(tree: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    found: list[tuple[str, Any, Any]] = []
    if isinstance(tree, dict):
        for key, value in tree.items():
            found.append((path, key, value))
            found += _walk(value, f"{path}.{key}")
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            found += _walk(value, f"{path}[{index}]")
    return found


@pytest.mark.parametrize("path", [VALUES, SERVICES], ids=lambda p: p.name)
def test_no_secret_in_the_yaml(path: Path) -> None:
    for where, key, value in _walk(_load_yaml(path)):
        if isinstance(value, str) and re.match(r"\w[\w+.-]*://[^/@\s]*:[^/@\s]*@", value):
            pytest.fail(f"{path.name}{where}.{key}: a URL with a password")
        if key == "key" and where.endswith("secretKeyRef"):
            continue  # the name of a key in a Secret
        if isinstance(key, str) and SECRET_NAME.search(key) and isinstance(value, str):
            assert not value, f"{path.name}{where}.{key} holds a value"
        if isinstance(value, dict) and SECRET_NAME.search(str(value.get("name", ""))):
            assert "value" not in value, f"{path.name}{where}: {value['name']} set literally"


# -- the Dockerfile -------------------------------------------------------------------------------


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += stripped[:-1] + " " if stripped.endswith("\\") else stripped
        if not stripped.endswith("\\"):
            lines.append(pending)
            pending = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def _stages(path: Path) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in _instructions(path):
        if instruction[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def _args(stage: list[tuple[str, str]]) -> dict[str, str]:
    found: dict[str, str] = {}
    for instruction, text in stage:
        if instruction == "ARG" and "=" in text:
            name, _, value = text.partition("=")
            found[name.strip()] = value.strip().strip('"')
    return found


def test_dockerfile_bases_are_pinned() -> None:
    names: set[str] = set()
    for stage in _stages(DOCKERFILE):
        words = stage[0][1].split()
        image = words[0]
        if image.lower() in names:
            continue  # an earlier stage
        if "@sha256:" not in image:
            tag = image.rsplit("/", 1)[-1].partition(":")[2]
            assert tag and tag != "latest", f"FROM {image}: pin a tag"
            assert "$" not in image, f"FROM {image}: name the base literally"
        if len(words) == 3 and words[1].upper() == "AS":
            names.add(words[2].lower())


def test_dockerfile_images_run_as_non_root() -> None:
    stages = _stages(DOCKERFILE)
    final = stages[-1]
    assert any(i == "USER" for i, _ in final), "the final image sets no USER"
    for stage in stages:
        users = [text for instruction, text in stage if instruction == "USER"]
        if not users:
            continue
        args = _args(stage)
        user = re.sub(
            r"\$\{?(\w+)\}?", lambda m, args=args: args.get(m.group(1), m.group(0)), users[-1]
        )
        assert user.split(":")[0] not in ("root", "0"), f"{stage[0][1]}: ends as {user}"
        assert "$" not in user, user
    assert final[-1][0] in ("CMD", "ENTRYPOINT", "USER", "EXPOSE")
    cmd = [text for instruction, text in final if instruction == "CMD"][-1]
    assert json.loads(cmd) == ["jupyterhub-singleuser"]


def test_dockerfile_installs_with_the_lock() -> None:
    runs = [text for instruction, text in _instructions(DOCKERFILE) if instruction == "RUN"]
    installs = [run for run in runs if "pip install" in run or "pip wheel" in run]
    assert installs
    for run in installs:
        # With the lock as constraints, or the toolkit alone (--no-deps: the hub image's own).
        assert "requirements.lock" in run or "--no-deps" in run, run
    final = [text for instruction, text in _stages(DOCKERFILE)[-1] if instruction == "RUN"]
    (install,) = [run for run in final if "pip install" in run]
    assert re.search(r"-c \S*requirements\.lock", install)
    assert "[${EXTRAS}]" in install and "jupyterhub" in install.split("requirements.lock", 1)[1]
    assert _args(_stages(DOCKERFILE)[-1])["EXTRAS"] == "jupyter"


def test_dockerfile_holds_no_secret() -> None:
    for instruction, text in _instructions(DOCKERFILE):
        if instruction == "ARG":
            names = [text.split("=", 1)[0]]
        elif instruction == "ENV":
            names = [part.split("=", 1)[0] for part in shlex.split(text)]
        elif instruction == "RUN":
            names = re.findall(r"\b([A-Z][A-Z0-9_]*)=", text)
        else:
            continue
        for name in names:
            assert not re.search(r"KEY|TOKEN|PASSWORD|PASSWD|SECRET|CREDENTIAL", name.upper()), (
                f"{instruction} {name}: secrets come from Kubernetes Secrets at run time"
            )


def test_dockerfile_copies_files_that_exist() -> None:
    ignored = [
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = 0
    for instruction, text in _instructions(DOCKERFILE):
        if instruction not in ("COPY", "ADD"):
            continue
        words = [w for w in shlex.split(text) if not w.startswith("--")]
        if "--from=" in text:
            continue  # from another stage
        for source in words[:-1]:
            assert (ROOT / source).exists(), f"COPY {source}: no such file"
            for pattern in ignored:
                assert not fnmatch.fnmatch(source.rstrip("/"), pattern), (source, pattern)
            copied += 1
    assert copied


def test_dockerignore_keeps_state_and_build_output_out() -> None:
    ignored = {line.strip() for line in DOCKERIGNORE.read_text().splitlines()}
    for entry in (
        ".git",
        ".venv",
        "jupyterhub/.state",
        "jupyterhub/node_modules",
        "labextension/node_modules",
        "qmlops_jupyter/labextension",
    ):
        assert entry in ignored, entry


# -- Binder ---------------------------------------------------------------------------------------


def test_binder_post_build_is_an_executable_script() -> None:
    post_build = BINDER / "postBuild"
    assert os.access(post_build, os.X_OK) and post_build.stat().st_mode & 0o111
    text = post_build.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    subprocess.run(["bash", "-n", str(post_build)], check=True)
    assert re.search(r'pip install [^\n]*-c requirements\.lock "\.\[jupyter\]"', text)
    check = ROOT / "scripts" / "check-binder.sh"
    assert os.access(check, os.X_OK) and check.read_text().startswith("#!/usr/bin/env bash\n")
    subprocess.run(["bash", "-n", str(check)], check=True)


def test_binder_requirements_are_pinned_by_the_lock() -> None:
    lines = [
        line.split("#", 1)[0].strip()
        for line in (BINDER / "requirements.txt").read_text().splitlines()
    ]
    lines = [line for line in lines if line]
    assert lines[0] == "-c ../requirements.lock"
    locked = {
        re.split(r"[=<>!~\[; ]", line, maxsplit=1)[0].lower().replace("_", "-")
        for line in (ROOT / "requirements.lock").read_text().splitlines()
        if line and not line.startswith("#")
    }
    for requirement in lines[1:]:
        assert requirement.lower().replace("_", "-") in locked, requirement


def test_binder_python_is_the_lock_s() -> None:
    # repo2docker ignores pyproject.toml's requires-python when binder/ exists.
    assert (BINDER / "runtime.txt").read_text().strip() == "python-3.11"
