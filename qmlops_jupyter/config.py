"""Where qmlops_jupyter keeps its state, and the backend config file.

Environment variables (all optional):

- ``QMLOPS_HOME``: the state folder (default ``<jupyter data dir>/qmlops``);
- ``QMLOPS_DATABASE_URL``: a SQLAlchemy URL for the ledger (default: SQLite in the home);
- ``QMLOPS_BACKENDS_FILE``: the backend config file (default ``<home>/backends.yaml``);
- ``QMLOPS_OWNER``: the owner recorded on new rows (default: the OS user name);
- ``QMLOPS_LOG_FORMAT``: ``text`` (default) or ``json``;
- ``QMLOPS_CONFIG_FILE``: the settings file (default ``<home>/config.yaml``; see
  :class:`ConfigFile`);
- ``MLFLOW_TRACKING_URI``, ``MLFLOW_EXPERIMENT_NAME``, ``QMLOPS_TRACKING`` (``off`` turns
  tracking off): see :mod:`qmlops_jupyter.tracking`;
- ``QMLOPS_WEBHOOK_URL``: the webhook called when a pipeline run or a job ends (wins over
  ``notifications.webhook_url``; ``off`` turns it off): see :class:`NotificationsSection`.
"""

from __future__ import annotations

import getpass
import os
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from .errors import ConfigError, one_line
from .paths import resolve_home

M = TypeVar("M", bound=BaseModel)

DEFAULT_BACKENDS_YAML = """\
# Backends qmlops_jupyter may use, and their limits. Checked before anything is submitted.
#   enabled              false hides the backend and refuses jobs for it
#   max_qubits           widest circuit accepted (state-vector memory is checked too)
#   max_concurrent_jobs  jobs of this backend in flight at once, across all engines
#   max_shots            most shots one job may ask for
#   job_timeout          seconds a job may run before it is cancelled and failed (optional)
#   options              passed to the provider's SDK or API (see docs/backends/)
# Every installed backend can be used without an entry here (`qmlops backends` lists them);
# an entry sets its limits. Names are `plugin` or `plugin:device`.
backends:
  aer:
    enabled: true
    max_qubits: 30
    max_concurrent_jobs: 10
    max_shots: 100000
#  ibm:ibm_brisbane:            # token: qmlops creds set ibm-main --provider ibm
#    max_concurrent_jobs: 3
#    options: {channel: ibm_quantum_platform, instance: "crn:..."}
#  braket:sv1:                  # keys: qmlops creds set aws-lab --provider aws
#    options: {region: us-east-1, s3_bucket: amazon-braket-my-bucket}
#  ionq:qpu.aria-1:             # key: echo KEY | qmlops creds set ionq --provider ionq
#    max_shots: 10000
#    job_timeout: 86400
#    options: {timeout: 30}
#  pennylane:lightning.qubit:
#    max_qubits: 26
"""


class BackendConfig(BaseModel):
    """One backend's entry in ``backends.yaml``."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    max_qubits: int | None = Field(default=None, ge=1)
    max_concurrent_jobs: int = Field(default=10, ge=1)
    max_shots: int = Field(default=100_000, ge=1)
    job_timeout: float | None = Field(default=None, gt=0)
    #: Options passed to the provider SDK as they are (for Aer: ``method``, ``device`` ...).
    options: dict[str, Any] = Field(default_factory=dict)


class BackendsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backends: dict[str, BackendConfig] = Field(default_factory=dict)


def load_backends_file(path: Path) -> BackendsFile:
    """Read and check ``backends.yaml``; a missing file means the built-in defaults."""
    import yaml

    if not path.exists():
        return BackendsFile.model_validate(yaml.safe_load(DEFAULT_BACKENDS_YAML))
    return _load_yaml(path, BackendsFile, "a mapping with a 'backends' key")


def _load_yaml(path: Path, model: type[M], expected: str) -> M:
    """A YAML settings file checked against ``model``: every problem is a one-line
    ConfigError naming the file and the offending key."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML: {one_line(exc)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected {expected}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path}: {where}: {first['msg']}") from None


