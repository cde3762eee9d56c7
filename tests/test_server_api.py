"""The REST API of the server extension, through a real Jupyter server (pytest_jupyter's
``jp_fetch``): every route, its success and each error status it can produce, a Bell job run end
to end by the server's own engine, credentials that go in and never come out, and every answer
checked against ``openapi.json`` (the document the server serves)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker
from qmlops_testing import BELL_QASM2, BELL_QASM3, free_port
from tornado import web
from traitlets.config import Config

from qmlops_jupyter.testing.ionq_emulator import EmulatorProcess, start_emulator

API = "qmlops/api/v1"
SPEC_FILE = Path(__file__).resolve().parent.parent / "qmlops_jupyter" / "server" / "openapi.json"
SECRET = "sk-ionq-rest-test-5b4c3d2e1f0a9"
WRONG = "sk-ionq-rest-wrong-000000000"
GHZ3 = BELL_QASM3.replace("qubit[2] q;", "qubit[3] q;").replace("bit[2] c;", "bit[3] c;")
#: Variables the server writes into this process's environment; put back after each test.
SERVER_ENV = (
    "QMLOPS_SERVER_URL",
    "QMLOPS_SERVER_TOKEN_FILE",
    "MLFLOW_TRACKING_URI",
    "IONQ_API_KEY",
    "QMLOPS_CRYPT_KEY",
    "QMLOPS_DATABASE_URL",
    "QMLOPS_OWNER",
)


# -- the server ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    with start_emulator(tmp_path_factory.mktemp("ionq"), api_key=SECRET) as emu:
        yield emu


@pytest.fixture
def run_engine() -> bool:
    """Whether the server hosts an engine (tests that need jobs to stay put turn it off)."""
    return True


@pytest.fixture
def tracking_uri() -> str | None:
    return None


@pytest.fixture
def qmlops_home(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, emulator: EmulatorProcess
) -> Path:
    """The server's QMLOPS_HOME (not pytest_jupyter's HOME), with a backends.yaml holding a
    one-qubit backend (422), a disabled one (503) and IonQ pointed at the local emulator."""
    path = tmp_path / "qmlops"
    path.mkdir()
    monkeypatch.setenv("QMLOPS_HOME", str(path))
    for var in SERVER_ENV:
        monkeypatch.setenv(var, "")  # recorded, so the teardown removes what the server sets
        monkeypatch.delenv(var)
    (path / "backends.yaml").write_text(
        "backends:\n"
        "  aer:\n"
        "    max_qubits: 30\n"
        "  ionq:simulator:\n"
        "    max_qubits: 1\n"
        "    options:\n"
        f"      api_url: {emulator.url}\n"
        "      timeout: 5\n"
        "  ionq:qpu.aria-1:\n"
        "    enabled: false\n",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def database_url() -> str | None:
    """The ledger's URL (None: SQLite in the home)."""
    return None


@pytest.fixture
def jp_server_config(
    qmlops_home: Path, run_engine: bool, tracking_uri: str | None, database_url: str | None
) -> Config:
    qmlops: dict[str, Any] = {"home": str(qmlops_home), "run_engine": run_engine}
    if tracking_uri:
        qmlops["tracking_uri"] = tracking_uri
    if database_url:
        qmlops["database_url"] = database_url
    return Config(
        {
            "ServerApp": {"jpserver_extensions": {"qmlops_jupyter": True}},
            "QmlopsApp": qmlops,
        }
    )


def qmlops_app(serverapp: Any) -> Any:
    (app,) = serverapp.extension_manager.extension_apps["qmlops_jupyter"]
    return app


@pytest.fixture
def started(jp_serverapp: Any, jp_asyncio_loop: Any) -> Any:
    """The server with its extensions started (pytest_jupyter initialises the server but does
    not run its post-start hook, where the ledger, the engine and the event pump start)."""
    jp_asyncio_loop.run_until_complete(jp_serverapp.extension_manager.start_all_extensions())
    return qmlops_app(jp_serverapp)


# -- calling it, and checking every answer against the spec -----------------------------------


