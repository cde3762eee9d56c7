"""Request bodies of the REST API, as pydantic models (the OpenAPI spec's request schemas are
checked against them in the tests).

Handlers import this module when a request arrives, not when the extension loads: pydantic and
its plugin discovery cost about 0.1 s, which the server's start-up should not pay.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

#: Seeds the simulators accept (NumPy's range).
MAX_SEED = 2**32 - 1


def _whole(value: Any) -> Any:
    """JSON has one number type: 1000.0 is the whole number 1000 (as JSON Schema's integer
    says), while true, "1000" and 1000.5 stay wrong."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


#: An integer field of a request body (models are strict: no strings or booleans for numbers).
WholeNumber = Annotated[int, BeforeValidator(_whole)]
#: OpenQASM 2 or 3 text, one per circuit.
Circuits = Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]


class JobRequest(BaseModel):
    """The body of ``POST /jobs``: what ``qmlops submit`` takes, circuits as OpenQASM text."""

    model_config = ConfigDict(extra="forbid", strict=True)

    backend: str = Field(min_length=1, max_length=128)
    circuits: Circuits
    shots: WholeNumber = Field(ge=1)
    name: str | None = Field(default=None, max_length=256)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=256)
    credential: str | None = Field(default=None, min_length=1, max_length=64)
    tags: dict[str, str] | None = None
    seed: WholeNumber | None = Field(default=None, ge=0, le=MAX_SEED)
    observables: list[str] | None = None
    job_timeout: float | None = Field(default=None, gt=0, le=30 * 86400)
    #: Where the job came from, as the caller knows it (a kernel: its notebook, git state,
    #: tracked run); without it, the server records its own view.
    lineage: dict[str, Any] | None = None


#: Ceilings that keep a limit a number every database and JSON reader holds exactly.
MAX_SHOTS_PER_DAY = 10**15
MAX_USD_PER_MONTH = 1e12


class BudgetRequest(BaseModel):
    """The body of ``PUT /budget``: limits not given keep their values; ``backend`` null (or
    absent) is the budget for all backends together."""

    model_config = ConfigDict(extra="forbid", strict=True)

    backend: str | None = Field(default=None, min_length=1, max_length=128)
    shots_per_day: WholeNumber | None = Field(default=None, ge=0, le=MAX_SHOTS_PER_DAY)
    usd_per_month: float | None = Field(default=None, ge=0, le=MAX_USD_PER_MONTH)


class EstimateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    backend: str = Field(min_length=1, max_length=128)
    circuits: Circuits
    shots: WholeNumber = Field(ge=1)


class CredentialRequest(BaseModel):
    """The body of ``PUT /credentials/{alias}``; ``secret`` holds the provider's fields (ibm:
    token, channel, instance; aws: aws_access_key_id, aws_secret_access_key, aws_session_token,
    region; ionq: api_key), checked by the vault, which names any unknown or missing one."""

    model_config = ConfigDict(extra="forbid", strict=True)

    provider: str
    secret: dict[str, str]


class PipelineCreateRequest(BaseModel):
    """The body of ``POST /pipelines``: what ``qmlops pipeline schedule`` takes. ``notebook``
    is a path (on a single-user server: absolute, or under the server's root); ``content`` the
    notebook itself (nbformat 4 JSON), which a team's service keeps as the pipeline's copy:
    it never reads a user's files."""

    model_config = ConfigDict(extra="forbid")

    cron: str = Field(min_length=1, max_length=256)
    notebook: str = Field(min_length=1, max_length=4096)
    content: dict[str, Any] | None = None
    name: str | None = Field(default=None, max_length=128)
    parameters: dict[str, Any] = Field(default_factory=dict)
    backend: str | None = Field(default=None, max_length=128)
    credential: str | None = Field(default=None, max_length=128)
    experiment: str | None = Field(default=None, max_length=256)
    timeout: float | None = None
    retries: int = 0
    timezone: str = "UTC"
    catch_up: str = "once"
    stale_after: float = 86400.0
