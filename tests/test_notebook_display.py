"""Rich display in notebooks: jobs, results, backends, job lists and the version table, as
IPython renders them (``_repr_mimebundle_`` through IPython's own formatter), for real jobs run
on Aer in a private home. User input in HTML is always escaped; a job shows its live state."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from html.parser import HTMLParser
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from qmlops_testing import BELL_QASM2, free_port

from qmlops_jupyter.client import Client
from qmlops_jupyter.config import Settings
from qmlops_jupyter.notebook import display
from qmlops_jupyter.notebook.display import EnvTable, JobList
from qmlops_jupyter.states import JobState

HOSTILE = "<img src=x onerror=alert(1)><script>alert('x')</script>&amp;\"'\u202e\x1b[31m"
PLUS = BELL_QASM2.replace("h q[0];", "h q[0];\nh q[1];")


def formatted(obj: Any) -> dict[str, Any]:
    """What IPython would send to the front end for ``obj`` as a cell's value."""
    from IPython.core.formatters import DisplayFormatter

    data, _ = DisplayFormatter().format(obj)
    return data


class Tags(HTMLParser):
    """The element names and attribute names found in some HTML."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attributes: set[str] = set()
        self.text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attributes.update(name for name, _ in attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


# -- jobs and results ------------------------------------------------------------------------


def test_a_completed_job_shows_its_state_and_its_histogram(client: Client) -> None:
    job = client.submit(BELL_QASM2, shots=400, name="bell", seed=11, wait=True)
    data = formatted(job)
    assert set(data) >= {"text/plain", "text/html"}
    html, text = data["text/html"], data["text/plain"]
    assert job.id in html and job.id in text
    assert "COMPLETED" in html and "qmlops-state-completed" in html
    assert html.count("<svg") == 1 and "qmlops-counts" in html  # histogram and counts table
    assert "var(--jp-" in html  # follows JupyterLab's theme
    assert "<script" not in html
    (counts,) = job.result().counts
    for outcome, count in counts.items():
        assert f"{outcome}: {count}" in text
    assert text.startswith(f"Job {job.id} 'bell' on aer: COMPLETED")
    assert "shots: 400" in text and "cost: free" in text
    tags = Tags(html)
    assert {"svg", "table", "details"} <= tags.tags
    assert not tags.attributes & {"onerror", "onclick", "onload"}


def test_results_show_one_histogram_per_circuit_and_expectation_values(client: Client) -> None:
    job = client.submit([BELL_QASM2, PLUS], shots=300, seed=3, wait=True, observables=["ZZ", "ZZ"])
    result = job.result()
    data = formatted(result)
    html, text = data["text/html"], data["text/plain"]
    assert html.count("<svg") == 2 and "circuit 0" in html and "circuit 1" in html
    assert "300 shots, 2 circuits" in text and "circuit 1:" in text
    assert "expectation value" in html and "expectation value" in text
    assert f"{result.expectation_values[0]:.6g}" in text
    for counts in result.counts:
        for outcome, count in counts.items():
            assert f"{outcome}: {count}" in text
    # A big batch shows the first ones and says how many more there are.
    many = result.model_copy(update={"counts": result.counts * 10})
    assert display.result_html(many, max_circuits=3).count("<svg") == 3
    assert "17 more circuits" in display.result_html(many, max_circuits=3)


def test_a_failed_job_shows_its_error(client: Client) -> None:
    job = client.submit(BELL_QASM2, shots=10, name="too slow", job_timeout=0.001)
    time.sleep(0.05)
    client.wait(job.id, timeout=30)
    data = formatted(job)
    html, text = data["text/html"], data["text/plain"]
    assert "FAILED" in html and "qmlops-state-failed" in html
    assert "qmlops-error" in html and "timed out" in html
    assert "error: timed out" in text and "(timeout)" in text
    assert "<svg" not in html  # no result to show


def test_user_input_is_escaped_everywhere(client: Client) -> None:
    job = client.submit(BELL_QASM2, shots=20, name=HOSTILE, tags={"k": HOSTILE}, wait=False, seed=1)
    client.ledger.transition(
        job.id,
        JobState.CREATED,
        JobState.FAILED,
        actor="test",
        error=HOSTILE,
        error_kind="<b>permanent</b>",
    )
    htmls = [
        formatted(job)["text/html"],
        JobList([job])._repr_html_(),
        JobList([job.record])._repr_html_(),
        display.job_html(job.record),
    ]
    for html in htmls:
        tags = Tags(html)
        assert not {"img", "script", "b"} & tags.tags, html
        assert "onerror" not in tags.attributes
        assert "&lt;img src=x onerror=alert(1)&gt;&lt;script&gt;" in html
        assert "&amp;amp;" in html and "&quot;&#x27;" in html
        assert "\u202e" not in html and "\x1b" not in html  # no direction or terminal tricks
    texts = [formatted(job)["text/plain"], JobList([job]).text(), repr(JobList([job]))]
    for text in texts:
        assert "\u202e" not in text and "\x1b" not in text
        assert "<img src=x" in text  # plain text is shown as it is, not as HTML
    # A hostile backend description or status is escaped too.
    (aer,) = [b for b in client.backends() if b.name == "aer"]
    hostile_backend = aer.model_copy(update={"available": False, "status": HOSTILE})
    assert "img" not in Tags(formatted(hostile_backend)["text/html"]).tags


def test_a_job_shows_its_live_state(client: Client, home: Path) -> None:
    """Evaluating ``job`` again shows the job as it is now, not as it was when the handle was
    made: here another process on the same ledger runs it in between."""
    job = client.submit(BELL_QASM2, shots=50, name="later", seed=5)
    before = formatted(job)
    assert "CREATED" in before["text/plain"] and "<svg" not in before["text/html"]
    other = Client(Settings.from_env(home=home))
    try:
        assert other.wait(job.id, timeout=60).state is JobState.COMPLETED
    finally:
        other.close()
    assert job.record.state is JobState.CREATED  # the handle's copy is old ...
    after = formatted(job)
    assert "COMPLETED" in after["text/plain"] and "<svg" in after["text/html"]
    assert job.record.state is JobState.COMPLETED  # ... and the display read it again
    # A finished job is not read again: displaying it costs nothing.
    reads: list[str] = []
    real_get = client.ledger.get_job
    client._ledger.get_job = lambda *a, **k: reads.append(a[0]) or real_get(*a, **k)
    try:
        formatted(job)
    finally:
        del client._ledger.get_job
    assert reads == []


def test_a_job_display_never_raises(client: Client) -> None:
    job = client.submit(BELL_QASM2, shots=10, name="kept")

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OSError("the ledger went away")

    client._ledger.get_job = broken
    try:
        data = formatted(job)
    finally:
        del client._ledger.get_job
    assert "CREATED" in data["text/plain"] and "kept" in data["text/html"]


def test_a_remote_job_is_read_again_with_a_short_timeout_or_shown_as_known(
    client: Client, tmp_path: Path
) -> None:
    from qmlops_jupyter.remote import DISPLAY_TIMEOUT, RemoteClient, RemoteJob

    record = client.submit(BELL_QASM2, shots=10, name="remote").record
    token = tmp_path / "token"
    token.write_text("not-a-real-token")
    remote = RemoteClient(f"http://127.0.0.1:{free_port()}/", token, settings=client.settings)
    try:
        job = RemoteJob(remote, record)
        started = time.monotonic()
        data = formatted(job)  # nobody listens on that port
        assert time.monotonic() - started < DISPLAY_TIMEOUT + 3
        assert "CREATED" in data["text/plain"] and "remote" in data["text/html"]

        asked: list[dict[str, Any]] = []
        moved = record.model_copy(update={"state": JobState.RUNNING, "queue_position": 4})

        def answer(job_id: str, wait: Any = None, **kwargs: Any) -> Any:
            asked.append({"job_id": job_id, "wait": wait, **kwargs})
            return moved

        remote._get = answer  # type: ignore[method-assign]
        data = formatted(job)
        assert "RUNNING" in data["text/plain"] and "queue position: 4" in data["text/plain"]
        assert asked == [{"job_id": record.id, "wait": None, "timeout": DISPLAY_TIMEOUT}]
    finally:
        remote.close()


def test_backends_show_as_a_table(client: Client) -> None:
    infos = client.backends()
    (aer,) = [b for b in infos if b.name == "aer"]
    data = formatted(aer)
    assert "aer" in data["text/html"] and "available" in data["text/html"]
    assert "simulator (local)" in data["text/plain"]
    html, text = display.backends_html(infos), display.backends_text(infos)
    assert html.count("<tr>") == len(infos) + 1
    assert len(text.splitlines()) == len(infos) + 2
    off = aer.model_copy(update={"enabled": False})
    assert "disabled" in display.backends_text([off])
    assert display.backends_text([]) == "no backends"


# -- job lists ---------------------------------------------------------------------------------


def test_job_lists_show_as_tables(client: Client) -> None:
    done = client.submit(BELL_QASM2, shots=10, name="first", wait=True)
    waiting = client.submit(BELL_QASM2, shots=10, name="second")
    jobs = JobList(client.jobs())
    assert [j.id for j in jobs] == [waiting.id, done.id]
    html = formatted(jobs)["text/html"]
    tags = Tags(html)
    assert "table" in tags.tags and html.count("<tr>") == 3
    assert "qmlops-state-completed" in html and "qmlops-state-created" in html
    for header in ("id", "name", "backend", "state", "queue", "elapsed", "cost"):
        assert f">{header}</th>" in html
    assert "2 jobs" in html
    text = formatted(jobs)["text/plain"]
    lines = text.splitlines()
    assert lines[0].split() == ["id", "name", "backend", "state", "queue", "elapsed", "cost"]
    assert lines[2].split()[:4] == [waiting.id, "second", "aer", "CREATED"]
    assert lines[3].split()[:4] == [done.id, "first", "aer", "COMPLETED"]
    # repr is the same table; only a waiting job's elapsed time may have ticked since.
    assert [line.split()[:4] for line in repr(jobs).splitlines()] == [
        line.split()[:4] for line in lines
    ]
    # Records work as well as handles; an empty list says so.
    from_records = JobList([j.record for j in jobs]).text().splitlines()
    assert [line.split()[:4] for line in from_records] == [line.split()[:4] for line in lines]
    assert JobList()._repr_html_().count("no jobs") == 1 and JobList().text() == "no jobs"
    with pytest.raises(TypeError):
        JobList([42]).text()


def test_state_colours_cover_every_state() -> None:
    assert set(display.STATE_COLOURS) == {s.value for s in JobState}
    for colour in display.STATE_COLOURS.values():
        assert colour.startswith("var(--jp-") and "#" in colour  # a theme variable, a fallback


# -- the environment -----------------------------------------------------------------------------


def test_env_table_rows() -> None:
    rows = dict(display.env_rows())
    assert list(rows) == [
        "Python",
        "qmlops_jupyter",
        "qiskit",
        "qiskit-aer",
        "qiskit-ibm-runtime",
        "amazon-braket-sdk",
        "pennylane",
        "mlflow",
        "OS",
        "CPUs",
        "memory",
    ]
    assert rows["Python"].startswith(f"{sys.version_info.major}.{sys.version_info.minor}.")
    for name in ("qiskit", "qiskit-aer", "qiskit-ibm-runtime", "amazon-braket-sdk", "pennylane"):
        assert rows[name] == version(name)
    assert rows["qmlops_jupyter"] == version("qmlops-jupyter")
    assert rows["CPUs"].split()[0].isdigit()
    assert rows["memory"].endswith(" GiB") and float(rows["memory"].split()[0]) > 0
    table = EnvTable()
    html = formatted(table)["text/html"]
    assert all(value in html for value in ("qiskit-aer", rows["qiskit-aer"], "memory"))
    text = repr(table)
    assert text.splitlines()[0].split() == ["software", "/", "machine", "version"]
    assert len(text.splitlines()) == len(rows) + 2


def test_a_missing_distribution_says_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        display, "PACKAGES", (("nothing", ("qmlops-no-such-dist",)), ("mlflow", ("x", "mlflow")))
    )
    rows = dict(display.env_rows())
    assert rows["nothing"] == "not installed"
    assert rows["mlflow"] == f"{version('mlflow')} (mlflow)"


def test_display_stays_light() -> None:
    """Importing the package never loads the display module; the version table reads
    metadata and imports no SDK."""
    code = (
        "import sys, json\n"
        "import qmlops_jupyter, qmlops_jupyter.client, qmlops_jupyter.models\n"
        "before = 'qmlops_jupyter.notebook.display' in sys.modules\n"
        "from qmlops_jupyter.notebook.display import EnvTable\n"
        "EnvTable()._repr_html_()\n"
        "print(json.dumps([before, sorted({m.split('.')[0] for m in sys.modules})]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    before, loaded = json.loads(out.stdout)
    assert before is False
    assert not {"qiskit", "qiskit_aer", "braket", "pennylane", "mlflow", "numpy"} & set(loaded)