class Spec:
    """openapi.json, able to check an answer against the schema it declares."""

    def __init__(self) -> None:
        self.doc = json.loads(SPEC_FILE.read_text(encoding="utf-8"))
        self._paths = [
            (re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", t) + "$"), t) for t in self.doc["paths"]
        ]

    def template(self, path: str) -> str:
        for regex, template in self._paths:
            if regex.match(path):
                return template
        raise AssertionError(f"{path} is not in openapi.json")

    def check(self, method: str, path: str, status: int, body: bytes) -> None:
        template = self.template(path)
        operation = self.doc["paths"][template].get(method.lower())
        assert operation is not None, f"{method} {template} is not in openapi.json"
        response = operation["responses"].get(str(status))
        assert response is not None, f"{method} {template} answered {status}, not in the spec"
        content = response.get("content")
        if content is None:
            assert not body, f"{method} {template} {status}: the spec declares no body"
            return
        schema = {**content["application/json"]["schema"], "components": self.doc["components"]}
        Draft202012Validator(schema, format_checker=FormatChecker()).validate(json.loads(body))


@dataclass
class Reply:
    status: int
    data: Any
    text: str


class Api:
    def __init__(self, fetch: Any, spec: Spec) -> None:
        self.fetch = fetch
        self.spec = spec
        self.seen: list[str] = []

    async def __call__(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        status: int | None = None,
    ) -> Reply:
        # Generous: the machine is shared, and a first look at MLflow imports it.
        kwargs: dict[str, Any] = {"method": method, "raise_error": False, "request_timeout": 120}
        if body is not None:
            kwargs["body"] = body if isinstance(body, str | bytes) else json.dumps(body)
        elif method in ("POST", "PUT"):
            kwargs["body"] = b""
        r = await self.fetch(API + path, params=params, headers=headers, **kwargs)
        text = r.body.decode() if r.body else ""
        self.seen.append(text)
        self.spec.check(method, path, r.code, r.body)
        if status is not None:
            assert r.code == status, f"{method} {path}: {r.code} {text}"
        return Reply(r.code, json.loads(text) if text else None, text)


@pytest.fixture
def api(started: Any, jp_fetch: Any) -> Api:
    return Api(jp_fetch, Spec())


def bell_job(**extra: Any) -> dict[str, Any]:
    return {"backend": "aer", "circuits": [BELL_QASM2], "shots": 1000, **extra}


async def error(
    api: Api, method: str, path: str, body: Any, status: int, code: str, **params: Any
) -> str:
    reply = await api(method, path, body, params=params or None, status=status)
    assert reply.data["error"] == code, reply.text
    assert "\n" not in reply.data["message"]
    return reply.data["message"]


# -- the spec itself -------------------------------------------------------------------------


def app_routes(serverapp: Any) -> dict[str, set[str]]:
    """``/qmlops/api/v1/...`` path (as in the spec) -> the methods its handler defines."""
    found: dict[str, set[str]] = {}
    for rule in serverapp.web_app.default_router.rules:
        for inner in getattr(rule.target, "rules", [rule]):
            pattern = inner.matcher.regex.pattern
            if API not in pattern:
                continue
            path = pattern.split(API, 1)[1].rstrip("$")
            path = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", path)
            handler = inner.target
            found[path] = {
                m
                for m in ("GET", "POST", "PUT", "DELETE", "PATCH")
                if getattr(handler, m.lower()) is not getattr(web.RequestHandler, m.lower())
            }
    return found


def test_the_spec_lists_every_route_and_method_the_app_registers(jp_serverapp: Any) -> None:
    spec = Spec().doc
    assert spec["openapi"].startswith("3.")
    routes = app_routes(jp_serverapp)
    assert len(routes) >= 10, routes
    declared = {
        path: {m.upper() for m in ops if m in ("get", "post", "put", "delete", "patch")}
        for path, ops in spec["paths"].items()
    }
    assert routes == declared
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert "403" in op["responses"], f"{method} {path} declares no 403"
            for status, response in op["responses"].items():
                if int(status) >= 400 and path != "/health":  # its 503 says which part is down
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (path, status)
    assert spec["components"]["securitySchemes"]["token"] == {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "the Jupyter server's token, as `token <t>`",
    }


def test_the_spec_schemas_have_the_fields_of_the_models() -> None:
    from qmlops_jupyter.cost.budgets import BudgetLimit, BudgetStatus
    from qmlops_jupyter.cost.estimate import Estimate
    from qmlops_jupyter.models import (
        BackendInfo,
        CircuitInfo,
        DashboardLink,
        DashboardLinks,
        JobEvent,
        JobRecord,
        JobResult,
    )
    from qmlops_jupyter.server.handlers.models import BudgetRequest, EstimateRequest, JobRequest
    from qmlops_jupyter.vault import CredentialInfo

    schemas = Spec().doc["components"]["schemas"]
    for model in (
        JobRecord,
        JobEvent,
        JobResult,
        CircuitInfo,
        BackendInfo,
        CredentialInfo,
        BudgetStatus,
        BudgetLimit,
        Estimate,
        JobRequest,
        EstimateRequest,
        BudgetRequest,
        DashboardLink,
        DashboardLinks,
    ):
        schema = schemas[model.__name__]
        assert set(schema["properties"]) == set(model.model_fields), model.__name__
    from qmlops_jupyter.vault import PROVIDERS

    variants = {
        v["properties"]["provider"]["const"]: v for v in schemas["CredentialRequest"]["oneOf"]
    }
    for name, provider in PROVIDERS.items():
        secret = variants[name]["properties"]["secret"]
        assert set(secret["properties"]) == set(provider.fields)
        assert set(secret["required"]) == set(provider.required)


async def test_openapi_and_health(api: Api) -> None:
    served = (await api("GET", "/openapi.json", status=200)).data
    file = Spec().doc
    assert served["servers"] == [{"url": f"/a%40b/{API}"}]  # pytest_jupyter's base_url
    assert {**served, "servers": file["servers"]} == file
    # 503 until the engine's first tick (each answer conforms either way), then 200.
    deadline = asyncio.get_running_loop().time() + 20
    while (reply := await api("GET", "/health")).status != 200:
        assert reply.status == 503 and asyncio.get_running_loop().time() < deadline, reply.text
        await asyncio.sleep(0.1)
    assert reply.data["ok"] and reply.data["engine"]["hosted"] and reply.data["ledger"]["ok"]


async def test_requests_wait_for_the_start_hook_and_health_says_starting(
    jp_serverapp: Any, jp_fetch: Any
) -> None:
    """The extension builds its client after the server listens: until then /health answers
    503 "starting" at once, and other requests wait for the client instead of failing."""
    api = Api(jp_fetch, Spec())
    app = qmlops_app(jp_serverapp)
    assert app.client is None
    starting = await api("GET", "/health", status=503)
    assert starting.data["starting"] is True and starting.data["ok"] is False
    listing = asyncio.ensure_future(api("GET", "/jobs"))
    await asyncio.sleep(0.3)
    assert not listing.done()  # waiting for the start hook
    await jp_serverapp.extension_manager.start_all_extensions()
    assert (await asyncio.wait_for(listing, 60)).status == 200
    reply = await api("GET", "/health")
    assert "starting" not in (reply.data or {}), reply.text
    await app.stop_extension()


@pytest.mark.parametrize("database_url", ["postgresql://nobody@127.0.0.1:9/nothing"])
async def test_a_ledger_that_cannot_open_is_503_not_ready(
    jp_serverapp: Any, jp_fetch: Any, database_url: str
) -> None:
    """A start hook that fails (the ledger's database is unreachable) leaves the server up and
    every qmlops route answering 503 with the reason on one line, never a 500."""
    api = Api(jp_fetch, Spec())
    await jp_serverapp.extension_manager.start_all_extensions()  # logs the failure, goes on
    message = await error(api, "GET", "/jobs", None, 503, "not_ready")
    assert message.startswith("the qmlops extension could not start:"), message
    assert "127.0.0.1" in message or "connect" in message.lower(), message
    await error(api, "POST", "/jobs", bell_job(), 503, "not_ready")
    health = await api("GET", "/health", status=503)
    assert health.data["starting"] is False and health.data["ledger"]["error"]
    assert (await api("GET", "/openapi.json")).status == 200


# -- jobs ------------------------------------------------------------------------------------


async def test_a_bell_job_runs_end_to_end(api: Api) -> None:
    reply = await api(
        "POST", "/jobs", bell_job(name="bell", seed=7), params={"wait": 30}, status=201
    )
    job = reply.data
    assert job["state"] == "COMPLETED", job
    assert job["name"] == "bell" and job["backend"] == "aer" and job["shots"] == 1000
    (counts,) = job["result"]["counts"]
    assert set(counts) <= {"00", "11"} and sum(counts.values()) == 1000
    assert min(counts.get("00", 0), counts.get("11", 0)) > 350

    same = (await api("GET", f"/jobs/{job['id']}", status=200)).data
    assert same == job
    detailed = (
        await api(
            "GET", f"/jobs/{job['id']}", params={"events": "true", "qasm": "true"}, status=200
        )
    ).data
    states = [e["to_state"] for e in detailed["events"] if e["kind"] == "transition"]
    assert states[0] == "CREATED" and states[-1] == "COMPLETED"
    assert detailed["qasm3"][0].startswith("OPENQASM 3")
    waited = await api("GET", f"/jobs/{job['id'][:8]}", params={"wait": "0.5"}, status=200)
    assert waited.data["id"] == job["id"]

    listed = (await api("GET", "/jobs", params={"state": "completed"}, status=200)).data
    assert [j["id"] for j in listed["jobs"]] == [job["id"]] and listed["next"] is None
    empty = (await api("GET", "/jobs", params={"backend": "ionq:simulator"}, status=200)).data
    assert empty == {"jobs": [], "next": None}

    message = await error(api, "POST", f"/jobs/{job['id']}/cancel", None, 409, "illegal_transition")
    assert "COMPLETED" in message


async def test_an_idempotency_key_returns_the_same_job_or_conflicts(api: Api) -> None:
    body = bell_job(idempotency_key="exp-42", tags={"team": "q"})
    first = await api("POST", "/jobs", body, status=201)
    again = await api("POST", "/jobs", body, params={"wait": 30}, status=200)
    assert again.data["id"] == first.data["id"] and again.data["state"] == "COMPLETED"
    assert again.data["tags"] == {"team": "q"}
    other = {**body, "shots": 999}
    message = await error(api, "POST", "/jobs", other, 409, "idempotency_conflict")
    assert "exp-42" in message and first.data["id"] in message


@pytest.mark.parametrize("run_engine", [False])
async def test_jobs_wait_page_and_cancel_without_an_engine(api: Api) -> None:
    ids = [
        (await api("POST", "/jobs", bell_job(name=f"j{i}"), status=201)).data["id"]
        for i in range(3)
    ]
    waited = await api("GET", f"/jobs/{ids[0]}", params={"wait": "0.3"}, status=200)
    assert waited.data["state"] == "CREATED"  # nobody runs it: the wait ends, the job stays

    first = (await api("GET", "/jobs", params={"limit": 2}, status=200)).data
    assert [j["id"] for j in first["jobs"]] == ids[::-1][:2] and first["next"]
    rest = (
        await api("GET", "/jobs", params={"limit": 2, "cursor": first["next"]}, status=200)
    ).data
    assert [j["id"] for j in rest["jobs"]] == [ids[0]] and rest["next"] is None

    cancelled = (await api("POST", f"/jobs/{ids[1]}/cancel", status=200)).data
    assert cancelled["id"] == ids[1] and cancelled["state"] == "CANCELLED"
    await error(api, "POST", f"/jobs/{ids[1]}/cancel", None, 409, "illegal_transition")
    only = (await api("GET", "/jobs", params={"state": "CANCELLED"}, status=200)).data
    assert [j["id"] for j in only["jobs"]] == [ids[1]]


@pytest.mark.parametrize("run_engine", [False])
async def test_a_waiting_post_on_a_local_simulator_runs_at_once_without_an_engine(
    api: Api, started: Any
) -> None:
    """``POST /jobs?wait`` on Aer runs the job in the API's own threads (leased to this
    server from the moment it is recorded) and answers with the finished job: no engine,
    no queue."""
    reply = await api("POST", "/jobs", bell_job(seed=11), params={"wait": 30}, status=201)
    assert reply.data["state"] == "COMPLETED", reply.text
    events = await started.run(started.client.ledger.events, reply.data["id"])
    moves = [(e.from_state, e.to_state) for e in events if e.kind == "transition"]
    assert [m[1] for m in moves] == ["CREATED", "SUBMITTING", "RUNNING", "COMPLETED"]
    assert {e.actor for e in events[1:]} == {started.client.driver.holder}
    again = await api(
        "POST", "/jobs", bell_job(seed=11, idempotency_key="k1"), params={"wait": 30}, status=201
    )
    same = await api(
        "POST", "/jobs", bell_job(seed=11, idempotency_key="k1"), params={"wait": 30}, status=200
    )
    assert same.data["id"] == again.data["id"]
    assert same.data["result"]["counts"] == reply.data["result"]["counts"]


async def test_a_waiting_post_whose_wait_runs_out_is_carried_on_by_the_engine(api: Api) -> None:
    """A big simulation outlives a short wait: the answer is the job as it stands (201, still
    running), and the server's engine takes it over and finishes it."""
    from qiskit import qasm2
    from qmlops_testing import slow_circuits

    body = {
        "backend": "aer",
        "circuits": [qasm2.dumps(slow_circuits(count=1, qubits=20, depth=40)[0])],
        "shots": 10,
    }
    reply = await api("POST", "/jobs", body, params={"wait": 0.3}, status=201)
    assert reply.data["state"] in ("SUBMITTING", "RUNNING", "CREATED"), reply.text
    done = await api("GET", f"/jobs/{reply.data['id']}", params={"wait": 120}, status=200)
    assert done.data["state"] == "COMPLETED", done.text


async def test_bad_job_requests_are_4xx_with_one_line(api: Api) -> None:
    async def bad(body: Any, status: int, code: str, *words: str) -> None:
        message = await error(api, "POST", "/jobs", body, status, code)
        for word in words:
            assert word in message, message

    await bad("{not json", 400, "invalid_request", "JSON")
    await bad("[1, 2]", 400, "invalid_request", "object")
    await bad(bell_job(colour="red"), 400, "invalid_request", "colour")
    await bad(bell_job(shots=0), 400, "invalid_request", "shots")
    await bad(bell_job(shots="100"), 400, "invalid_request", "shots")
    await bad(bell_job(shots=True), 400, "invalid_request", "shots")
    await bad(bell_job(shots=10.5), 400, "invalid_request", "shots")
    await bad(bell_job(shots=10**9), 400, "invalid_request", "max_shots")
    await bad(bell_job(circuits=[]), 400, "invalid_request", "circuits")
    await bad(bell_job(circuits=BELL_QASM2), 400, "invalid_request", "circuits")
    await bad(bell_job(circuits=["OPENQASM 3.0; qubit q; bogus q;"]), 400, "invalid_circuit")
    await bad({"circuits": [BELL_QASM2], "shots": 10}, 400, "invalid_request", "backend")
    await bad(bell_job(backend="nope"), 404, "unknown_backend", "nope")
    await bad(bell_job(credential="nope"), 404, "credential_not_found", "nope")
    await bad(bell_job(observables=["XYZW"]), 400, "invalid_request", "observable")
    too_wide = {"backend": "ionq:simulator", "circuits": [BELL_QASM3], "shots": 10}
    await bad(too_wide, 422, "circuit_too_large", "at most 1")
    disabled = {"backend": "ionq:qpu.aria-1", "circuits": [BELL_QASM3], "shots": 10}
    await bad(disabled, 503, "backend_unavailable", "disabled")
    for wait in ("0", "-1", "301", "soon", "nan", "inf", ""):
        r = await api("POST", "/jobs", bell_job(), params={"wait": wait}, status=400)
        assert "wait" in r.data["message"]
    # Nothing of the above was recorded.
    assert (await api("GET", "/jobs", status=200)).data["jobs"] == []

    await error(api, "GET", "/jobs/0123456789abcdef", None, 404, "job_not_found")
    await error(api, "POST", "/jobs/0123456789abcdef/cancel", None, 404, "job_not_found")
    for params, word in (
        ({"state": "DONE"}, "state"),
        ({"state": ""}, "state"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
    ):
        r = await api("GET", "/jobs", params=params, status=400)
        assert word in r.data["message"], r.data
    for params in ({"events": "maybe"}, {"qasm": ""}, {"wait": "0"}):
        await api("GET", "/jobs/0123456789abcdef", params=params, status=400)


# -- backends --------------------------------------------------------------------------------


async def test_backends(api: Api) -> None:
    listed = (await api("GET", "/backends", status=200)).data
    by_name = {b["name"]: b for b in listed}
    assert by_name["aer"]["local"] and by_name["aer"]["available"]
    assert by_name["ionq:qpu.aria-1"]["enabled"] is False
    assert by_name["ionq:simulator"]["max_qubits"] == 1
    one = (await api("GET", "/backends/aer", status=200)).data
    assert one == by_name["aer"]
    await error(api, "GET", "/backends/nope", None, 404, "unknown_backend")
    await error(api, "GET", "/backends/aer:nope", None, 404, "unknown_backend")


# -- credentials -----------------------------------------------------------------------------


async def test_credentials_go_in_and_never_come_out(api: Api) -> None:
    assert (await api("GET", "/credentials", status=200)).data == []
    good = {"provider": "ionq", "secret": {"api_key": SECRET}}
    stored = (await api("PUT", "/credentials/ionq-main", good, status=201)).data
    assert stored["alias"] == "ionq-main" and stored["provider"] == "ionq"
    assert stored["hint"] == "…" + SECRET[-4:]
    replaced = await api("PUT", "/credentials/ionq-main", good, status=200)
    assert replaced.data["created_at"] == stored["created_at"]
    await api(
        "PUT",
        "/credentials/ionq-bad",
        {"provider": "ionq", "secret": {"api_key": WRONG}},
        status=201,
    )
    ibm = {"provider": "ibm", "secret": {"token": "ibm-" + SECRET, "channel": "ibm_cloud"}}
    await api("PUT", "/credentials/ibm-main", ibm, status=201)

    listed = (await api("GET", "/credentials", status=200)).data
    assert [c["alias"] for c in listed] == ["ibm-main", "ionq-bad", "ionq-main"]

    ok = (await api("POST", "/credentials/ionq-main/test", status=200)).data
    assert ok["alias"] == "ionq-main" and ok["ok"] is True and "IonQ at" in ok["message"]
    refused = (await api("POST", "/credentials/ionq-bad/test", status=200)).data
    assert refused["ok"] is False and "refused" in refused["message"]
    used = {c["alias"]: c for c in (await api("GET", "/credentials", status=200)).data}
    assert used["ionq-main"]["last_used_at"] is not None
    await error(api, "POST", "/credentials/nope/test", None, 404, "credential_not_found")
    await error(
        api, "POST", "/credentials/ionq-main/test", None, 400, "invalid_request", backend="aer"
    )

    async def bad(alias: str, body: Any, *words: str) -> None:
        message = await error(api, "PUT", f"/credentials/{alias}", body, 400, "invalid_request")
        for word in words:
            assert word in message, message

    await bad("x", {"provider": "azure", "secret": {"key": SECRET}}, "azure")
    await bad("x", {"provider": "ibm", "secret": {"channel": "ibm_cloud"}}, "token")
    await bad(
        "x", {"provider": "aws", "secret": {"aws_access_key_id": "AKIA"}}, "aws_secret_access_key"
    )
    await bad("x", {"provider": "ionq", "secret": {"api_key": SECRET, "apikey": "x"}}, "apikey")
    await bad("x", {"provider": "ionq", "secret": {"api_key": 12345}}, "secret.api_key")
    await bad("x", {"provider": "ionq", "secret": {"api_key": SECRET}, "note": "x"}, "note")
    await bad("x", {"provider": "ionq"}, "secret")
    await bad("-x", good, "alias")

    await api("DELETE", "/credentials/ionq-bad", status=204)
    await error(api, "DELETE", "/credentials/ionq-bad", None, 404, "credential_not_found")
    after = [c["alias"] for c in (await api("GET", "/credentials", status=200)).data]
    assert after == ["ibm-main", "ionq-main"]

    # The secrets went in; no answer (errors included) ever carried one back.
    for secret in (SECRET, WRONG, "ibm-" + SECRET):
        assert not any(secret in text for text in api.seen), secret


async def test_a_job_with_a_stored_credential_runs_on_the_emulator(api: Api) -> None:
    await api("PUT", "/credentials/lab", {"provider": "ionq", "secret": {"api_key": SECRET}})
    wide_enough = {"backend": "ionq:simulator", "circuits": [BELL_QASM3], "shots": 10}
    await error(
        api, "POST", "/jobs", {**wide_enough, "credential": "lab"}, 422, "circuit_too_large"
    )
    one = BELL_QASM3.replace("cx q[0], q[1];\n", "")
    one = one.replace("qubit[2] q;", "qubit[1] q;").replace("bit[2] c;", "bit[1] c;")
    one = one.replace("h q[0];\n", "x q[0];\n")
    body = {"backend": "ionq:simulator", "circuits": [one], "shots": 20, "credential": "lab"}
    job = (await api("POST", "/jobs", body, params={"wait": 60}, status=201)).data
    assert job["state"] == "COMPLETED", job
    assert job["options"]["credential"] == "lab"
    assert job["result"]["counts"] == [{"1": 20}]
    await error(api, "POST", "/jobs", bell_job(credential="lab"), 400, "invalid_request")
    assert not any(SECRET in text for text in api.seen)


# -- budget and estimate ---------------------------------------------------------------------


async def test_budgets_refuse_a_job_over_them(api: Api) -> None:
    assert (await api("GET", "/budget", status=200)).data == []
    budgets = (await api("PUT", "/budget", {"shots_per_day": 1500}, status=200)).data
    (everything,) = budgets
    assert everything["backend"] == "*" and everything["shots_per_day"]["limit"] == 1500
    both = {"backend": "aer", "shots_per_day": 5000, "usd_per_month": 2.5}
    budgets = (await api("PUT", "/budget", both, status=200)).data
    assert {b["backend"] for b in budgets} == {"*", "aer"}

    await api("POST", "/jobs", bell_job(), params={"wait": 30}, status=201)
    message = await error(api, "POST", "/jobs", bell_job(), 422, "budget_exceeded")
    assert "1500" in message
    used = {b["backend"]: b for b in (await api("GET", "/budget", status=200)).data}
    assert used["*"]["shots_per_day"]["used"] == 1000
    assert used["*"]["shots_per_day"]["remaining"] == 500

    for body, word in (
        ({}, "shots_per_day"),
        ({"backend": "aer"}, "shots_per_day"),
        ({"shots_per_day": -1}, "shots_per_day"),
        ({"usd_per_month": "5"}, "usd_per_month"),
        ({"shots_per_day": 10, "period": "week"}, "period"),
    ):
        message = await error(api, "PUT", "/budget", body, 400, "invalid_request")
        assert word in message, message
    await error(
        api, "PUT", "/budget", {"backend": "nope", "shots_per_day": 1}, 404, "unknown_backend"
    )


async def test_estimates(api: Api) -> None:
    free = (
        await api(
            "POST",
            "/estimate",
            {"backend": "aer", "circuits": [BELL_QASM2], "shots": 100},
            status=200,
        )
    ).data
    assert free["usd"] == 0 and free["free"] is True and free["circuits"] == 1
    assert free["shots"] == 100 and free["basis"]
    await error(
        api,
        "POST",
        "/estimate",
        {"backend": "aer", "circuits": ["x"], "shots": 1},
        400,
        "invalid_circuit",
    )
    await error(
        api,
        "POST",
        "/estimate",
        {"backend": "aer", "circuits": [BELL_QASM2]},
        400,
        "invalid_request",
    )
    await error(
        api,
        "POST",
        "/estimate",
        {"backend": "nope", "circuits": [BELL_QASM2], "shots": 1},
        404,
        "unknown_backend",
    )
    wide = {"backend": "ionq:simulator", "circuits": [GHZ3], "shots": 1}
    await error(api, "POST", "/estimate", wide, 422, "circuit_too_large")
    # Nothing was written.
    assert (await api("GET", "/jobs", status=200)).data["jobs"] == []


# -- runs ------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_runs_from_the_embedded_store(api: Api) -> None:
    runs = await api("GET", "/runs", status=200)
    assert runs.data == {"runs": []}
    message = await error(api, "GET", "/runs", None, 404, "experiment_not_found", experiment="nope")
    assert "nope" in message
    await api("GET", "/runs", params={"limit": "0"}, status=400)


@pytest.mark.parametrize("tracking_uri", [f"http://127.0.0.1:{free_port()}"])
async def test_runs_when_the_tracking_store_is_down(api: Api) -> None:
    message = await error(api, "GET", "/runs", None, 503, "tracking_unavailable")
    assert "127.0.0.1" in message


# -- events (the long poll) --------------------------------------------------------------------


async def events(api: Api, **params: Any) -> dict[str, Any]:
    return (await api("GET", "/events", params=params or None, status=200)).data


async def test_events_arrive_in_order_from_where_the_caller_left_off(api: Api) -> None:
    start = await events(api)
    assert start["events"] == [] and isinstance(start["next"], int)
    job = (await api("POST", "/jobs", bell_job(name="ev"), params={"wait": 30}, status=201)).data
    assert job["state"] == "COMPLETED", job
    page = await events(api, after=start["next"])
    moves = [e for e in page["events"] if e["job_id"] == job["id"]]
    assert [e["new_state"] for e in moves] == ["CREATED", "SUBMITTING", "RUNNING", "COMPLETED"]
    assert [e["old_state"] for e in moves] == [None, "CREATED", "SUBMITTING", "RUNNING"]
    assert all(e["name"] == "ev" and e["backend"] == "aer" for e in moves)
    seqs = [e["seq"] for e in page["events"]]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert page["next"] >= seqs[-1] > start["next"]
    # Read on from ``next``: nothing again, at once; ``after`` without ``next`` moves nowhere.
    again = await events(api, after=page["next"])
    assert again == {"events": [], "next": page["next"]}
    assert (await events(api))["next"] >= page["next"]
    # Read from the start in two steps: the same changes, none twice.
    first = await events(api, after=start["next"], job_id=job["id"])
    assert [e["seq"] for e in first["events"]] == [e["seq"] for e in moves]


@pytest.mark.parametrize("run_engine", [False])
async def test_a_waiting_events_request_answers_as_soon_as_a_job_moves(
    api: Api, started: Any
) -> None:
    from qmlops_jupyter.client import Client

    job = (await api("POST", "/jobs", bell_job(), status=201)).data
    position = (await events(api))["next"]
    loop = asyncio.get_running_loop()
    begun = loop.time()
    waiting = asyncio.ensure_future(events(api, after=position, wait=20))
    await asyncio.sleep(0.5)
    assert not waiting.done()  # nothing moved yet: it waits
    # Another process on the same ledger cancels the job (never queued, so at once).
    other = Client(started.client.settings)
    try:
        await asyncio.to_thread(other.cancel, job["id"])
    finally:
        other.close()
    page = await asyncio.wait_for(waiting, 20)
    elapsed = loop.time() - begun
    assert elapsed < 5, f"the wait ended {elapsed:.1f} s after it began, not at the change"
    (change,) = page["events"]
    assert change["job_id"] == job["id"] and change["new_state"] == "CANCELLED"
    assert change["old_state"] == "CREATED" and page["next"] == change["seq"]
    # With nothing to report, the wait runs out and ``next`` stays put.
    begun = loop.time()
    empty = await events(api, after=page["next"], wait=0.4)
    assert empty == {"events": [], "next": page["next"]} and loop.time() - begun >= 0.35


@pytest.mark.parametrize("run_engine", [False])
async def test_events_of_chosen_jobs_only(api: Api) -> None:
    position = (await events(api))["next"]
    one, two = [(await api("POST", "/jobs", bell_job(name=n), status=201)).data["id"] for n in "ab"]
    await api("POST", f"/jobs/{two}/cancel", status=200)
    both = await events(api, after=position)
    assert [(e["job_id"], e["new_state"]) for e in both["events"]] == [
        (one, "CREATED"),
        (two, "CREATED"),
        (two, "CANCELLED"),
    ]
    only_two = await events(api, after=position, job_id=two)
    assert [e["new_state"] for e in only_two["events"]] == ["CREATED", "CANCELLED"]
    assert only_two["next"] == both["next"]
    repeated = [("after", position), ("job_id", one), ("job_id", two)]
    assert (await api("GET", "/events", params=repeated, status=200)).data == both  # type: ignore[arg-type]
    # A job nobody has: no changes (after the wait), and later asks need not read those rows again.
    nobody = await events(api, after=position, job_id="0123456789abcdef", wait=0.2)
    assert nobody["events"] == [] and position <= nobody["next"] <= both["next"]


async def test_bad_events_requests_are_400_with_one_line(api: Api) -> None:
    for params, word in (
        ({"after": "-1"}, "after"),
        ({"after": "soon"}, "after"),
        ({"after": ""}, "after"),
        ({"after": str(2**63)}, "after"),
        ({"after": "0", "wait": "31"}, "wait"),
        ({"after": "0", "wait": "-1"}, "wait"),
        ({"after": "0", "wait": "nan"}, "wait"),
        ({"after": "0", "wait": "inf"}, "wait"),
        ({"after": "0", "wait": "later"}, "wait"),
        ({"after": "0", "wait": ""}, "wait"),
        ({"wait": "99"}, "wait"),
        ({"after": "0", "job_id": ""}, "job_id"),
        ({"after": "0", "job_id": "x" * 129}, "job_id"),
    ):
        message = await error(api, "GET", "/events", None, 400, "invalid_request", **params)
        assert word in message, (params, message)
    many = [("after", 0)] + [("job_id", f"j{i}") for i in range(101)]
    reply = await api("GET", "/events", params=many, status=400)  # type: ignore[arg-type]
    assert "job_id" in reply.data["message"] and "\n" not in reply.data["message"]


@pytest.mark.parametrize("run_engine", [False])
async def test_events_never_show_another_owners_jobs(api: Api, started: Any) -> None:
    from qmlops_jupyter.client import Client
    from qmlops_jupyter.config import Settings

    mine = started.client.settings
    assert mine.owner != "someone-else"
    theirs = Client(
        Settings.from_env(home=mine.home, database_url=mine.database_url, owner="someone-else")
    )
    try:
        position = (await events(api))["next"]
        foreign = await asyncio.to_thread(theirs.submit, BELL_QASM2, "aer", 50, "theirs", wait=True)
        assert foreign.record.state.value == "COMPLETED"
        own = (await api("POST", "/jobs", bell_job(name="mine"), status=201)).data["id"]
        page = await events(api, after=position, wait=5)
        assert {e["job_id"] for e in page["events"]} == {own}
        asked = await events(api, after=position, job_id=foreign.id, wait=0.3)
        assert asked["events"] == []
        everything = await events(api, after=0)
        assert foreign.id not in {e["job_id"] for e in everything["events"]}
        assert not any(e["name"] == "theirs" for e in everything["events"])
    finally:
        theirs.close()
