"""Parking: a pipeline run that waits for a provider job frees its kernel and is resumed by an
engine host when the job has ended.

Everything is real: ``qmlops pipeline run`` as a process, papermill, ipykernel kernels, a
``qmlops engine`` process with its pipeline duties (the PipelineHost), the IonQ loopback
emulator (``qmlops_jupyter.testing.ionq_emulator``) with a queue time so the job is still
queued when the notebook calls ``wait_for``, and the IonQ key stored once in the vault (the
notebook gets only its alias).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
import qmlops_testing
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from qmlops_testing import use_this_python_for_kernels, wait_for

from qmlops_jupyter.testing.ionq_emulator import EmulatorProcess

pytestmark = pytest.mark.slow

QMLOPS = [sys.executable, "-m", "qmlops_jupyter.cli"]
BACKEND = "ionq:simulator"
API_KEY = "emulator-key-park-5Jd8Qw"
ALIAS = "ionq-park"
#: Long enough for the notebook to reach wait_for while the job is queued at the emulator.
QUEUE_SECONDS = 6.0
PARK_CELL = 4


@pytest.fixture
def world(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """The emulator, backends.yaml pointing at it, the key in the vault, kernels on this
    Python; every process started is killed at the end."""
    for var in ("QMLOPS_PIPELINE_RUN_ID", "QMLOPS_PIPELINE_RUN_DIR", "IONQ_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    use_this_python_for_kernels(tmp_path, monkeypatch)
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter-runtime"))
    emulator = EmulatorProcess(tmp_path / "ionq", QUEUE_SECONDS, api_key=API_KEY).start()
    home.mkdir(parents=True, exist_ok=True)
    (home / "backends.yaml").write_text(
        f"backends:\n  {BACKEND}:\n    options:\n      api_url: {emulator.url}\n      timeout: 5\n",
        encoding="utf-8",
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    stored = subprocess.run(
        [*QMLOPS, "creds", "set", ALIAS, "--provider", "ionq"],
        input=API_KEY + "\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert stored.returncode == 0, stored.stderr
    started: list[subprocess.Popen[bytes]] = []
    yield {"emulator": emulator, "env": env, "procs": started, "home": home}
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
    emulator.kill()


def start_engine(world: dict[str, Any]) -> subprocess.Popen[bytes]:
    engine = qmlops_testing.start_engine(world["env"], stdout=subprocess.DEVNULL)
    world["procs"].append(engine)
    return engine


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0


def engine_alive(home: Path) -> bool:
    from qmlops_jupyter.ledger import Ledger

    ledger = Ledger.open(f"sqlite:///{home / 'ledger.sqlite'}")
    try:
        return bool(ledger.live_engines())
    finally:
        ledger.close()


def write_notebook(path: Path, twice: bool = False) -> Path:
    """Cells: 0 markdown, 1 parameters, 2 set-up, 3 submit, 4 wait (the park), 5 after; with
    ``twice``, 6 a second submit, 7 a second wait, 8 after it."""
    nb = new_notebook(
        cells=[
            new_markdown_cell("A pipeline that waits for a provider job."),
            new_code_cell(
                'backend = "aer"\ncredential = None\nshots = 100\npid_file = ""\n'
                "qmlops_pipeline_run_id = None",
                metadata={"tags": ["parameters"]},
            ),
            new_code_cell(
                "import os\nimport qmlops_jupyter\nfrom qmlops_jupyter.pipeline import wait_for\n"
                "open(pid_file, 'a').write(f'{os.getpid()}\\n')\n"
                "before = 6 * 7\n"
                "def double(x):\n    return 2 * x\n"
                "print('before the park in', os.getpid())"
            ),
            new_code_cell(
                f'BELL = """{qmlops_testing.BELL_QASM2}"""\n'
                "job = qmlops_jupyter.submit(BELL, backend=backend, shots=shots, "
                "credential=credential)\nprint('submitted', job.id)"
            ),
            new_code_cell("result = wait_for(job)"),
            new_code_cell(
                "open(pid_file, 'a').write(f'{os.getpid()}\\n')\n"
                "total = sum(result.counts[0].values())\n"
                "print('after the park', double(before), total, os.getpid())"
            ),
        ]
    )
    if twice:
        nb.cells += [
            new_code_cell(
                "job2 = qmlops_jupyter.submit(BELL, backend=backend, shots=shots + 1, "
                "credential=credential)"
            ),
            new_code_cell("results = wait_for([job2.id])"),
            new_code_cell(
                "open(pid_file, 'a').write(f'{os.getpid()}\\n')\n"
                "print('second park', double(before), total, "
                "sum(results[0].counts[0].values()), os.getpid())"
            ),
        ]
    nbformat.write(nb, str(path))
    return path


def run_parked(
    world: dict[str, Any], tmp_path: Path, twice: bool = False
) -> tuple[dict[str, Any], Path]:
    """``qmlops pipeline run`` of the notebook: it must end at once, PARKED at the wait."""
    pid_file = tmp_path / "kernels.txt"
    notebook = write_notebook(tmp_path / "park.ipynb", twice)
    done = subprocess.run(
        [
            *QMLOPS, "pipeline", "run", str(notebook), "--backend", BACKEND,
            "--credential", ALIAS, "-p", "shots", "150", "-p", "pid_file", str(pid_file),
            "--timeout", "120", "--json",
        ],
        capture_output=True,
        text=True,
        env=world["env"],
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)
    assert run["state"] == "PARKED", run
    assert run["park_cell"] == PARK_CELL and run["parked_at"] is not None
    (job_id,) = run["parked_jobs"]
    assert f"pipeline run {run['id']} parked at cell {PARK_CELL}" in done.stderr
    # The output so far is kept: the job the wait is for was submitted by the notebook.
    assert f"submitted {job_id}" in Path(run["output_path"]).read_text()
    # The kernel that ran the first part is gone: nothing of the run is left running.
    (first_kernel,) = [int(p) for p in pid_file.read_text().split()]
    assert not alive(first_kernel), "the parked run's kernel still runs"
    assert processes_of_run(run["id"]) == []
    assert world["emulator"].submission_count() == 1
    return run, pid_file


def show(world: dict[str, Any], run_id: str) -> dict[str, Any]:
    done = subprocess.run(
        [*QMLOPS, "pipeline", "show", run_id, "--json"],
        capture_output=True,
        text=True,
        env=world["env"],
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def wait_state(world: dict[str, Any], run_id: str, state: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run = show(world, run_id)
        if run["state"] == state or time.monotonic() > deadline:
            break
        if run["state"] in ("FAILED", "TIMED_OUT", "CANCELLED"):
            break
        time.sleep(0.5)
    assert run["state"] == state, (run, _tail(world["home"], run_id))
    return run


def _tail(home: Path, run_id: str) -> str:
    folder = home / "pipelines" / "runs" / run_id
    logs = sorted(folder.glob("*.log"))
    return "\n".join(f"== {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in logs)


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def processes_of_run(run_id: str) -> list[int]:
    marker = f"QMLOPS_PIPELINE_RUN_ID={run_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0") and alive(int(entry.name)):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def zombies_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def zombie_info(pid: int) -> list[str]:
    return [Path(f"/proc/{z}/stat").read_text()[:80] for z in zombies_of(pid)]


def check_resumed(
    run: dict[str, Any], pid_file: Path, world: dict[str, Any], parks: list[int]
) -> None:
    """Values computed before the park are there after it, the results are used, the output
    is stitched, no job was submitted twice."""
    kernels = [int(p) for p in pid_file.read_text().split()]
    assert len(kernels) == len(parks) + 1 and len(set(kernels)) == len(kernels), kernels
    assert run["park_cell"] == parks[-1] and run["error"] is None
    assert world["emulator"].submission_count() == len(parks)
    nb = nbformat.read(run["output_path"], as_version=4)
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    assert sum("injected-parameters" in t for t in tags) == 1
    assert not any("qmlops-restore" in t or "papermill-error-cell-tag" in t for t in tags)
    # The input cells in order, with their outputs (the injected cell is the second cell).
    cells = [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    assert [c.source for c in cells] == [
        c.source for c in nbformat.read(run["notebook"], as_version=4).cells
    ]
    texts = ["".join(o.get("text", "") for o in c.get("outputs", [])) for c in cells]
    # Each cell keeps the output of the kernel that ran it.
    assert f"before the park in {kernels[0]}" in texts[2]
    assert f"after the park 84 150 {kernels[1]}" in texts[5]
    if len(parks) > 1:
        assert f"second park 84 150 151 {kernels[2]}" in texts[8]
    assert "PipelineParked" not in json.dumps(nb)
    assert [p["cell"] for p in nb.metadata["qmlops"]["parks"]] == parks
    # The saved variables are gone with the run.
    folder = Path(run["output_path"]).parent
    assert list(folder.glob("parked-state-*")) == []
    assert API_KEY not in json.dumps(nb)


def test_a_run_waiting_on_a_provider_job_parks_and_resumes(world, tmp_path: Path) -> None:
    """The run parks (exit 0, kernel gone), the engine sees the IonQ job complete and resumes
    it from the wait: it completes with the earlier values and the job's counts."""
    engine = start_engine(world)
    wait_for(lambda: engine_alive(world["home"]), 60, "the engine to start")
    run, pid_file = run_parked(world, tmp_path)
    done = wait_state(world, run["id"], "COMPLETED", 90)
    check_resumed(done, pid_file, world, [PARK_CELL])
    assert done["attempts"] == 1
    # The resume process was reaped (it may take a moment to exit after the run ended).
    wait_for(lambda: not zombies_of(engine.pid), 10, f"no zombie child: {zombie_info(engine.pid)}")
    stop(engine)


