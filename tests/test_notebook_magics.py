"""The ``%qmlops`` magics in real IPython kernels (jupyter_client), and through a real Jupyter
server: every command, its error paths, results equal to ``qmlops_jupyter.submit`` for the same
seed, and a job that outlives a kernel restart.

Most tests share one kernel (module scope) on a private ``QMLOPS_HOME`` with tracking off and
the in-process client (``QMLOPS_REMOTE=off``); the tests that change its session defaults put
them back. Outputs are read from the kernel's messages: ``execute_result`` / ``display_data``
mimebundles, streams, and the reply's ``ename`` / ``evalue`` (a ``UsageError`` prints one line
on stderr and no traceback).
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from qmlops_testing import BELL_QASM2, BELL_QASM3, JupyterServer, jupyter_env

from qmlops_jupyter.notebook.magics import SCRUBBED

pytestmark = pytest.mark.slow

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
SECRET = "sk-7Hq2ZpL9xW4mN8vB3cR6tY1uJ5kE0aSd"


@dataclass
class Outcome:
    """What one execution produced."""

    status: str
    ename: str | None
    evalue: str | None
    stdout: str = ""
    stderr: str = ""
    #: The ``execute_result`` mimebundle (``Out[n]``), if any.
    result: dict[str, Any] | None = None
    displays: list[dict[str, Any]] = field(default_factory=list)
    tracebacks: list[str] = field(default_factory=list)
    #: The execute reply's payloads (``set_next_input``: what the notebook's cell becomes).
    payload: list[dict[str, Any]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return (self.result or {}).get("text/plain", "")


class Kernel:
    """A real ipykernel started by jupyter_client, spoken to as a notebook does."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        from jupyter_client.manager import KernelManager

        self.manager = KernelManager(kernel_name="python3")
        self.manager.start_kernel(env=env, cwd=str(cwd))
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=120)

    def run(self, code: str, timeout: float = 180) -> Outcome:
        messages: list[dict[str, Any]] = []
        reply = self.client.execute_interactive(
            code, output_hook=messages.append, timeout=timeout, store_history=True
        )
        content = reply["content"]
        out = Outcome(content["status"], content.get("ename"), content.get("evalue"))
        out.payload = list(content.get("payload") or [])
        for msg in messages:
            kind, body = msg["msg_type"], msg["content"]
            if kind == "stream":
                if body["name"] == "stdout":
                    out.stdout += body["text"]
                else:
                    out.stderr += body["text"]
            elif kind == "execute_result":
                out.result = body["data"]
            elif kind == "display_data":
                out.displays.append(body["data"])
            elif kind == "error":
                out.tracebacks.append("\n".join(body["traceback"]))
        return out

    def ok(self, code: str, timeout: float = 180) -> Outcome:
        out = self.run(code, timeout)
        assert out.status == "ok", f"{out.ename}: {out.evalue}\n{out.stderr}\n{out.tracebacks}"
        return out

    def value(self, expression: str) -> Any:
        """A JSON-able value computed in the kernel."""
        out = self.ok(f"import json as _json\nprint(_json.dumps({expression}))")
        return json.loads(out.stdout.strip().splitlines()[-1])

    def usage_error(self, code: str) -> str:
        """Run ``code``, which must fail with one ``UsageError`` line and no traceback."""
        out = self.run(code)
        assert out.status == "error", out
        assert out.ename == "UsageError", (out.ename, out.evalue, out.tracebacks)
        assert not out.tracebacks
        assert out.stderr.strip() == f"UsageError: {out.evalue}", out.stderr
        assert "\n" not in out.evalue
        return out.evalue

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


def kernel_env(home: Path, scratch: Path, **extra: str) -> dict[str, str]:
    tests = str(Path(__file__).resolve().parent)
    return jupyter_env(home, scratch, QMLOPS_REMOTE="off", PYTHONPATH=tests, **extra)


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    """One kernel for the module, the extension loaded in its first cells (what it imported is
    kept in ``_loaded_modules``)."""
    scratch = tmp_path_factory.mktemp("magics")
    kernel = Kernel(kernel_env(scratch / "home", scratch), scratch)
    try:
        kernel.ok("import sys\n_before = set(sys.modules)")
        kernel.ok("%load_ext qmlops_jupyter")
        kernel.ok("_loaded_modules = sorted(set(sys.modules) - _before)")
        kernel.ok(
            "from qiskit import QuantumCircuit\n"
            "qc = QuantumCircuit(2)\nqc.h(0)\nqc.cx(0, 1)\nqc.measure_all()\n"
            "import qmlops_jupyter"
        )
        yield kernel
    finally:
        kernel.close()