class TrackingSection(BaseModel):
    """``tracking:`` in ``config.yaml``. The environment wins over the file."""

    model_config = ConfigDict(extra="forbid")

    #: Log every completed job to MLflow (``QMLOPS_TRACKING=off`` turns it off too).
    enabled: bool = True
    #: An MLflow tracking URI; default: the embedded SQLite store under QMLOPS_HOME.
    uri: str | None = None
    #: Where a local store keeps artifacts (default ``<home>/mlflow/artifacts``).
    artifact_root: str | None = None
    #: The experiment jobs are logged to outside ``track()`` (default ``qmlops``).
    experiment: str = Field(default="qmlops", min_length=1, max_length=256)


#: Ends a notification can be about, and the states they end in.
NOTIFICATION_KINDS = ("pipeline_run", "job")
END_STATES = ("COMPLETED", "FAILED", "TIMED_OUT", "CANCELLED")
WEBHOOK_ENV = "QMLOPS_WEBHOOK_URL"


def check_webhook_url(url: str) -> str:
    """``url`` if it is an absolute http(s) URL with a host; a ValueError that does not repeat
    it otherwise (a webhook URL often carries its token)."""
    url = url.strip()
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError on a port that is not a number
    except ValueError:
        raise ValueError("not a valid URL") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL")
    if not parts.hostname or any(c.isspace() for c in url):
        raise ValueError("must be an http:// or https:// URL with a host and no spaces")
    return url


def register_webhook_url(url: str) -> None:
    """Let redaction mask the webhook URL wherever it could show up: whole, without its
    scheme, its path and query (where Slack- and Teams-style URLs keep their token), and any
    long path segment, query value or password in it."""
    from .vault import redaction

    parts = urllib.parse.urlsplit(url)
    tail = url.split("://", 1)[-1]
    after_host = tail[len(parts.netloc) :]
    pieces = [url, tail, after_host if after_host not in ("", "/") else None, parts.query]
    pieces += [s for s in parts.path.split("/") if len(s) >= 16]
    pieces += [v for _, v in urllib.parse.parse_qsl(parts.query) if len(v) >= 8]
    pieces += [parts.password, urllib.parse.unquote(parts.password or "") or None]
    redaction.register(*pieces)


