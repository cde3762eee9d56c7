# A team's qmlops on one machine: `make hub` (everything on 127.0.0.1).
#
#   browser -> configurable-http-proxy :QMLOPS_HUB_PORT -> /hub/  login, spawning, roles
#                                                     -> /user/NAME/  a user's JupyterLab
#                                                     -> /services/qmlops/  the engine host
#                                                     -> /services/mlflow/  MLflow (hub login)
#
# The `qmlops` service hosts the one engine, the ledger (PostgreSQL), the vault, budgets and
# pipeline schedules for everyone, so jobs and schedules run while a user's server is stopped or
# culled. User servers run the extension in service mode (QMLOPS_SERVICE_URL): their sidebar,
# magics, widgets and pipelines talk to the service with their hub token.
#
# Every setting below is read from a QMLOPS_HUB_* / QMLOPS_* variable with a default that works on
# a developer's machine; docs/hub.md explains each, and jupyterhub/k8s/values.yaml carries the
# same settings for Zero to JupyterHub.
import os
import sys
from pathlib import Path

from qmlops_jupyter.access import ADMIN, READ, WRITE

c = get_config()  # noqa: F821 - given by JupyterHub when it loads this file

HERE = Path(__file__).resolve().parent
STATE = Path(os.environ.get("QMLOPS_HUB_STATE") or HERE / ".state").resolve()
STATE.mkdir(parents=True, exist_ok=True, mode=0o700)
HUB_PORT = int(os.environ.get("QMLOPS_HUB_PORT", "8000"))
PUBLIC = f"http://127.0.0.1:{HUB_PORT}"


def _names(variable: str, default: str = "") -> list[str]:
    return [n.strip() for n in os.environ.get(variable, default).split(",") if n.strip()]


def _port(variable: str, default: int) -> int:
    return int(os.environ.get(variable, str(default)))


# -- the hub and its proxy ------------------------------------------------------------------------
c.JupyterHub.bind_url = PUBLIC
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = _port("QMLOPS_HUB_API_PORT", 8081)
c.JupyterHub.db_url = (
    os.environ.get("QMLOPS_HUB_DB_URL") or f"sqlite:///{STATE / 'jupyterhub.sqlite'}"
)
c.JupyterHub.cookie_secret_file = str(STATE / "jupyterhub_cookie_secret")
c.JupyterHub.log_level = os.environ.get("QMLOPS_HUB_LOG_LEVEL", "INFO")
c.ConfigurableHTTPProxy.command = [
    os.environ.get("QMLOPS_HUB_PROXY")
    or str(HERE / "node_modules" / ".bin" / "configurable-http-proxy")
]
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{_port('QMLOPS_HUB_PROXY_API_PORT', 8001)}"
c.ConfigurableHTTPProxy.pid_file = str(STATE / "proxy.pid")

# -- who may log in -------------------------------------------------------------------------------
ADMINS = _names("QMLOPS_HUB_ADMINS", "admin")
USERS = _names("QMLOPS_HUB_USERS")
VIEWERS = _names("QMLOPS_HUB_VIEWERS")
authenticator = os.environ.get("QMLOPS_HUB_AUTHENTICATOR", "native")
if authenticator == "native":
    # NativeAuthenticator: people sign up at /hub/signup; an admin approves them at
    # /hub/authorize. (For a lab with GitHub, Google or a university login, see docs/hub.md:
    # OAuthenticator.)
    import nativeauthenticator

    c.JupyterHub.authenticator_class = "qmlops_jupyter.server.hub.native.LabAuthenticator"
    c.JupyterHub.template_paths = [str(Path(nativeauthenticator.__file__).parent / "templates")]
    c.NativeAuthenticator.open_signup = False
    c.NativeAuthenticator.minimum_password_length = 10
    c.NativeAuthenticator.check_common_password = True
    c.NativeAuthenticator.allowed_failed_logins = 5
    c.Authenticator.allow_all = True  # signing up needs an admin's approval
elif authenticator == "shared-password":
    # One password for every user: for automated tests on loopback only.
    if os.environ.get("QMLOPS_HUB_TESTING") != "1":
        sys.exit("QMLOPS_HUB_AUTHENTICATOR=shared-password is for tests (QMLOPS_HUB_TESTING=1)")
    c.JupyterHub.authenticator_class = "shared-password"
    c.SharedPasswordAuthenticator.user_password = os.environ["QMLOPS_HUB_TEST_PASSWORD"]
    c.SharedPasswordAuthenticator.admin_password = os.environ.get("QMLOPS_HUB_TEST_ADMIN_PASSWORD")
    c.Authenticator.allowed_users = set(USERS + VIEWERS + ADMINS)