def counts(kernel: Kernel, expression: str) -> list[dict[str, int]]:
    return kernel.value(f"{expression}.counts")


# -- loading --------------------------------------------------------------------------------------


def test_load_ext_is_light_and_registers_both_magics(kernel: Kernel) -> None:
    loaded = kernel.value("_loaded_modules")
    heavy = {"qiskit", "qiskit_aer", "sqlalchemy", "pydantic", "mlflow", "ipywidgets", "httpx"}
    assert not heavy & {m.split(".")[0] for m in loaded}, loaded
    magics = kernel.value(
        "sorted(k for k, v in get_ipython().magics_manager.magics.items() if 'qmlops' in v)"
    )
    assert magics == ["cell", "line"]
    out = kernel.ok("%qmlops help")
    for command in (
        "backends",
        "use",
        "run",
        "submit",
        "jobs",
        "show",
        "watch",
        "cancel",
        "estimate",
        "budget",
        "creds",
        "env",
        "track",
        "help",
    ):
        assert f"\n  {command}" in out.stdout, command
    assert kernel.ok("%qmlops").stdout == out.stdout
    assert "--no-wait" in kernel.ok("%qmlops help run").stdout
    assert "--state" in kernel.ok("%qmlops jobs -h").stdout
    assert "--provider" in kernel.ok("%qmlops creds --help").stdout


def test_unload_and_reload(kernel: Kernel) -> None:
    kernel.ok("%unload_ext qmlops_jupyter")
    out = kernel.run("%qmlops help")
    assert out.ename == "UsageError" and "not found" in out.evalue
    kernel.ok("%load_ext qmlops_jupyter")
    kernel.ok("%reload_ext qmlops_jupyter")
    assert "%qmlops COMMAND" in kernel.ok("%qmlops help").stdout


# -- usage errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("%qmlops frobnicate", "unknown %qmlops command 'frobnicate'; one of: backends, use"),
        ("%qmlops jobs --bogus", "%qmlops jobs: unrecognized arguments: --bogus"),
        ("%qmlops jobs --limit 0", "argument --limit/-n: '0' is not a positive integer"),
        ("%qmlops jobs --state DONE", "unknown state 'DONE'; one of: CREATED, SUBMITTING"),
        ('%qmlops jobs --backend "aer', "%qmlops jobs: No closing quotation"),
        ("%qmlops use --shots -3", "argument --shots/-s: '-3' is not a positive integer"),
        ("%qmlops use --shots many", "'many' is not a positive integer"),
        ("%qmlops use nosuchbackend", "unknown backend 'nosuchbackend'"),
        ("%qmlops use --credential nosuch-alias", "nosuch-alias"),
        ("%qmlops show", "%qmlops show: the following arguments are required: JOB"),
        ("%qmlops show zzzz9999", "no job with id 'zzzz9999'"),
        ("%qmlops cancel zzzz9999", "no job with id 'zzzz9999'"),
        ("%qmlops watch zzzz9999", "no job with id 'zzzz9999'"),
        ("%qmlops run", "run is a cell magic"),
        ("%qmlops submit", "%qmlops submit: the following arguments are required: EXPR"),
        ("%qmlops submit nosuchvar", "name 'nosuchvar' is not defined"),
        ("%qmlops submit qc --shots 1.5", "'1.5' is not a positive integer"),
        ("%qmlops submit qc --seed -1", "'-1' is not a non-negative integer"),
        ("%qmlops submit qc --backend nosuch", "unknown backend 'nosuch'"),
        ("%qmlops submit 42", "expected OpenQASM text, a qiskit QuantumCircuit"),
        ("%qmlops estimate qc --shots 0", "'0' is not a positive integer"),
        ("%qmlops estimate qc --backend nosuch", "unknown backend 'nosuch'"),
        ("%qmlops track stop", "%qmlops track stop: no tracked run is open"),
        ("%qmlops track", "no tracked run is open; open one with %qmlops track NAME"),
        ("%qmlops help nosuch", "unknown %qmlops command 'nosuch'"),
        ("%qmlops creds ionq-main --provider nosuch", "unknown provider 'nosuch'"),
        ("%%qmlops jobs\nx = 1", "only %%qmlops run takes a cell body; use %qmlops jobs"),
        ("%%qmlops run --shots 0\nqc", "argument --shots/-s: '0' is not a positive integer"),
        ("%%qmlops run --wait\nqc", "unrecognized arguments: --wait"),
        ("%%qmlops run\n\n", "%%qmlops run: the cell is empty"),
        ("%%qmlops run\nx = 1", "the cell's last line must be an expression"),
        ("%%qmlops run\ndef (:", "neither OpenQASM (no OPENQASM line first) nor Python (line 1"),
        ("%%qmlops run\nOPENQASM 2.0;\nqreg q[1];\nfoo q[0];", "foo"),
        ("%%qmlops run --backend nosuch\nqc", "unknown backend 'nosuch'"),
    ],
)
def test_usage_errors_are_one_line(kernel: Kernel, code: str, expected: str) -> None:
    assert expected in kernel.usage_error(code)


