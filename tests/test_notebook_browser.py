"""What a user sees in JupyterLab: notebooks run in a real ``jupyter lab`` (the qmlops server
extension enabled as installed, its engine running the jobs) and rendered by headless Chromium
(see ``browser.py``). One JupyterLab and one browser for the module.

- A plain ipywidget renders, follows the kernel and is saved with its widget state: the harness
  itself works.
- JobMonitor shows a job submitted from the notebook move to COMPLETED, pushed by the server's
  job events, without a reload.
- The credential form, the magics and the widgets leave no secret in the saved notebook, its
  checkpoint, the kernel's IPython history or the server's log.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

# Helpers and fixtures of the browser tests (registered as a plugin below); rewritten like a
# conftest so their assertions explain themselves.
pytest.register_assert_rewrite("browser")
from browser import (  # noqa: E402
    JupyterLab,
    expect,
    ipython_history,
    open_notebook,
    secret_hits,
)

pytest_plugins = ["browser"]

TESTS = Path(__file__).parent
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
#: An IonQ key typed in the credential form's password field.
FORM_SECRET = "IqB7f2Kx9LmQ4wZr8TnV3cYh6PdS1aGe"
#: A key typed on a magic line, which must be refused.
LINE_SECRET = "Zp4Xc9Vb2Nm7Lk5Jh3Gf8Ds6Aq1Ww0Ee"
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}


def widget_state(notebook: dict[str, Any]) -> dict[str, Any]:
    """The widget models saved in a notebook's metadata, by model id."""
    return notebook["metadata"]["widgets"][WIDGET_STATE]["state"]


def test_an_ipywidget_renders_follows_the_kernel_and_is_saved_with_its_state(
    lab: JupyterLab, lab_page: Any
) -> None:
    lab.write_notebook(
        "slider.ipynb",
        [
            "import ipywidgets as w\nslider = w.IntSlider(value=3, description='smoke')\nslider",
            "slider.value = 7",
        ],
    )
    notebook = open_notebook(lab_page, lab, "slider.ipynb")
    notebook.run_all()
    expect(notebook.output(0).locator(".widget-readout")).to_have_text("7")
    notebook.save()
    sliders = [
        m["state"]
        for m in widget_state(lab.read_notebook("slider.ipynb")).values()
        if m["model_name"] == "IntSliderModel"
    ]
    assert [s["value"] for s in sliders] == [7]
    notebook.close()


#: Records, in the page, every state each job's monitor row shows (and survives only as long
#: as the page is not reloaded).
RECORD_ROW_STATES = """() => {
    const seen = window.qmlopsRowStates = {};
    const look = () => {
        for (const row of document.querySelectorAll('.qmlops-job-cells[data-job-id]')) {
            const states = seen[row.dataset.jobId] = seen[row.dataset.jobId] || [];
            if (states[states.length - 1] !== row.dataset.state) {
                states.push(row.dataset.state);
            }
        }
    };
    new MutationObserver(look).observe(document.body, {
        subtree: true, childList: true, attributes: true, attributeFilter: ['data-state'],
    });
}"""


def test_job_monitor_renders_in_jupyterlab_and_follows_a_job_to_completed(
    lab: JupyterLab, lab_page: Any
) -> None:
    lab.write_notebook(
        "monitor.ipynb",
        [
            f"import sys\nsys.path.insert(0, {str(TESTS)!r})\n"
            "from qmlops_testing import slow_circuits\n"
            "import qmlops_jupyter\n"
            "from qmlops_jupyter.client import get_client\n"
            "print(type(get_client()).__name__)\n"
            "job = qmlops_jupyter.submit(slow_circuits(count=3), backend='aer', shots=64,\n"
            "                            name='browser-slow', wait=False)\n"
            "print(job.id)",
            "from qmlops_jupyter.notebook.widgets import JobMonitor\n"
            "monitor = JobMonitor([job])\n"
            "monitor",
        ],
    )
    notebook = open_notebook(lab_page, lab, "monitor.ipynb")
    lab_page.evaluate(RECORD_ROW_STATES)
    notebook.run_all()
    client, job_id = "".join(o.get("text", "") for o in notebook.outputs()[0]).split()
    assert client == "RemoteClient"  # the job went through the server; its engine runs it

    monitor = notebook.output(1).locator(".qmlops-job-monitor")
    row = monitor.locator(f'.qmlops-job-cells[data-job-id="{job_id}"]')
    expect(row).to_be_visible()
    expect(row.locator(".qmlops-job-name")).to_contain_text("browser-slow")
    expect(row.locator(".qmlops-job-backend")).to_have_text("aer")
    expect(monitor.locator(".qmlops-monitor-status")).to_contain_text("live")
    expect(row).to_have_attribute("data-state", "COMPLETED", timeout=180_000)
    expect(row.locator(".qmlops-state")).to_have_text("COMPLETED")
    # The finished job has no cancel button left.
    expect(monitor.locator(f".qmlops-job-{job_id} .qmlops-cancel")).to_be_hidden()
    notebook.screenshot("job-monitor-completed")
    notebook.screenshot("job-monitor-completed-widget", monitor)

    states = lab_page.evaluate("(id) => window.qmlopsRowStates[id]", job_id)
    assert states[-1] == "COMPLETED" and states[0] not in TERMINAL, states
    assert "RUNNING" in states, states
    print(f"monitor row states: {states}")
    assert lab.api("GET", f"/jobs/{job_id}")["state"] == "COMPLETED"
    notebook.close()