else:
    c.JupyterHub.authenticator_class = authenticator  # e.g. "github" (OAuthenticator)
c.Authenticator.admin_users = set(ADMINS)

# -- roles: qmlops's custom scopes, granted through groups ---------------------------------------
c.JupyterHub.custom_scopes = {
    READ: {
        "description": "Read qmlops jobs, runs, pipelines and budgets (of the users filtered to)."
    },
    WRITE: {
        "description": "Submit and cancel jobs, keep credentials, set budgets, save pipelines."
    },
    ADMIN: {"description": "Read every user's qmlops work; cancel any job; set any budget."},
}
SERVICE_ACCESS = ["access:services!service=qmlops", "access:services!service=mlflow"]
c.JupyterHub.load_groups = {
    "qmlops-users": {"users": USERS},
    "qmlops-viewers": {"users": VIEWERS},
    "qmlops-admins": {"users": ADMINS},
}
roles = [
    {
        "name": "qmlops-user",
        "description": "Own credentials, jobs, runs, pipelines and budget.",
        "scopes": ["access:services!service=qmlops", f"{READ}!user", f"{WRITE}!user"],
        "groups": ["qmlops-users"],
    },
    {
        "name": "qmlops-viewer",
        "description": "Read-only: the jobs and runs granted (QMLOPS_HUB_GRANTS), dashboards.",
        "scopes": ["access:services!service=qmlops", f"{READ}!user"],
        "groups": ["qmlops-viewers"],
    },
    {
        "name": "qmlops-admin",
        "description": "Everything, every user's jobs and budgets; never anyone's secrets.",
        "scopes": [*SERVICE_ACCESS, ADMIN, f"{READ}!user", f"{WRITE}!user"],
        "groups": ["qmlops-admins"],
    },
    {
        "name": "qmlops-service",
        "description": "The engine host: identifies callers; logs runs to MLflow.",
        "scopes": ["access:services!service=mlflow"],
        "services": ["qmlops"],
    },
    {
        "name": "idle-culler",
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
        "services": ["idle-culler"],
    },
]
# QMLOPS_HUB_GRANTS="carol=alice+bob;erin=alice": what each viewer may read.
for grant in filter(None, os.environ.get("QMLOPS_HUB_GRANTS", "").split(";")):
    viewer, _, granted = grant.partition("=")
    roles.append(
        {
            "name": f"qmlops-grant-{viewer.strip()}",
            "scopes": [
                f"{READ}!user={name.strip()}" for name in granted.split("+") if name.strip()
            ],
            "users": [viewer.strip()],
        }
    )
c.JupyterHub.load_roles = roles

# -- the shared state: ledger, key, MLflow ------------------------------------------------------
LEDGER_URL = os.environ.get(
    "QMLOPS_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/qmlops"
)
MLFLOW_STORE = os.environ.get(
    "QMLOPS_MLFLOW_BACKEND_URI", "postgresql+psycopg://postgres@127.0.0.1:5432/qmlops_mlflow"
)
SERVICE_HOME = STATE / "qmlops"
SERVICE_HOME.mkdir(parents=True, exist_ok=True, mode=0o700)
crypt_key = os.environ.get("QMLOPS_CRYPT_KEY")
if not crypt_key:
    # The operator's key (docs/hub.md: keys and rotation); a trial keeps one in the state folder.
    key_file = STATE / "crypt.key"
    if not key_file.exists():
        from cryptography.fernet import Fernet

        key_file.touch(mode=0o600)
        key_file.write_text(Fernet.generate_key().decode())
    crypt_key = key_file.read_text().strip()
if os.environ.get("QMLOPS_HUB_CREATE_DATABASES") == "1":
    from qmlops_jupyter.ledger.store import ensure_database

    ensure_database(LEDGER_URL)
    ensure_database(MLFLOW_STORE)