def test_errors_in_the_cells_python_are_the_users_own(kernel: Kernel) -> None:
    out = kernel.run("%%qmlops run\n1 / 0")
    assert out.ename == "ZeroDivisionError"
    assert "1 / 0" in out.tracebacks[0]  # the cell's own line, as in any cell


# -- session defaults ------------------------------------------------------------------------------


def test_use_sets_this_kernels_defaults(kernel: Kernel) -> None:
    assert "backend aer, 1024 shots, credential none" in kernel.ok("%qmlops use").stdout
    try:
        out = kernel.ok("%qmlops use aer --shots 77")
        assert "backend aer, 77 shots" in out.stdout
        kernel.ok(f"%%qmlops run --seed 1\n{BELL_QASM2}")
        assert kernel.value("_.shots") == 77
        kernel.ok(f"%%qmlops run --seed 1 --shots 5\n{BELL_QASM2}")
        assert kernel.value("_.shots") == 5  # an option beats the default
        # A credential goes with its backend: the default backend's jobs get it, others not.
        kernel.ok(
            "qmlops_jupyter.get_client().vault.set("
            "'ionq-main', 'ionq', {'api_key': 'not-a-real-key-0000'})"
        )
        out = kernel.ok("%qmlops use ionq:simulator --credential ionq-main")
        assert "backend ionq:simulator, 77 shots, credential ionq-main" in out.stdout
        assert "on ionq:simulator" in kernel.ok("%qmlops estimate qc").text
        kernel.ok("%qmlops submit qc")  # not sent: no engine runs in this setting
        assert kernel.value("_.record.options['credential']") == "ionq-main"
        kernel.ok("_.cancel()")
        kernel.ok(f"%%qmlops run --backend aer --seed 1\n{BELL_QASM2}")  # no credential: fine
        assert kernel.value("qmlops_jupyter.jobs(limit=1)[0].record.options") == {"seed": 1}
        out = kernel.ok("%qmlops use aer")
        assert "backend aer, 77 shots, credential none" in out.stdout
    finally:
        out = kernel.ok("%qmlops use --reset")
    assert "backend aer, 1024 shots, credential none" in out.stdout


# -- %%qmlops run ----------------------------------------------------------------------------------


def test_run_openqasm_equals_submit_with_the_same_seed(kernel: Kernel) -> None:
    kernel.ok(f"BELL2 = {BELL_QASM2!r}\nBELL3 = {BELL_QASM3!r}")
    for name, text in (("BELL2", BELL_QASM2), ("BELL3", BELL_QASM3)):
        # Comments and blank lines may come before the OPENQASM line.
        out = kernel.ok(f"%%qmlops run --seed 11 --shots 500\n// {name}\n\n{text}")
        assert out.result is not None
        assert "text/html" in out.result and "<svg" in out.result["text/html"]  # histogram
        assert "500 shots" in out.text
        assert out.stdout.startswith("job ") and "COMPLETED on aer" in out.stdout
        got = counts(kernel, "_")
        reference = counts(
            kernel, f"qmlops_jupyter.submit({name}, shots=500, seed=11, wait=True).result()"
        )
        assert got == reference
        assert set(got[0]) == {"00", "11"}