def test_a_parked_run_resumes_across_an_engine_restart(world, tmp_path: Path) -> None:
    """The engine stops while the run is parked; the job finishes at IonQ meanwhile; the run
    stays PARKED until a new engine starts, which finishes the job and resumes the run. The
    notebook waits twice: the resumed run parks again, and is resumed again."""
    engine = start_engine(world)
    wait_for(lambda: engine_alive(world["home"]), 60, "the engine to start")
    run, pid_file = run_parked(world, tmp_path, twice=True)
    stop(engine)
    (remote,) = world["emulator"].jobs()
    wait_for(
        lambda: world["emulator"].jobs()[0]["status"] == "completed",
        QUEUE_SECONDS + 30,
        "the job to complete at the emulator",
    )
    time.sleep(1.5)
    assert show(world, run["id"])["state"] == "PARKED"  # nobody resumes it without an engine
    assert remote["id"]
    second = start_engine(world)
    done = wait_state(world, run["id"], "COMPLETED", 120)
    check_resumed(done, pid_file, world, [PARK_CELL, PARK_CELL + 3])
    stop(second)


def test_outside_a_pipeline_wait_for_just_waits(world) -> None:
    """No pipeline run in this process and no engine: wait_for advances the job here and
    returns the result (one job), or the results in order (a list of handles and ids)."""
    from qmlops_jupyter.client import get_client, reset_client
    from qmlops_jupyter.pipeline import wait_for as park_or_wait

    reset_client()
    client = get_client()
    job = client.submit(qmlops_testing.BELL_QASM2, backend=BACKEND, shots=120, credential=ALIAS)
    started = time.monotonic()
    result = park_or_wait(job)
    assert time.monotonic() - started > 1.0  # it waited for the emulator's queue
    assert sum(result.counts[0].values()) == 120
    both = park_or_wait([job, job.id])
    assert [sum(r.counts[0].values()) for r in both] == [120, 120]
    assert job.refresh().state.value == "COMPLETED"