def test_no_secret_in_the_saved_notebook_its_checkpoint_history_or_log(
    lab: JupyterLab, lab_page: Any
) -> None:
    name = "credentials.ipynb"
    lab.write_notebook(
        name,
        [
            "%load_ext qmlops_jupyter",
            "%qmlops backends",
            "%qmlops creds ionq-browser --provider ionq",
            "from qmlops_jupyter.notebook.widgets import BackendPicker, JobMonitor\n"
            "display(BackendPicker())\n"
            "JobMonitor()",
            "",  # where the user types a key on a magic line
        ],
    )
    notebook = open_notebook(lab_page, lab, name)
    notebook.run_all()
    expect(notebook.output(1)).to_contain_text("aer")
    expect(notebook.output(3).locator(".qmlops-backend-picker")).to_be_visible()
    expect(notebook.output(3).locator(".qmlops-job-monitor")).to_be_visible()

    # The secret is typed in the form's password field and saved; the masked answer comes back.
    form = notebook.output(2).locator(".qmlops-credential-form")
    expect(form.locator(".qmlops-cred-alias")).to_have_value("ionq-browser")
    key = form.locator('.qmlops-cred-field[data-field="api_key"]')
    expect(key).to_have_attribute("type", "password")
    key.fill(FORM_SECRET)
    form.locator(".qmlops-cred-save").click()
    expect(form.locator(".qmlops-cred-status")).to_have_attribute("data-state", "ok")
    hint = "…" + FORM_SECRET[-4:]
    expect(form.locator(".qmlops-cred-saved")).to_contain_text(f"ionq-browser (ionq, {hint})")
    expect(key).to_have_value("")
    notebook.screenshot("credential-form-saved", form)

    # A key typed on a magic line is refused without being repeated; the user clears the cell,
    # as the message asks.
    notebook.type_in_cell(4, f"%qmlops creds ionq-line {LINE_SECRET}")
    outputs = notebook.run_cell(4)
    refusal = "".join(o.get("text", "") for o in outputs if o.get("name") == "stderr")
    assert refusal.startswith("UsageError:") and "never typed on a magic line" in refusal
    assert LINE_SECRET not in str(outputs)
    notebook.type_in_cell(4, "")
    assert notebook.source(4) == ""
    notebook.save()

    saved = lab.read_notebook(name)
    forms = [m["state"] for m in widget_state(saved).values() if m["state"].get("providers")]
    assert [f["saved"].get("hint") for f in forms] == [hint], forms
    notebook.close()
    lab.wait_no_kernels()

    checkpoint = lab.root / ".ipynb_checkpoints" / "credentials-checkpoint.ipynb"
    assert checkpoint.is_file()
    history = ipython_history(lab)
    with sqlite3.connect(history) as db:
        inputs = [row[0] for row in db.execute("SELECT source_raw FROM history")]
    assert "%qmlops backends" in inputs, inputs  # the database the kernel wrote
    # Everything the lab wrote: notebooks and checkpoints, IPython's and Jupyter's folders, the
    # private HOME, QMLOPS_HOME (the vault holds ciphertext only) and the server's log.
    files = [p for p in lab.folder.rglob("*") if p.is_file()]
    assert lab.log_path in files and history in files
    for secret in (FORM_SECRET, LINE_SECRET):
        assert secret_hits(secret, files) == [], secret[:4]

    stored = {c["alias"]: c for c in lab.api("GET", "/credentials")}
    assert stored["ionq-browser"]["provider"] == "ionq"
    assert stored["ionq-browser"]["hint"] == hint
    assert "ionq-line" not in stored