class NotificationsSection(BaseModel):
    """``notifications:`` in ``config.yaml``: what happens when a pipeline run or a job ends.

    Every end is recorded (a log event and a row in the ledger's ``notifications`` table);
    with a webhook, the ends chosen by ``events`` and ``states`` are also POSTed to it as JSON,
    with retries. ``QMLOPS_WEBHOOK_URL`` wins over ``webhook_url``. The URL is a secret: it is
    never logged, stored or shown (only its scheme and host are).
    """

    model_config = ConfigDict(extra="forbid")

    #: An http(s) URL to POST each end to (Slack- and Teams-style incoming webhooks work).
    webhook_url: SecretStr | None = None
    #: Which ends are sent: ``pipeline_run``, ``job`` (default both).
    events: list[Literal["pipeline_run", "job"]] = Field(
        default_factory=lambda: list(NOTIFICATION_KINDS)
    )
    #: Send only ends in these states (``COMPLETED``, ``FAILED``, ``TIMED_OUT``,
    #: ``CANCELLED``); None: every end.
    states: list[str] | None = None
    #: Seconds one delivery may take.
    timeout: float = Field(default=10.0, gt=0, le=300)
    #: Deliveries tried before giving up (the first included).
    max_attempts: int = Field(default=10, ge=1, le=100)
    #: Seconds before the first retry; doubled each time (with jitter), at most an hour.
    retry_delay: float = Field(default=10.0, ge=0, le=3600)

    @field_validator("webhook_url", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        if value is not None and not isinstance(value, str | SecretStr):
            raise ValueError("must be a URL (a string)")
        return value

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        url = check_webhook_url(value.get_secret_value())
        register_webhook_url(url)
        return SecretStr(url)

    @field_validator("states")
    @classmethod
    def _known_states(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        states = [s.strip().upper() for s in value]
        for state in states:
            if state not in END_STATES:
                raise ValueError(
                    f"unknown state {state!r}; expected some of {', '.join(END_STATES)}"
                )
        return states


class ConfigFile(BaseModel):
    """``config.yaml`` in QMLOPS_HOME: settings that are not about one backend."""

    model_config = ConfigDict(extra="forbid")

    tracking: TrackingSection = Field(default_factory=TrackingSection)
    notifications: NotificationsSection = Field(default_factory=NotificationsSection)


def with_environment(config: ConfigFile) -> ConfigFile:
    """``config`` with the environment's overrides applied (``QMLOPS_WEBHOOK_URL``)."""
    value = os.environ.get(WEBHOOK_ENV, "").strip()
    if not value:
        return config
    if value.lower() in ("off", "none", "false", "0"):
        url = None
    else:
        try:
            url = SecretStr(check_webhook_url(value))
        except ValueError as exc:
            raise ConfigError(f"{WEBHOOK_ENV}: {exc}") from None
        register_webhook_url(url.get_secret_value())
    notifications = config.notifications.model_copy(update={"webhook_url": url})
    return config.model_copy(update={"notifications": notifications})


def load_config_file(path: Path) -> ConfigFile:
    """Read and check ``config.yaml``; a missing file means the defaults."""
    if not path.exists():
        return ConfigFile()
    return _load_yaml(path, ConfigFile, "a mapping (for example a 'tracking' key)")


@dataclass(frozen=True)
class Settings:
    """Resolved settings of one process. Build with :meth:`from_env`."""

    home: Path
    database_url: str
    backends_file: Path
    owner: str
    log_format: str = "text"
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        env = os.environ
        home = resolve_home(overrides.pop("home", None))
        url = overrides.pop("database_url", None) or env.get("QMLOPS_DATABASE_URL")
        if not url:
            url = f"sqlite:///{home / 'ledger.sqlite'}"
        backends_file = Path(
            overrides.pop("backends_file", None)
            or env.get("QMLOPS_BACKENDS_FILE")
            or home / "backends.yaml"
        )
        owner = overrides.pop("owner", None) or env.get("QMLOPS_OWNER") or _os_user()
        log_format = overrides.pop("log_format", None) or env.get("QMLOPS_LOG_FORMAT") or "text"
        if log_format not in ("text", "json"):
            raise ConfigError(f"QMLOPS_LOG_FORMAT must be 'text' or 'json', not {log_format!r}")
        return cls(home, url, backends_file, owner, log_format, overrides)

    def environment(self) -> dict[str, str]:
        """The variables that make a child process (a runner, a notebook's kernel) use these
        settings: the same home, ledger, backends file and owner."""
        return {
            "QMLOPS_HOME": str(self.home),
            "QMLOPS_DATABASE_URL": self.database_url,
            "QMLOPS_BACKENDS_FILE": str(self.backends_file),
            "QMLOPS_OWNER": self.owner,
        }

    def ensure_home(self) -> None:
        """Create the home folder (private to its user) and a commented ``backends.yaml``."""
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        default_file = self.home / "backends.yaml"
        if self.backends_file == default_file and not default_file.exists():
            try:
                with open(default_file, "x", encoding="utf-8") as fh:
                    fh.write(DEFAULT_BACKENDS_YAML)
            except FileExistsError:
                pass

    def backends(self) -> BackendsFile:
        return load_backends_file(self.backends_file)

    @property
    def config_file(self) -> Path:
        return Path(os.environ.get("QMLOPS_CONFIG_FILE") or self.home / "config.yaml")

    def config(self) -> ConfigFile:
        """``config.yaml`` with the environment's overrides (see :func:`with_environment`)."""
        return with_environment(load_config_file(self.config_file))


def _os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in some containers
        return f"uid{os.getuid()}"