def test_a_running_run_refreshes_its_heartbeat(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner's heartbeat thread against a real SQLite ledger: ``heartbeat_at`` moves on
    while the run is RUNNING, and a run that is no longer RUNNING is left alone."""
    from qmlops_jupyter.client import Client
    from qmlops_jupyter.config import Settings
    from qmlops_jupyter.pipelines import runner
    from qmlops_jupyter.pipelines.models import PipelineRunState
    from qmlops_jupyter.pipelines.store import PipelineRuns, runs

    monkeypatch.setattr(runner, "HEARTBEAT_SECONDS", 0.2)
    client = Client(Settings.from_env(home=home))
    try:
        store = PipelineRuns(client.ledger)
        made = store.create(
            owner=client.owner,
            notebook="/nb.ipynb",
            parameters={},
            max_retries=0,
            timeout=None,
            experiment=None,
        )
        first = client.ledger.clock()
        store.update(made.id, state=PipelineRunState.RUNNING, heartbeat_at=first)

        def beat() -> Any:
            import sqlalchemy as sa

            with client.ledger._read() as conn:
                return conn.execute(
                    sa.select(runs.c.heartbeat_at).where(runs.c.id == made.id)
                ).scalar_one()

        with runner._heartbeat(store, made.id):
            wait_for(lambda: beat() > first, 5, "a heartbeat")
            seen = beat()
            wait_for(lambda: beat() > seen, 5, "another heartbeat")
        store.update(made.id, state=PipelineRunState.PARKED)
        assert store.beat(made.id) is False
    finally:
        client.close()


def test_two_engine_hosts_resume_a_parked_run_once(ledger_url: str, home: Path) -> None:
    """Two PipelineHosts (two engine hosts' duties) on one ledger, SQLite and PostgreSQL: a
    PARKED run whose job has ended is claimed by exactly one of them (a compare-and-set on its
    lease), which launches the real resume process. That process takes the run and, finding
    no saved state in the run's folder, ends it FAILED with the reason; nobody resumes it
    again."""
    from qmlops_jupyter.config import Settings
    from qmlops_jupyter.ledger import Ledger
    from qmlops_jupyter.pipelines import parking
    from qmlops_jupyter.pipelines.host import PipelineHost
    from qmlops_jupyter.pipelines.models import PipelineRunState
    from qmlops_jupyter.pipelines.store import PipelineRuns

    settings = Settings.from_env(home=home, database_url=ledger_url)
    ledger = Ledger.open(ledger_url)
    try:
        store = PipelineRuns(ledger)
        made = store.create(
            owner=settings.owner,
            notebook=str(home / "gone.ipynb"),
            parameters={},
            max_retries=0,
            timeout=None,
            experiment=None,
        )
        store.update(
            made.id,
            state=PipelineRunState.PARKED,
            parked_jobs=["0123456789abcdef"],  # no such job: it counts as ended
            park_cell=2,
            parked_at=ledger.clock(),
        )
        hosts = [PipelineHost(ledger, settings, f"engine-{i}") for i in range(2)]
        launched = [parking.resume_due(host) for host in hosts]
        assert launched == [[made.id], []]

        def ended() -> bool:
            return store.get(made.id, settings.owner).state.terminal

        wait_for(ended, 60, "the resume process to take and end the run")
        run = store.get(made.id, settings.owner)
        assert run.state is PipelineRunState.FAILED
        assert run.error is not None and "could not be resumed" in run.error
        assert "no saved state" in run.error
        assert [parking.resume_due(host) for host in hosts] == [[], []]
    finally:
        ledger.close()