def test_run_python_cell_in_the_notebook_namespace(kernel: Kernel) -> None:
    out = kernel.ok(
        "%%qmlops run --seed 3 --shots 300 --name py-cell\n"
        "# Python: the last expression is the circuit\n"
        "ghz = QuantumCircuit(3)\nghz.h(0)\nghz.cx(0, 1)\nghz.cx(1, 2)\nghz.measure_all()\n"
        "made_in_cell = True\n"
        "ghz"
    )
    assert "300 shots" in out.text
    assert kernel.value("made_in_cell") is True  # the cell ran in the user namespace
    got = counts(kernel, "_")
    assert got == counts(
        kernel, "qmlops_jupyter.submit(ghz, shots=300, seed=3, wait=True).result()"
    )
    assert set(got[0]) == {"000", "111"}
    assert kernel.value("qmlops_jupyter.jobs(limit=2)[1].name") == "py-cell"

    # A list is one job of several circuits.
    kernel.ok("%%qmlops run --seed 4 --shots 100\n[qc, ghz]")
    assert [set(c) for c in counts(kernel, "_")] == [{"00", "11"}, {"000", "111"}]


def test_run_braket_and_pennylane_circuits(kernel: Kernel) -> None:
    cell = (
        "%%qmlops run --seed 9 --shots 200\n"
        "from braket.circuits import Circuit\n"
        "import pennylane as qml\n"
        "bk = Circuit().h(0).cnot(0, 1)\n"
        "tape = qml.tape.QuantumScript([qml.Hadamard(0), qml.CNOT([0, 1])], "
        "[qml.counts(wires=[0, 1])])\n"
        "[bk, tape]"
    )
    kernel.ok(cell)
    got = counts(kernel, "_")
    assert [set(c) for c in got] == [{"00", "11"}, {"00", "11"}]
    assert got == counts(
        kernel, "qmlops_jupyter.submit([bk, tape], shots=200, seed=9, wait=True).result()"
    )


def test_run_no_wait_returns_the_job(kernel: Kernel) -> None:
    out = kernel.ok(f"%%qmlops run --no-wait --seed 5 --name later\n{BELL_QASM2}")
    assert out.result is not None and "text/html" in out.result
    assert not out.stdout
    job_id = kernel.value("_.id")
    assert job_id in out.text
    assert kernel.value("type(_).__name__") == "Job"
    assert kernel.value(f"qmlops_jupyter.get_job({job_id!r}).name") == "later"
    waited = counts(kernel, f"qmlops_jupyter.get_job({job_id!r}).result(timeout=60)")
    assert waited == counts(
        kernel, "qmlops_jupyter.submit(BELL2, shots=1024, seed=5, wait=True).result()"
    )


def test_run_timeout_leaves_the_job_going(kernel: Kernel) -> None:
    message = kernel.usage_error(
        "%%qmlops run --timeout 0.2\nfrom qmlops_testing import slow_circuits\nslow_circuits(2)"
    )
    assert "after 0.2 s; it goes on" in message
    job_id = message.split()[1]
    assert f"%qmlops show {job_id}" in message
    assert kernel.value(f"qmlops_jupyter.get_job({job_id!r}).wait(120).state.value") == (
        "COMPLETED"
    )


# -- submit, jobs, show, cancel --------------------------------------------------------------------


def test_submit_an_expression(kernel: Kernel) -> None:
    out = kernel.ok("%qmlops submit qc --shots 100 --seed 2 --name via-submit")
    job_id = kernel.value("_.id")
    assert job_id in out.text and "text/html" in (out.result or {})
    assert kernel.value("_.record.name") == "via-submit"
    # Expressions may hold brackets, quotes and blanks; --wait waits for the job.
    kernel.ok("circuits = {'a b': qc}")
    kernel.ok("%qmlops submit [circuits['a b'], qc] --shots 50 --seed 2 --wait")
    assert kernel.value("_.state.value") == "COMPLETED"
    assert kernel.value("len(_.result().counts)") == 2


