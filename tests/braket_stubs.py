"""An offline Amazon Braket for the tests: botocore ``Stubber``s on real boto3 clients.

:class:`FakeBraket` plays the Braket service and the S3 results bucket. Every API call the
adapter makes goes through a real boto3 client (parameter validation and serialisation by
botocore's Braket and S3 models) and is answered by a ``Stubber`` (which checks each answer
against the same models). The answers come from a small stateful service kept in a JSON file,
so a second process (the conformance suite's re-attach child) sees the same tasks:

- ``create_quantum_task`` records the task QUEUED;
- each ``get_quantum_task`` moves it on: QUEUED -> RUNNING -> COMPLETED (a task of
  :data:`HOLD_QUBITS` qubits or more stays QUEUED, like a long QPU queue, until cancelled);
  on completion the OpenQASM program is run on Braket's own state-vector simulator and its
  ``GateModelTaskResult`` JSON (measurements in Braket's order) is stored as the task's
  ``results.json`` in the fake bucket, read back with S3 ``get_object``;
- ``cancel_quantum_task`` moves it to CANCELLING, the next get to CANCELLED;
- ``get_device`` answers with the LocalSimulator's capabilities (or what a test sets).

Scripted failures (``fail_next``) answer a call with a botocore ``ClientError`` of a given
code, or raise a connection error, as the real clients would.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import io
import json
import os
import threading
import uuid
from pathlib import Path
from typing import Any

STATE_ENV = "QMLOPS_TEST_BRAKET_STATE"
REGION = "us-east-1"
ACCOUNT = "123456789012"
BUCKET = "amazon-braket-qmlops-tests"
#: Tasks this wide stay queued until cancelled (the conformance suite's slow circuit).
HOLD_QUBITS = 12
FAKE_KEY_ID = "AKIAQMLOPSFAKEKEY123"
FAKE_SECRET = "qmlopsFakeSecretKey/DoNotLeak+0123456789abcd"
FAKE_TOKEN = "qmlopsFakeSessionTokenDoNotLeak0123456789"

_LOCK = threading.Lock()


def fake_aws_env() -> dict[str, str]:
    """Fake credentials: present so the SDK signs requests, findable if they ever leak."""
    return {
        "AWS_ACCESS_KEY_ID": FAKE_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": FAKE_SECRET,
        "AWS_SESSION_TOKEN": FAKE_TOKEN,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


class FakeBraket:
    """The fake service's state (a JSON file) and the stubbed clients that answer from it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.exists():
            self._write(
                {
                    "tasks": {},
                    "objects": {},
                    "script": [],
                    "submissions": 0,
                    "calls": [],
                    "device": None,
                }
            )

    # -- state ---------------------------------------------------------------------------------

    def _read(self) -> dict[str, Any]:
        return json.loads(self.path.read_text(encoding="utf-8"))

    def _write(self, state: dict[str, Any]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state), encoding="utf-8")
        tmp.replace(self.path)

    @contextlib.contextmanager
    def _state(self) -> Any:
        with _LOCK, open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = self._read()
            try:
                yield state
            finally:
                # Also when the call raises (a scripted connection failure): what the
                # service did before the connection broke stays done.
                self._write(state)
                fcntl.flock(lock, fcntl.LOCK_UN)

    def submissions(self) -> int:
        """Jobs received: tasks of one qmlops job (same ``qmlops:job_id`` tag) count once."""
        tasks = self._read()["tasks"].items()
        return len({t["tags"].get("qmlops:job_id", arn) for arn, t in tasks})

    def fail_next_task(self, reason: str) -> None:
        """The next task created ends FAILED at the provider with this reason."""
        with self._state() as state:
            state["fail_task"] = reason

    def calls(self) -> list[str]:
        return list(self._read()["calls"])

    def tasks(self) -> dict[str, Any]:
        return dict(self._read()["tasks"])

    def fail_next(
        self,
        operation: str,
        code: str,
        *,
        status: int = 400,
        message: str = "scripted failure",
        times: int = 1,
        after: int = 0,
    ) -> None:
        """Answer ``times`` calls of ``operation``, after ``after`` good ones, with this error.
        ``code`` is an AWS error code, or ``connect`` / ``read_timeout`` for a connection
        failure."""
        with self._state() as state:
            for _ in range(after):
                state["script"].append({"operation": operation, "code": "pass"})
            for _ in range(times):
                state["script"].append(
                    {"operation": operation, "code": code, "status": status, "message": message}
                )

    def set_device(
        self,
        status: str = "ONLINE",
        windows: list[dict[str, str]] | None = None,
        device_type: str = "SIMULATOR",
    ) -> None:
        with self._state() as state:
            state["device"] = {"status": status, "windows": windows, "type": device_type}

    # -- clients ------------------------------------------------------------------------------

    def session(self, backend: Any = None) -> Any:
        """An ``AwsSession`` whose Braket and S3 clients (every one it creates, including
        the S3 resource the SDK opens to read results.json) are stubbed by this fake."""
        from braket.aws import AwsSession

        def prepare(service: str, client: Any) -> Any:
            if service in ("braket", "s3"):
                self.attach(client, service)
            return client

        boto = stubbed_boto_session(
            prepare,
            aws_access_key_id=FAKE_KEY_ID,
            aws_secret_access_key=FAKE_SECRET,
            aws_session_token=FAKE_TOKEN,
            region_name=REGION,
        )
        braket = boto.client("braket", region_name=REGION)
        return AwsSession(boto_session=boto, braket_client=braket, default_bucket=BUCKET)

    def attach(self, client: Any, service: str) -> Any:
        """Activate a Stubber on ``client`` and feed it, call by call, this fake's answer."""
        from botocore.stub import Stubber

        stubber = Stubber(client)
        stubber.activate()

        def answer(params: dict[str, Any], model: Any, **_: Any) -> None:
            self._answer(stubber, service, model.name, params)

        # Fires before the Stubber's own handlers: each call's answer is queued just in time.
        client.meta.events.register(f"provide-client-params.{service}.*", answer)
        return stubber

    def _answer(self, stubber: Any, service: str, operation: str, params: dict[str, Any]) -> None:
        from botocore.exceptions import EndpointConnectionError, ReadTimeoutError

        method = _snake(operation)
        with self._state() as state:
            state["calls"].append(method)
            scripted = next((s for s in state["script"] if s["operation"] == method), None)
            if scripted is not None:
                state["script"].remove(scripted)
            if scripted is not None and scripted["code"] != "pass":
                if scripted["code"] == "connect":
                    raise EndpointConnectionError(endpoint_url=f"https://{service}.fake")
                if scripted["code"] == "read_timeout":
                    if method == "create_quantum_task":
                        # The request reached the service: the task exists.
                        self._create(state, params)
                    raise ReadTimeoutError(endpoint_url=f"https://{service}.fake")
                stubber.add_client_error(
                    method,
                    service_error_code=scripted["code"],
                    service_message=scripted["message"],
                    http_status_code=scripted["status"],
                )
                return
            handler = getattr(self, f"_{method}", None)
            if handler is None:
                raise AssertionError(f"the fake Braket does not answer {method}")
            try:
                response = handler(state, params)
            except _ServiceError as exc:
                stubber.add_client_error(
                    method,
                    service_error_code=exc.code,
                    service_message=exc.message,
                    http_status_code=exc.status,
                )
                return
        stubber.add_response(method, response)

    # -- the service ---------------------------------------------------------------------------

    def _create(self, state: dict[str, Any], params: dict[str, Any]) -> str:
        task_id = str(uuid.uuid4())
        arn = f"arn:aws:braket:{REGION}:{ACCOUNT}:quantum-task/{task_id}"
        action = json.loads(params["action"])
        state["tasks"][arn] = {
            "status": "QUEUED",
            "polls": 0,
            "device": params["deviceArn"],
            "shots": params["shots"],
            "source": action["source"],
            "bucket": params["outputS3Bucket"],
            "directory": f"{params['outputS3KeyPrefix']}/{task_id}",
            "tags": params.get("tags") or {},
            "deviceParameters": params["deviceParameters"],
            "created": _now().isoformat(),
        }
        if state.get("fail_task"):
            state["tasks"][arn]["failureReason"] = state.pop("fail_task")
        state["submissions"] += 1
        return arn

    def _create_quantum_task(self, state: dict[str, Any], params: dict[str, Any]) -> Any:
        return {"quantumTaskArn": self._create(state, params)}

    def _get_quantum_task(self, state: dict[str, Any], params: dict[str, Any]) -> Any:
        arn = params["quantumTaskArn"]
        task = state["tasks"].get(arn)
        if task is None:
            raise _ServiceError("ResourceNotFoundException", f"no quantum task {arn}", 404)
        task["polls"] += 1
        status = task["status"]
        if status == "CANCELLING":
            status = "CANCELLED"
        elif status == "QUEUED" and not self._held(task):
            status = "RUNNING"
        elif status == "RUNNING" and task.get("failureReason"):
            status = "FAILED"
        elif status == "RUNNING":
            self._complete(state, arn, task)
            status = "COMPLETED"
        task["status"] = status
        response = {
            "quantumTaskArn": arn,
            "status": status,
            "deviceArn": task["device"],
            "deviceParameters": task["deviceParameters"],
            "shots": task["shots"],
            "outputS3Bucket": task["bucket"],
            "outputS3Directory": task["directory"],
            "createdAt": dt.datetime.fromisoformat(task["created"]),
            "tags": task["tags"],
        }
        if status == "QUEUED":
            response["queueInfo"] = {
                "queue": "QUANTUM_TASKS_QUEUE",
                "position": "7",
                "queuePriority": "Normal",
            }
        if status in ("COMPLETED", "CANCELLED", "FAILED"):
            response["endedAt"] = _now()
        if status == "FAILED":
            response["failureReason"] = task.get("failureReason", "failed")
        return response

    def _held(self, task: dict[str, Any]) -> bool:
        width = task.get("width")
        if width is None:
            width = _width(task["source"])
            task["width"] = width
        return width >= HOLD_QUBITS

    def _complete(self, state: dict[str, Any], arn: str, task: dict[str, Any]) -> None:
        from braket.default_simulator import DensityMatrixSimulator, StateVectorSimulator
        from braket.ir.openqasm import Program

        simulator = (
            DensityMatrixSimulator() if task["device"].endswith("/dm1") else StateVectorSimulator()
        )
        result = simulator.run(Program(source=task["source"]), shots=task["shots"])
        result.taskMetadata.id = arn
        result.taskMetadata.deviceId = task["device"]
        key = f"{task['bucket']}/{task['directory']}/results.json"
        state["objects"][key] = result.json()

    def _cancel_quantum_task(self, state: dict[str, Any], params: dict[str, Any]) -> Any:
        arn = params["quantumTaskArn"]
        task = state["tasks"].get(arn)
        if task is None:
            raise _ServiceError("ResourceNotFoundException", f"no quantum task {arn}", 404)
        if task["status"] in ("COMPLETED", "FAILED", "CANCELLED"):
            raise _ServiceError(
                "ConflictException", f"quantum task is already {task['status']}", 409
            )
        task["status"] = "CANCELLING"
        return {"quantumTaskArn": arn, "cancellationStatus": "CANCELLING"}

    def _get_object(self, state: dict[str, Any], params: dict[str, Any]) -> Any:
        from botocore.response import StreamingBody

        key = f"{params['Bucket']}/{params['Key']}"
        body = state["objects"].get(key)
        if body is None:
            raise _ServiceError("NoSuchKey", "The specified key does not exist.", 404)
        data = body.encode("utf-8")
        return {
            "Body": StreamingBody(io.BytesIO(data), len(data)),
            "ContentLength": len(data),
            "ContentType": "application/json",
        }

    def _get_device(self, state: dict[str, Any], params: dict[str, Any]) -> Any:
        from braket.devices import LocalSimulator

        device = state.get("device") or {}
        capabilities = json.loads(LocalSimulator("braket_sv").properties.json())
        if device.get("windows") is not None:
            capabilities["service"]["executionWindows"] = device["windows"]
        return {
            "deviceArn": params["deviceArn"],
            "deviceName": params["deviceArn"].rsplit("/", 1)[-1],
            "providerName": "Amazon Braket",
            "deviceType": device.get("type", "SIMULATOR"),
            "deviceStatus": device.get("status", "ONLINE"),
            "deviceCapabilities": json.dumps(capabilities),
        }


