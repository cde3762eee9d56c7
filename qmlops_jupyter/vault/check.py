"""Asking a provider whether it accepts a stored credential (``qmlops creds test``, ``POST
/qmlops/api/v1/credentials/{alias}/test``, the credential widget): one cheap, read-only call
per provider, a few seconds at most. The secret is decrypted for that call only and never
appears in what is returned or raised.
"""

from __future__ import annotations

from typing import Any

from ..errors import AuthProviderError, BackendUnavailable, InvalidRequest, TransientProviderError

#: Seconds a test waits on a provider before saying it cannot be reached.
TEST_TIMEOUT = 5.0
IBM_IAM_URL = "https://iam.cloud.ibm.com/identity/token"


def check_credential(client: Any, alias: str, backend: str | None = None) -> str:
    """What the provider said when it accepted credential ``alias`` (of ``client``'s owner);
    raises AuthProviderError when it refused it, BackendUnavailable when it could not be
    reached, CredentialNotFound for an unknown alias. ``backend`` picks the IonQ endpoint
    (default ``ionq:simulator``'s)."""
    from .redaction import redact

    vault = client.vault
    provider = vault.info(alias).provider
    fields = vault.resolve(alias, provider)
    try:
        if provider == "ionq":
            return _ionq(client, fields, backend or "ionq:simulator")
        if provider == "ibm":
            return _ibm(fields)
        return _aws(fields)
    except (AuthProviderError, BackendUnavailable, TransientProviderError) as exc:
        raise type(exc)(redact(str(exc))) from None
    finally:
        fields.clear()


def _ionq(client: Any, fields: dict[str, str], backend_name: str) -> str:
    from ..backends.ionq import IonQApi, IonQBackend

    backend = client.registry.get(backend_name)
    if not isinstance(backend, IonQBackend):
        raise InvalidRequest(f"backend {backend_name} is not an IonQ backend")
    key = fields.get("api_key", "")
    api = IonQApi(backend.api_url, min(backend.timeout, TEST_TIMEOUT), lambda: key)
    try:
        jobs = api.jobs()
    except TransientProviderError as exc:
        raise BackendUnavailable(
            f"cannot reach provider IonQ at {backend.api_url}: {exc}"
        ) from None
    return f"IonQ at {backend.api_url} accepted it ({len(jobs)} job(s) visible)"


def _ibm(fields: dict[str, str]) -> str:
    """IBM Quantum Platform API keys are IBM Cloud API keys: IAM exchanges a good one for a
    bearer token."""
    try:
        import httpx
    except ImportError:
        raise BackendUnavailable(
            "testing an IBM credential needs httpx: pip install 'qmlops-jupyter[ionq]'"
        ) from None
    try:
        response = httpx.post(
            IBM_IAM_URL,
            data={
                "grant_type": "urn:ibm:params:oauth:grant-type:apikey",
                "apikey": fields.get("token", ""),
            },
            headers={"Accept": "application/json"},
            timeout=TEST_TIMEOUT,
        )
    except httpx.HTTPError as exc:
        raise BackendUnavailable(
            f"cannot reach provider IBM Quantum (IBM Cloud IAM at iam.cloud.ibm.com): "
            f"{type(exc).__name__}"
        ) from None
    if response.status_code in (400, 401, 403):
        raise AuthProviderError(f"IBM Cloud IAM refused the token ({response.status_code})")
    if response.status_code >= 300:
        raise BackendUnavailable(f"IBM Cloud IAM answered {response.status_code}; try again later")
    return "IBM Cloud IAM accepted the token"


def _aws(fields: dict[str, str]) -> str:
    """STS GetCallerIdentity: needs no permission, so it checks the keys alone."""
    try:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        raise BackendUnavailable(
            "testing an AWS credential needs boto3: pip install 'qmlops-jupyter[braket]'"
        ) from None
    region = fields.get("region") or "us-east-1"
    sts = boto3.Session(
        aws_access_key_id=fields.get("aws_access_key_id"),
        aws_secret_access_key=fields.get("aws_secret_access_key"),
        aws_session_token=fields.get("aws_session_token") or None,
        region_name=region,
    ).client(
        "sts",
        config=Config(
            connect_timeout=TEST_TIMEOUT,
            read_timeout=TEST_TIMEOUT,
            retries={"max_attempts": 1, "mode": "standard"},
        ),
    )
    try:
        identity = sts.get_caller_identity()
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "refused")
        raise AuthProviderError(f"AWS refused the keys ({code})") from None
    except BotoCoreError as exc:
        raise BackendUnavailable(
            f"cannot reach provider AWS (STS in {region}): {type(exc).__name__}"
        ) from None
    return f"AWS account {identity.get('Account', '?')} ({region})"