def test_jobs_show_and_cancel(kernel: Kernel) -> None:
    kernel.ok(f"%%qmlops run --seed 1 --shots 10 --name listed\n{BELL_QASM2}")
    done = kernel.value("qmlops_jupyter.jobs(limit=1)[0].id")
    # Without waiting and with no engine in this setting, the job stays CREATED: cancellable.
    kernel.ok(f"%%qmlops run --no-wait --name to-cancel\n{BELL_QASM2}")
    pending = kernel.value("_.id")

    out = kernel.ok("%qmlops jobs --limit 2")
    assert kernel.value("type(_).__name__") == "JobList"
    assert kernel.value("[j.id for j in _]") == [pending, done]
    assert "text/html" in (out.result or {}) and pending in out.text
    out = kernel.ok("%qmlops jobs --state completed --limit 50")
    assert kernel.value("sorted({j.state.value for j in _})") == ["COMPLETED"]
    assert pending not in out.text

    out = kernel.ok(f"%qmlops show {done[:8]} --events")
    assert kernel.value("_.id") == done
    assert "RUNNING -> COMPLETED" in out.stdout
    assert "text/html" in (out.result or {}) and "COMPLETED" in out.text

    out = kernel.ok(f"%qmlops cancel {pending[:8]}")
    assert out.stdout.strip() == f"job {pending}: CANCELLED"
    assert kernel.value(f"qmlops_jupyter.get_job({pending!r}).state.value") == "CANCELLED"
    assert "already COMPLETED" in kernel.usage_error(f"%qmlops cancel {done}")


# -- backends, estimate, budget, env ---------------------------------------------------------------


def test_backends_table(kernel: Kernel) -> None:
    out = kernel.ok("%qmlops backends")
    assert out.result is not None
    html, text = out.result["text/html"], out.text
    for name in ("aer", "ionq", "ibm"):
        assert name in html and name in text
    assert "credentials" in text.lower()
    assert "not needed" in text  # aer's credential status


def test_estimate_and_budget(kernel: Kernel) -> None:
    out = kernel.ok("%qmlops estimate [qc, qc] --shots 100")
    assert out.text.startswith("estimate  $0.00 for 2 circuit(s) x 100 shots on aer")
    assert "free" in out.text and "<table" in (out.result or {}).get("text/html", "")
    out = kernel.ok("%qmlops estimate qc --backend ionq:simulator --shots 1000")
    assert "on ionq:simulator" in out.text

    out = kernel.ok("%qmlops budget")
    assert out.text.startswith("no budgets")
    try:
        kernel.ok("qmlops_jupyter.get_client().set_budget(backend='aer', shots_per_day=150)")
        out = kernel.ok("%qmlops budget")
        assert "aer" in out.text and "150 shots" in out.text and "day" in out.text
        assert "<table" in (out.result or {}).get("text/html", "")
        message = kernel.usage_error("%qmlops submit qc --shots 10000")
        assert "budget" in message.lower()
    finally:
        kernel.ok(
            "from qmlops_jupyter.cost.budgets import remove_budget\n"
            "_c = qmlops_jupyter.get_client()\nremove_budget(_c.ledger, _c.owner, 'aer')"
        )


def test_env_table(kernel: Kernel) -> None:
    out = kernel.ok("%qmlops env")
    assert out.result is not None
    for name in ("Python", "qmlops_jupyter", "qiskit", "pennylane", "mlflow", "CPUs"):
        assert name in out.text and name in out.result["text/html"], name


# -- widgets ---------------------------------------------------------------------------------------


def test_watch_shows_a_job_monitor(kernel: Kernel) -> None:
    kernel.ok(f"%%qmlops run --seed 1 --shots 10 --name watched\n{BELL_QASM2}")
    job_id = kernel.value("qmlops_jupyter.jobs(limit=1)[0].id")
    out = kernel.ok(f"%qmlops watch {job_id[:8]}")
    assert WIDGET_VIEW in (out.result or {})
    assert kernel.value("type(_).__name__") == "JobMonitor"
    assert kernel.value("[r['id'] for r in _.rows]") == [job_id]
    kernel.ok("_.stop()")
    out = kernel.ok("%qmlops watch --limit 3")
    assert kernel.value("len(_.rows)") == 3
    kernel.ok("_.stop()")


