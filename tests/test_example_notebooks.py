"""The example notebooks do what they claim, run by papermill as a pipeline would run them.

Each example under ``notebooks/`` is executed by ``papermill.execute_notebook`` in a real
``python3`` kernel (this venv's ipykernel) with a throwaway ``QMLOPS_HOME`` and MLflow store in
the kernel's environment, sometimes with smaller parameters. Its last cell (tagged ``results``)
prints a JSON summary; the tests read it from the executed notebook and check the physics and
the numbers against values worked out here, independently of the notebook: the Bell pair's
counts, the VQE energy against the full-CI energy of H2, the QAOA cut against a brute force over
the notebook's own edges, the classifier's accuracy, the pipeline's job in the ledger. The
hardware pipeline also runs against the loopback IonQ emulator with a credential named by alias.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from qmlops_testing import use_this_python_for_kernels

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
EXAMPLES = [
    "quickstart.ipynb",
    "vqc_classifier.ipynb",
    "vqe_h2.ipynb",
    "qaoa_maxcut.ipynb",
    "hardware_pipeline.ipynb",
]
#: Full-CI energy of H2 in STO-3G at 0.735 Å, nuclear repulsion included (Hartree).
H2_FCI_0735 = -1.137306
CHEMICAL_ACCURACY = 1.6e-3
QMLOPS = Path(sys.executable).with_name("qmlops")


# -- the notebooks as files --------------------------------------------------------------------


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_has_a_tagged_parameters_cell_and_a_results_cell(name: str) -> None:
    import nbformat

    path = NOTEBOOKS_DIR / name
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert (nb.nbformat, nb.nbformat_minor) >= (4, 5)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert all(cell.get("id") for cell in nb.cells)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", []), "the first code cell is the parameters"
    assert "results" in code[-1].metadata.get("tags", []), "the last code cell prints the results"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    # Papermill parameters are plain literals it can override.
    assert "import" not in code[0].source


# -- running them ------------------------------------------------------------------------------


@pytest.fixture
def kernel_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The environment papermill's kernel inherits: a fresh QMLOPS_HOME (returned), a fresh
    MLflow store, tracking on, this venv's Python as the ``python3`` kernel."""
    home = tmp_path / "qmlops-home"
    monkeypatch.setenv("QMLOPS_HOME", str(home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    for var in (
        "QMLOPS_DATABASE_URL",
        "QMLOPS_BACKENDS_FILE",
        "QMLOPS_OWNER",
        "QMLOPS_CONFIG_FILE",
        "QMLOPS_TRACKING",
        "QMLOPS_REMOTE",
        "QMLOPS_SERVER_URL",
        "MLFLOW_EXPERIMENT_NAME",
        "QMLOPS_EXPERIMENT",
        "IONQ_API_KEY",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter-runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    use_this_python_for_kernels(tmp_path, monkeypatch)
    # Create the store's tables now, as a long-lived store would have them: a kernel's
    # background sender then spends no time on MLflow's migrations while its notebook ends.
    from mlflow.tracking import MlflowClient

    MlflowClient(os.environ["MLFLOW_TRACKING_URI"]).search_experiments()
    return home


def run_example(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **parameters: Any
) -> tuple[dict[str, Any], Any]:
    """Execute one example with papermill; its results (the JSON its last cell prints) and the
    executed notebook."""
    import nbformat
    import papermill

    source = NOTEBOOKS_DIR / name
    output = tmp_path / f"executed-{name}"
    # Papermill's Python API leaves no trace in the kernel: say which notebook this is, and
    # its parameters, as `qmlops pipeline run` does.
    monkeypatch.setenv("QMLOPS_NOTEBOOK_PATH", str(source))
    monkeypatch.setenv("QMLOPS_PIPELINE_PARAMETERS", json.dumps(parameters))
    try:
        papermill.execute_notebook(
            str(source),
            str(output),
            parameters=parameters,
            kernel_name="python3",
            cwd=str(NOTEBOOKS_DIR),
            progress_bar=False,
            execution_timeout=120,
        )
    except papermill.PapermillExecutionError as exc:
        pytest.fail(f"{name} failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue}")
    executed = nbformat.read(output, as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == (1 if parameters else 0)
    (last,) = [c for c in executed.cells if "results" in c.metadata.get("tags", [])]
    text = "".join(o.get("text", "") for o in last.outputs if o.output_type == "stream")
    lines = [line for line in text.splitlines() if line.startswith("{")]
    assert lines, f"{name}: no JSON results in its last cell:\n{text}"
    return json.loads(lines[-1]), executed


def ledger_jobs(home: Path) -> list[Any]:
    from qmlops_jupyter.ledger import Ledger

    ledger = Ledger.open(f"sqlite:///{home}/ledger.sqlite")
    try:
        return ledger.list_jobs(None, limit=1000).jobs
    finally:
        ledger.close()


def all_completed(home: Path) -> list[Any]:
    from qmlops_jupyter.states import JobState

    jobs = ledger_jobs(home)
    assert jobs
    assert {job.id: job.state for job in jobs if job.state is not JobState.COMPLETED} == {}
    return jobs


def tracked_runs() -> dict[str, Any]:
    """Every MLflow run of the store, by id, once all of them have ended: ``qmlops runs --sync``
    (the real CLI, as a user would run it) sends whatever still waits in the outbox.

    A kernel that exits while its background sender is sending leaves those records leased to
    it; they can be sent again only when the lease runs out, hence the long deadline (usually
    the first attempt finds every run ended)."""
    from mlflow.tracking import MlflowClient

    from qmlops_jupyter.tracking.outbox import LEASE_SECONDS

    deadline = time.monotonic() + LEASE_SECONDS + 30
    while True:
        done = subprocess.run(
            [str(QMLOPS), "runs", "--sync", "--json", "--limit", "100"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        runs = json.loads(done.stdout)
        if all(r["status"] == "FINISHED" for r in runs) or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    return {r["run_id"]: client.get_run(r["run_id"]) for r in runs}


def metric_history(run_id: str, key: str) -> list[float]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    points = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
    return [m.value for m in points]


@pytest.mark.slow
def test_quickstart_bell_ghz_and_correlations(
    kernel_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results, _ = run_example("quickstart.ipynb", tmp_path, monkeypatch, shots=2000, seed=3)

    bell = results["bell_counts"]
    assert sum(bell.values()) == 2000  # the injected shots reached the magics
    assert set(bell) == {"00", "11"}
    assert abs(bell["00"] / 2000 - 0.5) < 0.05
    assert set(results["ghz_counts"]) == {"000", "111"}
    assert results["correlations"][0] == 1.0 and results["correlations"][-1] == -1.0
    assert results["worst_correlation_error"] < 0.1
    assert results["monitored_jobs"] >= 2

    jobs = all_completed(kernel_env)
    assert {job.name for job in jobs} >= {"bell", "ghz-3"}
    assert len(jobs) == 2 + 5  # two magics, five tracked angles
    run = tracked_runs()[results["mlflow_run_id"]]
    assert run.info.status == "FINISHED"
    assert len(metric_history(run.info.run_id, "zz")) == 5


@pytest.mark.slow
def test_vqc_classifier_learns_the_moons(
    kernel_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results, _ = run_example("vqc_classifier.ipynb", tmp_path, monkeypatch, epochs=8)

    assert results["epochs"] == 8
    assert results["test_accuracy"] >= 0.8
    assert results["test_accuracy_exact"] >= 0.8
    assert results["test_points"] == 60

    (job,) = all_completed(kernel_env)  # the test set: one job through the qmlops device
    assert job.id == results["evaluation_job"]
    assert len(job.circuits) == 60
    assert job.tags.get("device") == "qmlops"

    runs = tracked_runs()
    training = runs[results["mlflow_run_id"]]
    assert training.data.params["epochs"] == "8"
    losses = metric_history(training.info.run_id, "loss")
    assert len(losses) == 8 and losses[-1] < losses[0]
    assert len(metric_history(training.info.run_id, "test_accuracy")) == 8
    evaluation = runs[results["evaluation_mlflow_run_id"]]
    assert evaluation.data.metrics["test_accuracy"] == pytest.approx(results["test_accuracy"])


@pytest.mark.slow
def test_vqe_h2_reaches_chemical_accuracy(
    kernel_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results, _ = run_example("vqe_h2.ipynb", tmp_path, monkeypatch)

    assert results["exact_energy"] == pytest.approx(H2_FCI_0735, abs=1e-5)
    assert abs(results["vqe_energy"] - H2_FCI_0735) < CHEMICAL_ACCURACY
    assert abs(results["ansatz_energy"] - H2_FCI_0735) < CHEMICAL_ACCURACY
    # Hartree-Fock misses about 20 mHa of correlation energy: VQE had something to find.
    assert results["hartree_fock_energy"] - H2_FCI_0735 > 0.015

    jobs = {job.id: job for job in all_completed(kernel_env)}
    assert len(jobs) == results["iterations"] + 1
    final = jobs[results["final_job"]]
    assert len(final.circuits) == 14 and final.shots == 100000
    assert len(final.result.expectation_values) == 14

    run = tracked_runs()[results["mlflow_run_id"]]
    energies = metric_history(run.info.run_id, "energy")
    assert len(energies) == results["iterations"]
    assert min(energies) < energies[0]  # from Hartree-Fock downwards
    assert run.data.metrics["vqe_energy"] == pytest.approx(results["vqe_energy"])


@pytest.mark.slow
def test_qaoa_finds_the_maximum_cut(
    kernel_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results, _ = run_example("qaoa_maxcut.ipynb", tmp_path, monkeypatch)

    edges = [tuple(e) for e in results["edges"]]
    assert len(edges) == 9  # 3-regular on 6 nodes
    best = max(
        sum(bits[i] != bits[j] for i, j in edges) for bits in itertools.product((0, 1), repeat=6)
    )
    assert results["max_cut"] == best
    assert results["best_sampled_cut"] == best
    side = results["best_bitstring"][::-1]  # Qiskit's order: node i is character -1 - i
    assert sum(side[i] != side[j] for i, j in edges) == best
    assert results["random_ratio"] < results["approximation_ratio"] <= 1.0

    jobs = {job.id: job for job in all_completed(kernel_env)}
    assert len(jobs) == results["evaluations"] + 2  # the grid scan, COBYLA's, the final sample
    assert any(len(job.circuits) == 144 for job in jobs.values())  # the 12 x 12 grid, one job
    run = tracked_runs()[results["mlflow_run_id"]]
    assert len(metric_history(run.info.run_id, "expected_cut")) == results["evaluations"]


@pytest.mark.slow
def test_hardware_pipeline_on_aer(
    kernel_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results, _ = run_example("hardware_pipeline.ipynb", tmp_path, monkeypatch, shots=300)

    assert results["state"] == "COMPLETED" and results["backend"] == "aer"
    (job,) = all_completed(kernel_env)
    assert job.id == results["job_id"]
    assert job.backend == "aer" and job.shots == 300
    assert job.estimated_cost_usd == 0.0
    assert [sum(c.values()) for c in job.result.counts] == [300, 300]
    assert results["ideal_share"] == [1.0, 1.0]
    run = tracked_runs()[results["mlflow_run_id"]]
    assert run.data.params["papermill.shots"] == "300"
    assert run.data.metrics["ghz_ideal_share"] == 1.0


@pytest.mark.slow
def test_hardware_pipeline_on_a_provider_with_a_credential_alias(
    kernel_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same notebook against IonQ's API (the loopback emulator, which accepts only its own
    key): the key is stored once in the vault, the notebook gets only the alias, and neither
    the executed notebook nor the ledger's record of the job holds the key."""
    from qmlops_jupyter.testing.ionq_emulator import start_emulator

    api_key = "emulator-key-7Qx2Lm9Vt4"
    with start_emulator(tmp_path / "ionq", api_key=api_key) as emulator:
        kernel_env.mkdir(parents=True, exist_ok=True)
        (kernel_env / "backends.yaml").write_text(
            f"backends:\n  ionq:simulator:\n    options:\n      api_url: {emulator.url}\n",
            encoding="utf-8",
        )
        stored = subprocess.run(
            [str(QMLOPS), "creds", "set", "ionq-test", "--provider", "ionq"],
            input=api_key + "\n",
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert stored.returncode == 0, stored.stderr
        results, executed = run_example(
            "hardware_pipeline.ipynb",
            tmp_path,
            monkeypatch,
            backend="ionq:simulator",
            credential="ionq-test",
            shots=200,
            wait_timeout=60.0,
        )
        assert emulator.submission_count() == 1

    assert results["state"] == "COMPLETED" and results["credential"] == "ionq-test"
    (job,) = all_completed(kernel_env)
    assert job.backend == "ionq:simulator" and job.provider_job_id
    assert job.options["credential"] == "ionq-test"
    assert [sum(c.values()) for c in job.result.counts] == [200, 200]
    assert results["ideal_share"] == [1.0, 1.0]  # the emulator is noiseless
    assert api_key not in json.dumps(executed)
    assert api_key not in job.model_dump_json()