def stubbed_boto_session(prepare: Any, **kwargs: Any) -> Any:
    """A boto3 ``Session`` that passes every client it creates (directly, or under a
    resource such as the S3 one the Braket SDK reads results with) through ``prepare``."""
    import boto3

    class StubbedSession(boto3.Session):
        def client(self, service_name: str, *args: Any, **kw: Any) -> Any:
            return prepare(service_name, super().client(service_name, *args, **kw))

    return StubbedSession(**kwargs)


class _ServiceError(Exception):
    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def _snake(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i:
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


def _width(source: str) -> int:
    import re

    qubits = [int(q) for q in re.findall(r"q\[(\d+)\]", source)]
    declared = re.search(r"qubit\[(\d+)\]", source)
    return max([int(declared.group(1)) if declared else 0, *(q + 1 for q in qubits)])


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# -- hooks for backends.yaml and the conformance suite's child process --------------------------


def session_factory(backend: Any) -> Any:
    """``session_factory: "braket_stubs:session_factory"``: the fake whose state file is named
    by ``QMLOPS_TEST_BRAKET_STATE`` (so a child process finds the same tasks)."""
    return FakeBraket(os.environ[STATE_ENV]).session(backend)


def bootstrap() -> None:
    """The conformance suite's ``reattach_bootstrap``, run in the child process: checks the
    fake's state file is there (the backend's ``session_factory`` option then installs the
    stubbed clients when the child builds its session)."""
    path = Path(os.environ[STATE_ENV])
    if not path.exists():
        raise SystemExit(f"no fake Braket state at {path}")