def test_creds_opens_the_form_and_refuses_secrets(kernel: Kernel) -> None:
    out = kernel.ok("%qmlops creds ionq-main --provider ionq")
    assert WIDGET_VIEW in (out.result or {})
    assert kernel.value("(type(_).__name__, _.alias, _.provider)") == [
        "CredentialForm",
        "ionq-main",
        "ionq",
    ]
    kernel.ok("%qmlops creds")
    kernel.ok("%qmlops creds --provider=braket")
    assert kernel.value("_.provider") == "aws"

    refused = [
        f"%qmlops creds ionq-main --provider ionq --api-key {SECRET}",
        f"%qmlops creds ionq-main {SECRET}",
        f"%qmlops creds {SECRET}",
        "%qmlops creds AKIAIOSFODNN7EXAMPLE",
        f"%qmlops creds ionq-main --provider {SECRET}",
        f"%qmlops creds --token={SECRET}",
        f'%qmlops creds "{SECRET}',
        f"%qmlops use --credential {SECRET}",
        f"%%qmlops run --credential {SECRET}\nran_the_cell = True\nqc",
        f"%qmlops submit qc --credential={SECRET}",
        f"%qmlops submit qc --api-key {SECRET}",
        f"%qmlops jobs --token={SECRET}",
    ]
    for line in refused:
        message = kernel.usage_error(line)
        assert "secrets are never typed on a magic line" in message, line
        assert SECRET not in message and "AKIAIOSFODNN7EXAMPLE" not in message
    assert kernel.value("'ran_the_cell' in globals()") is False  # refused before running
    # The notebook's cell is rewritten too: its %qmlops line replaced, its other lines kept.
    out = kernel.run(f"x = 1\n%qmlops creds ionq-main {SECRET}")
    (replace,) = [p for p in out.payload if p.get("source") == "set_next_input"]
    assert replace["replace"] is True and SECRET not in replace["text"]
    assert replace["text"].splitlines() == ["x = 1", SCRUBBED]
    # An unknown argument that is no key is only an unknown argument.
    assert "unrecognized arguments: extra" in kernel.usage_error("%qmlops jobs extra")
    # Those lines are gone from the kernel's history: In, _iN, and IPython's database.
    kernel.ok("get_ipython().history_manager.writeout_cache()")
    history = kernel.value(
        "[list(r) for r in get_ipython().history_manager.db.execute("
        "'SELECT source, source_raw FROM history')] + [In, _ih, _i, _ii]"
        " + [v for k, v in globals().items() if k.startswith('_i') and isinstance(v, str)]"
    )
    dumped = json.dumps(history)
    assert SECRET not in dumped and "AKIAIOSFODNN7EXAMPLE" not in dumped
    assert "%qmlops creds ionq-main --provider ionq" in dumped  # harmless lines stay


# -- tracked runs ----------------------------------------------------------------------------------


def test_track_across_cells_with_tracking_off(kernel: Kernel) -> None:
    out = kernel.ok("%qmlops track sweep-1")
    assert "tracked run open: 'sweep-1' (tracking is off, nothing logged)" in out.stdout
    assert "UserWarning" not in out.stderr
    assert "'sweep-1' is open" in kernel.usage_error("%qmlops track another")
    kernel.ok(f"%%qmlops run --seed 1 --shots 10\n{BELL_QASM2}")
    kernel.ok(f"%%qmlops run --seed 2 --shots 10\n{BELL_QASM2}")
    assert "2 job(s)" in kernel.ok("%qmlops track").stdout
    assert "tracked run ended: 'sweep-1'" in kernel.ok("%qmlops track stop").stdout
    assert "no tracked run is open" in kernel.usage_error("%qmlops track stop")