SERVICE_PORT = _port("QMLOPS_HUB_SERVICE_PORT", 10101)
MLFLOW_PORT = _port("QMLOPS_HUB_MLFLOW_PORT", 10102)
c.JupyterHub.services = [
    {
        "name": "qmlops",
        "url": f"http://127.0.0.1:{SERVICE_PORT}",
        "command": [sys.executable, "-m", "qmlops_jupyter.server.hub.service"],
        "environment": {
            "QMLOPS_DATABASE_URL": LEDGER_URL,
            "QMLOPS_HOME": str(SERVICE_HOME),
            "QMLOPS_CRYPT_KEY": crypt_key,
            "MLFLOW_TRACKING_URI": f"{PUBLIC}/services/mlflow",
            "QMLOPS_LEASE_TTL": os.environ.get("QMLOPS_LEASE_TTL", "30"),
        },
    },
    {
        "name": "mlflow",
        "url": f"http://127.0.0.1:{MLFLOW_PORT}",
        "command": [sys.executable, "-m", "qmlops_jupyter.server.hub.mlflow_service"],
        "environment": {
            "QMLOPS_MLFLOW_BACKEND_URI": MLFLOW_STORE,
            "QMLOPS_MLFLOW_ARTIFACTS": os.environ.get(
                "QMLOPS_MLFLOW_ARTIFACTS", str(STATE / "mlflow-artifacts")
            ),
        },
        "oauth_no_confirm": True,
        # A browser's login to the MLflow UI carries the admin scope the proxy asks for.
        "oauth_client_allowed_scopes": [ADMIN],
    },
    {
        "name": "idle-culler",
        "command": [
            sys.executable,
            "-m",
            "jupyterhub_idle_culler",
            f"--timeout={os.environ.get('QMLOPS_HUB_CULL_TIMEOUT', '3600')}",
            f"--cull-every={os.environ.get('QMLOPS_HUB_CULL_EVERY', '300')}",
        ],
    },
]

if os.environ.get("QMLOPS_HUB_PROMETHEUS_TOKEN"):
    # Prometheus scrapes the service's /metrics with this token (deploy/prometheus/hub.yml).
    c.JupyterHub.services.append(
        {"name": "prometheus", "api_token": os.environ["QMLOPS_HUB_PROMETHEUS_TOKEN"]}
    )
    c.JupyterHub.load_roles.append(
        {
            "name": "prometheus",
            "scopes": ["access:services!service=qmlops", "read:metrics"],
            "services": ["prometheus"],
        }
    )

# -- users' servers ------------------------------------------------------------------------------
spawner = os.environ.get("QMLOPS_HUB_SPAWNER", "simple")
c.JupyterHub.spawner_class = spawner
if spawner == "simple":
    # Every user's server runs as the hub's own Unix user, in a folder of its own: for a trial
    # and for tests. A lab uses "localprocess" (one Unix account per user) or KubeSpawner.
    c.SimpleLocalProcessSpawner.home_dir_template = str(STATE / "users" / "{username}")
c.Spawner.cmd = [str(Path(sys.executable).with_name("jupyterhub-singleuser"))]
c.Spawner.default_url = "/lab"
c.Spawner.http_timeout = 60
c.Spawner.start_timeout = 120
if hasattr(os, "geteuid") and os.geteuid() == 0:
    c.Spawner.args = ["--allow-root"]
# The token a user's server gets carries the user's qmlops scopes (the hub keeps only the part
# the user holds) and access to the two services.
c.Spawner.server_token_scopes = [
    "users:activity!user",
    "access:servers!server",
    *SERVICE_ACCESS,
    READ,
    WRITE,
    ADMIN,
]
c.Spawner.environment = {
    "QMLOPS_SERVICE_URL": f"{PUBLIC}/services/qmlops/",
    "QMLOPS_HOME": lambda spawner: str(STATE / "users" / spawner.user.name / ".qmlops"),
}
if os.environ.get("QMLOPS_HUB_TESTING") == "1" and os.environ.get("QMLOPS_HUB_TEST_API_TOKEN"):
    # Tests drive the hub's REST API (users' tokens, starting and stopping servers) as a service.
    c.JupyterHub.services.append(
        {"name": "qmlops-tests", "api_token": os.environ["QMLOPS_HUB_TEST_API_TOKEN"]}
    )
    c.JupyterHub.load_roles.append(
        {
            "name": "qmlops-tests",
            "scopes": ["admin:users", "admin:servers", "tokens", "read:users", "list:users"],
            "services": ["qmlops-tests"],
        }
    )
