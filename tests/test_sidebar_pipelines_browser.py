"""The sidebar's Pipelines section as a user sees it: a real ``jupyter lab`` (the server
extension and the ``qmlops-jupyter`` labextension as installed, tracking on) rendered by headless
Chromium (see ``browser.py``).

Real components only: saved pipelines made through the core API (``Pipelines.create``) from
this test process on the lab's ledger; runs started through the lab's REST API and from the
sidebar's "Run now" button, each a real runner process executing a tiny notebook with papermill
in a real ipykernel and logging it to the embedded MLflow store; a failed run written into the
ledger by this test process, as a runner elsewhere writes its end. The lab's poll is set to an
hour, so every change the panel shows after it loaded came through ``pipeline_status`` events.

- The section lists the saved pipelines (name, cron, next due time, active chip, last run) and
  the recent runs (state chip, notebook, start, duration, "Open in MLflow"; for the failed run,
  its cell and error line).
- Pause and Resume buttons change the schedule in the ledger; the chip follows.
- Run now: a new run appears and ends COMPLETED in the panel, live, as in the ledger. The
  screenshot of this state is docs/images/sidebar-pipelines.png.
- Delete asks first: Cancel keeps the pipeline, Delete removes it (from the ledger too); the
  buttons work from the keyboard; the palette has a command for each action.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.register_assert_rewrite("browser")
from browser import ARTIFACTS, JupyterLab, expect, running_lab, wait_until  # noqa: E402
from pipeline_helpers import parameterised_notebook  # noqa: E402

from qmlops_jupyter.client import Client  # noqa: E402
from qmlops_jupyter.config import Settings  # noqa: E402
from qmlops_jupyter.pipelines.schedules import Pipelines  # noqa: E402
from qmlops_jupyter.pipelines.store import PipelineRuns  # noqa: E402

pytest_plugins = ["browser"]
pytestmark = pytest.mark.slow

SIDEBAR = "#qmlops-sidebar"
PLUGIN = "qmlops-jupyter:plugin"
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "images" / "sidebar-pipelines.png"
COMMANDS = {
    "qmlops:show-pipelines": "Show the Saved Pipelines",
    "qmlops:run-pipeline": "Run a Saved Pipeline Now…",
    "qmlops:pause-pipeline": "Pause a Pipeline Schedule…",
    "qmlops:resume-pipeline": "Resume a Pipeline Schedule…",
    "qmlops:delete-pipeline": "Delete a Saved Pipeline…",
}


@dataclass
class PipelineLab:
    lab: JupyterLab
    client: Client
    #: The first run of "nightly", finished before the page opened.
    first_run: str
    failed_run: str

    @property
    def pipelines(self) -> Pipelines:
        return Pipelines(self.client.ledger)

    def paused(self, name: str) -> bool:
        schedule = self.pipelines.get(name, self.client.owner).schedule
        assert schedule is not None
        return schedule.paused


def write_notebook(path: Path, *cells: str) -> Path:
    return parameterised_notebook(path, "shots = 100", *cells, kernelspec=True)


def rest(lab: JupyterLab, method: str, path: str, status: int) -> Any:
    got, body = lab.request(method, f"/qmlops/api/v1{path}", {} if method == "POST" else None)
    assert got == status, f"{method} {path}: {got} {body}"
    return body


@pytest.fixture(scope="module")
def plab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PipelineLab]:
    """The lab with three saved pipelines of its owner ("nightly", "vqe-sweep" and "scratch"),
    one finished run of "nightly" started through REST, and one failed run of "vqe-sweep"."""
    folder = tmp_path_factory.mktemp("lab")
    with running_lab(folder, QMLOPS_TRACKING="on") as lab:
        lab.set_setting(PLUGIN, {"refreshInterval": 3600})
        notebook = write_notebook(lab.root / "nightly.ipynb", "print('counts', shots)")
        client = Client(Settings.from_env(home=folder / "qmlops-home"))
        try:
            pipelines = Pipelines(client.ledger)
            owner = client.owner
            nightly = pipelines.create(
                owner=owner, notebook=str(notebook), cron="0 3 * * *", name="nightly"
            )
            sweep = pipelines.create(
                owner=owner,
                notebook=str(write_notebook(lab.root / "vqe.ipynb", "1 / 0")),
                cron="30 */6 * * 1-5",
                name="vqe-sweep",
                timezone="Europe/Paris",
            )
            pipelines.create(owner=owner, notebook=str(notebook), cron="0 0 1 * *", name="scratch")
            first = rest(lab, "POST", "/pipelines/nightly/runs", 202)["id"]
            # It ends in the ledger first, and is logged to MLflow after.
            ended = wait_until(
                lambda: (
                    (r := rest(lab, "GET", f"/pipeline-runs/{first}", 200))["state"]
                    not in ("QUEUED", "RUNNING")
                    and (r["mlflow_run_id"] or r["state"] != "COMPLETED")
                    and r
                ),
                120,
                "the first run of nightly to end and be logged to MLflow",
            )
            assert ended["state"] == "COMPLETED", ended
            runs = PipelineRuns(client.ledger)
            failed = runs.create(
                owner=owner,
                notebook=sweep.notebook,
                parameters={"shots": 100},
                max_retries=0,
                timeout=None,
                experiment=None,
                pipeline_id=sweep.id,
            )
            clock = client.ledger.clock
            runs.update(
                failed.id,
                state="FAILED",
                attempts=1,
                started_at=clock(),
                finished_at=clock(),
                error="ZeroDivisionError: division by zero",
                error_cell=1,
                error_ename="ZeroDivisionError",
            )
            assert nightly.schedule is not None
            yield PipelineLab(lab, client, first, failed.id)
        finally:
            client.close()


@pytest.fixture(scope="module")
def lab(plab: PipelineLab) -> JupyterLab:
    return plab.lab


def section(page: Any) -> Any:
    return page.locator(f'{SIDEBAR} .jp-qmlops-Section[data-section="pipelines"]')


def pipeline_row(page: Any, name: str) -> Any:
    return section(page).locator(f'li.jp-qmlops-Pipeline[data-pipeline="{name}"]')


def run_row(page: Any, run_id: str) -> Any:
    return section(page).locator(f'li.jp-qmlops-PipelineRun[data-run-id="{run_id}"]')


def open_pipelines(page: Any, lab: JupyterLab) -> None:
    """JupyterLab with the panel open on its Pipelines section (through its command), the
    other sections folded."""
    page.goto(f"{lab.base}/lab?reset&token={lab.token}", timeout=120_000)
    page.wait_for_function(
        "() => !!window.jupyterapp && !!document.querySelector('.jp-SideBar.jp-mod-left')",
        timeout=120_000,
    )
    page.evaluate("() => window.jupyterapp.restored")
    page.evaluate("() => window.jupyterapp.commands.execute('qmlops:show-pipelines')")
    expect(page.locator(SIDEBAR)).to_be_visible()
    for title in page.locator(f"{SIDEBAR} .lm-AccordionPanel-title").all():
        expanded = title.get_attribute("aria-expanded") == "true"
        if expanded != ("Pipelines" in title.inner_text()):
            title.click()
    expect(section(page)).to_be_visible()


def test_pipelines_and_runs_show_pause_resume_and_run_now(plab: PipelineLab, lab_page: Any) -> None:
    page, lab = lab_page, plab.lab
    open_pipelines(page, lab)
    titles = page.locator(f"{SIDEBAR} .lm-AccordionPanel-title").all_inner_texts()
    assert [t.strip() for t in titles][:3] == ["Backends", "Jobs", "Pipelines"]

    nightly = pipeline_row(page, "nightly")
    expect(nightly).to_be_visible()
    expect(nightly.locator(".jp-qmlops-Pipeline-cron")).to_have_text("0 3 * * *")
    expect(nightly.locator('[data-schedule="active"]')).to_have_text("active")
    expect(nightly.locator(".jp-qmlops-Pipeline-next")).to_contain_text(re.compile(r"next in \d"))
    expect(nightly.locator(".jp-qmlops-Pipeline-last")).to_contain_text("COMPLETED")
    sweep = pipeline_row(page, "vqe-sweep")
    expect(sweep.locator(".jp-qmlops-Pipeline-cron")).to_have_text("30 */6 * * 1-5")
    expect(sweep).to_contain_text("Europe/Paris")
    expect(sweep.locator(".jp-qmlops-Pipeline-last")).to_contain_text("FAILED")

    first = run_row(page, plab.first_run)
    expect(first).to_have_attribute("data-state", "COMPLETED")
    expect(first.locator(".jp-qmlops-PipelineRun-notebook")).to_have_text("nightly.ipynb")
    expect(first.locator(".jp-qmlops-PipelineRun-started")).to_contain_text("started")
    expect(first.locator(".jp-qmlops-PipelineRun-duration")).to_have_text(re.compile(r"\d"))
    expect(first.locator('[data-action="open-mlflow"]')).to_have_text("Open in MLflow")
    failed = run_row(page, plab.failed_run)
    expect(failed).to_have_attribute("data-state", "FAILED")
    expect(failed.locator(".jp-qmlops-PipelineRun-error")).to_have_text(
        "cell 1: ZeroDivisionError: division by zero"
    )

    # Pause, then resume, with the row's buttons: the ledger's schedule changes, the chip too.
    nightly.locator('[data-action="pause-pipeline"]').click()
    expect(nightly.locator('[data-schedule="paused"]')).to_have_text("paused")
    wait_until(lambda: plab.paused("nightly"), 10, "the ledger to say paused")
    expect(nightly.locator(".jp-qmlops-Pipeline-next")).to_have_count(0)
    nightly.locator('[data-action="resume-pipeline"]').click()
    expect(nightly.locator('[data-schedule="active"]')).to_have_text("active")
    wait_until(lambda: not plab.paused("nightly"), 10, "the ledger to say active")

    # Run now: a new run appears at the top and ends COMPLETED, live (the poll is an hour).
    before = {r.id for r in PipelineRuns(plab.client.ledger).list(plab.client.owner, 100)}
    nightly.locator('[data-action="run-pipeline"]').click()
    new_id = wait_until(
        lambda: next(
            (
                r.id
                for r in PipelineRuns(plab.client.ledger).list(plab.client.owner, 100)
                if r.id not in before
            ),
            None,
        ),
        15,
        "the run the button started",
    )
    row = run_row(page, new_id)
    expect(row).to_be_visible(timeout=10_000)
    expect(section(page).locator("li.jp-qmlops-PipelineRun").first).to_have_attribute(
        "data-run-id", new_id
    )
    expect(row).to_have_attribute("data-state", "COMPLETED", timeout=120_000)
    assert PipelineRuns(plab.client.ledger).get(new_id, plab.client.owner).state == "COMPLETED"
    expect(row.locator(".jp-qmlops-PipelineRun-duration")).to_have_text(re.compile(r"\d"))
    expect(nightly.locator(".jp-qmlops-Pipeline-last")).to_contain_text("COMPLETED")
    # Its MLflow run, recorded after the end, is announced too: the button appears.
    expect(row.locator('[data-action="open-mlflow"]')).to_be_visible(timeout=60_000)
    mlflow_run = PipelineRuns(plab.client.ledger).get(new_id, plab.client.owner).mlflow_run_id
    assert mlflow_run

    # The screenshot with the panel dragged wider, as a user reading runs would have it.
    handle = page.locator("#jp-main-split-panel > .lm-SplitPanel-handle").first
    box = handle.bounding_box()
    if box is not None and box["width"] > 0:
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + 200)
        page.mouse.down()
        page.mouse.move(box["x"] + 160, box["y"] + 200, steps=5)
        page.mouse.up()
    page.mouse.move(0, 0)
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "sidebar-pipelines.png"
    page.locator(SIDEBAR).screenshot(path=str(shot))
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, SCREENSHOT)
    print(f"screenshot: {shot} (copied to {SCREENSHOT})")


def test_delete_asks_first_buttons_work_by_keyboard_and_the_palette_has_the_commands(
    plab: PipelineLab, lab_page: Any
) -> None:
    page, lab = lab_page, plab.lab
    open_pipelines(page, lab)
    scratch = pipeline_row(page, "scratch")
    expect(scratch).to_be_visible()

    # The keyboard alone: focus the Pause button, Enter; then Resume, Space.
    scratch.locator('[data-action="pause-pipeline"]').focus()
    page.keyboard.press("Enter")
    wait_until(lambda: plab.paused("scratch"), 10, "the ledger to say paused")
    expect(scratch.locator('[data-action="resume-pipeline"]')).to_be_visible()
    scratch.locator('[data-action="resume-pipeline"]').focus()
    page.keyboard.press("Space")
    wait_until(lambda: not plab.paused("scratch"), 10, "the ledger to say active")

    # Delete asks first: Cancel keeps it.
    scratch.locator('[data-action="delete-pipeline"]').click()
    dialog = page.locator(".jp-Dialog")
    expect(dialog).to_contain_text('Delete the pipeline "scratch"')
    dialog.locator("button", has_text="Cancel").click()
    expect(dialog).to_have_count(0)
    expect(scratch).to_be_visible()
    assert plab.pipelines.find("scratch", plab.client.owner) is not None

    # ... and Delete deletes it, in the ledger too.
    scratch.locator('[data-action="delete-pipeline"]').click()
    page.locator(".jp-Dialog").locator("button", has_text="Delete").click()
    expect(scratch).to_have_count(0)
    wait_until(
        lambda: plab.pipelines.find("scratch", plab.client.owner) is None,
        10,
        "the ledger to lose the pipeline",
    )

    # A command per action, each described, with its label.
    found = page.evaluate(
        """(ids) => ids.map(id => [id, window.jupyterapp.commands.hasCommand(id)
            && window.jupyterapp.commands.label(id)])""",
        list(COMMANDS),
    )
    assert dict(found) == COMMANDS
    described = page.evaluate(
        """async () => (await window.jupyterapp.commands.describedBy('qmlops:pause-pipeline'))
            .args.properties.name.type"""
    )
    assert described == "string"
