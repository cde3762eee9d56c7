"""Typed errors of qmlops_jupyter.

Every error a user can cause or meet has its own class, mapped once to an HTTP status (for the
REST API) and a CLI exit code. Messages are one line, name what was wrong, and never contain a
secret.
"""

from __future__ import annotations

from typing import Any


def one_line(text: object) -> str:
    """Collapse any message (provider or parser output) to a single line."""
    return " ".join(str(text).split())


class QmlopsError(Exception):
    """Base class of every error qmlops_jupyter raises on purpose."""

    http_status = 500
    exit_code = 1
    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))

    @property
    def message(self) -> str:
        return str(self)


class InvalidRequest(QmlopsError):
    """The request itself is malformed (shots, names, options)."""

    http_status = 400
    exit_code = 2
    code = "invalid_request"


class InvalidCircuit(InvalidRequest):
    """Circuit text that does not parse, or a circuit object we cannot read."""

    code = "invalid_circuit"


class CircuitTooLarge(InvalidCircuit):
    """A circuit over a backend's qubit limit or over the memory this machine has."""

    http_status = 422
    code = "circuit_too_large"


class ConfigError(QmlopsError):
    """A configuration file or setting that cannot be used."""

    exit_code = 6
    code = "config_error"


class UnknownBackend(QmlopsError):
    http_status = 404
    exit_code = 3
    code = "unknown_backend"


class JobNotFound(QmlopsError):
    http_status = 404
    exit_code = 3
    code = "job_not_found"


class IdempotencyConflict(QmlopsError):
    """The idempotency key was already used for a different request."""

    http_status = 409
    exit_code = 4
    code = "idempotency_conflict"


class IllegalTransition(QmlopsError):
    """A state change the job state machine does not allow (for example, cancelling a finished
    job)."""

    http_status = 409
    exit_code = 4
    code = "illegal_transition"


class BackendUnavailable(QmlopsError):
    http_status = 503
    exit_code = 5
    code = "backend_unavailable"


class MissingBackendDependency(BackendUnavailable):
    """A backend whose SDK is not installed; the message carries the exact install hint."""

    code = "missing_dependency"


class WaitTimeout(QmlopsError):
    """Waiting for a job ran out of time; the job itself goes on (``.job``, when the wait was
    on a :class:`~qmlops_jupyter.client.Job`)."""

    http_status = 408
    exit_code = 7
    code = "wait_timeout"
    #: The job that is still going, where there is one.
    job: Any = None


class BudgetExceeded(QmlopsError):
    """A job that would take its owner over a budget (shots per day, dollars per month); it was
    refused before anything was written but the refusal."""

    http_status = 422  # a refusal of the request as it stands, like a limit
    exit_code = 9
    code = "budget_exceeded"


class JobFailed(QmlopsError):
    """The job ended FAILED or CANCELLED, or has no result to give."""

    http_status = 409
    exit_code = 8
    code = "job_failed"


class PipelineRunNotFound(QmlopsError):
    http_status = 404
    exit_code = 3
    code = "pipeline_run_not_found"


class PipelineNotFound(QmlopsError):
    """No saved pipeline of this owner has that name or id."""

    http_status = 404
    exit_code = 3
    code = "pipeline_not_found"


class PipelineExists(QmlopsError):
    """A saved pipeline of this owner already has that name."""

    http_status = 409
    exit_code = 4
    code = "pipeline_exists"


class Forbidden(QmlopsError):
    """The caller's role does not allow this (a viewer submitting, a user changing another
    user's job or budget)."""

    http_status = 403
    exit_code = 10
    code = "forbidden"


class PipelineRunFailed(QmlopsError):
    """The pipeline run ended FAILED, TIMED_OUT or CANCELLED (the exit code of a failed job);
    ``run`` is the run as it ended."""

    http_status = 409
    exit_code = 8
    code = "pipeline_run_failed"

    def __init__(self, message: str, run: Any) -> None:
        super().__init__(message)
        self.run = run


# --- Errors raised by backend adapters while talking to a provider. ---------------------------
# The engine decides what to do with a job from the class alone.


class ProviderError(QmlopsError):
    """Base of the errors an adapter raises when the provider misbehaves or refuses."""

    http_status = 502
    exit_code = 5
    code = "provider_error"
    kind = "permanent"


class TransientProviderError(ProviderError):
    """Retry later with backoff (rate limits, timeouts, 5xx)."""

    kind = "transient"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        #: Seconds the provider asked us to wait (HTTP Retry-After), when it said.
        self.retry_after = retry_after


class AuthProviderError(ProviderError):
    """The credential was refused: stop and tell the user."""

    kind = "auth"


class PermanentProviderError(ProviderError):
    """The provider rejected the job for good: fail it with the provider's message."""

    kind = "permanent"


class AmbiguousProviderError(ProviderError):
    """The outcome of a call is unknown (for example a submit whose reply never came)."""

    kind = "ambiguous"


# --- The credential vault. ---------------------------------------------------------------------


class VaultError(ConfigError):
    """The vault cannot be used: no key, a wrong key, a key file others can read. Fails closed:
    nothing is decrypted and nothing is written."""

    code = "vault_error"


class CredentialNotFound(QmlopsError):
    """No stored credential of this owner has that alias."""

    http_status = 404
    exit_code = 3
    code = "credential_not_found"


class NotReady(QmlopsError):
    """The server extension has not finished starting (or could not start: the reason says
    why); the request can be retried."""

    http_status = 503
    exit_code = 5
    code = "not_ready"


# --- Tracking. -----------------------------------------------------------------------------------


class TrackingUnavailable(QmlopsError):
    """The MLflow tracking store cannot be reached or used (jobs are unaffected: what they log
    waits in the tracking outbox)."""

    http_status = 503
    exit_code = 5
    code = "tracking_unavailable"


class ExperimentNotFound(QmlopsError):
    http_status = 404
    exit_code = 3
    code = "experiment_not_found"