def test_track_logs_the_cells_jobs_to_one_mlflow_run(tmp_path: Path) -> None:
    """With tracking on (the default): jobs between ``%qmlops track NAME`` and ``%qmlops track
    stop`` go to that MLflow run; ``%%qmlops run --track`` makes a run of its own, nested."""
    env = kernel_env(tmp_path / "home", tmp_path)
    del env["QMLOPS_TRACKING"]
    kernel = Kernel(env, tmp_path)
    try:
        kernel.ok("%load_ext qmlops_jupyter\nimport qmlops_jupyter")
        out = kernel.ok("%qmlops track magic-run --experiment magics")
        assert "'magic-run' (experiment 'magics'), 0 job(s), MLflow run " in out.stdout
        run_id = kernel.value(
            "get_ipython().magics_manager.registry['QmlopsMagics'].session.run.run_id"
        )
        kernel.ok(f"%%qmlops run --seed 1 --shots 10\n{BELL_QASM2}")
        kernel.ok("first = qmlops_jupyter.jobs(limit=1)[0]")
        kernel.ok(f"%%qmlops run --seed 1 --shots 10 --track inner\n{BELL_QASM2}")
        kernel.ok("second = qmlops_jupyter.jobs(limit=1)[0]")
        out = kernel.ok("%qmlops track stop")
        assert f"'magic-run' (experiment 'magics'), 1 job(s), MLflow run {run_id}" in out.stdout
        assert kernel.value("first.mlflow_run_id") == run_id
        inner = kernel.value("second.mlflow_run_id")
        assert inner and inner != run_id
        parent = kernel.value(
            "__import__('mlflow').tracking.MlflowClient("
            "qmlops_jupyter.get_client().tracking.config.uri)"
            ".get_run(second.mlflow_run_id).data.tags['mlflow.parentRunId']"
        )
        assert parent == run_id
    finally:
        kernel.close()


# -- through a Jupyter server: a kernel restart mid-job --------------------------------------------


def test_a_job_outlives_a_kernel_restart(tmp_path: Path) -> None:
    """A kernel the server started submits a slow job with ``%%qmlops run --no-wait``; the
    kernel is restarted; after it, ``%qmlops jobs`` still lists the job, which the server's
    engine completes."""
    tests = str(Path(__file__).resolve().parent)
    env = jupyter_env(tmp_path / "home", tmp_path, PYTHONPATH=tests)
    server = JupyterServer(tmp_path / "root", env, tmp_path / "server.log")
    try:
        server.start()
        kernel_id = server.start_session("restart.ipynb")
        output, errors = server.execute(
            kernel_id,
            "%load_ext qmlops_jupyter\n"
            "import qmlops_jupyter\n"
            "print('CLIENT', type(qmlops_jupyter.get_client()).__name__)",
        )
        assert not errors, errors
        assert "CLIENT RemoteClient" in output
        output, errors = server.execute(
            kernel_id,
            "%%qmlops run --no-wait --name outlives-kernel\n"
            "from qmlops_testing import slow_circuits\n"
            "slow_circuits(6)",
        )
        assert not errors, errors
        output, errors = server.execute(kernel_id, "print('JOB', _.id)")
        assert not errors, errors
        job_id = output.split("JOB", 1)[1].split()[0]
        before = server.api("GET", f"/jobs/{job_id}")
        assert before["state"] in ("CREATED", "SUBMITTING", "QUEUED", "RUNNING"), before

        status, _ = server.request("POST", f"/api/kernels/{kernel_id}/restart", {})
        assert status == 200
        output, errors = server.execute(
            kernel_id,
            "import os\nprint('PID', os.getpid())\n"
            "%load_ext qmlops_jupyter\n"
            "import qmlops_jupyter\n"
            "print('CLIENT', type(qmlops_jupyter.get_client()).__name__)\n"
            "listed = %qmlops jobs --limit 5\n"
            "print('LISTED', [(j.id, j.name, j.record.state.value) for j in listed])\n"
            f"job = qmlops_jupyter.get_job({job_id!r}).wait(timeout=170)\n"
            "print('STATE', job.state.value, len(job.result().counts))\n"
            f"shown = %qmlops show {job_id[:8]}\n"
            "print('SHOWN', shown.record.state.value)",
        )
        assert not errors, errors
        pid = int(output.split("PID", 1)[1].split()[0])
        server.kernel_pids.append(pid)  # the restarted kernel, for stop() to end
        assert "CLIENT RemoteClient" in output
        listed = ast.literal_eval(output.split("LISTED", 1)[1].splitlines()[0].strip())
        assert listed[0][:2] == (job_id, "outlives-kernel")
        assert listed[0][2] in ("QUEUED", "RUNNING", "COMPLETED", "SUBMITTING")
        assert "STATE COMPLETED 6" in output
        assert "SHOWN COMPLETED" in output
        assert server.api("GET", f"/jobs/{job_id}")["state"] == "COMPLETED"
    finally:
        server.stop()
