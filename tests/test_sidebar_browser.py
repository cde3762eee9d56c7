"""The qmlops sidebar in JupyterLab as a user sees it: a real ``jupyter lab`` (the server
extension and the ``qmlops-jupyter`` labextension as installed) rendered by headless Chromium
(see ``browser.py``). One JupyterLab, one browser and one page for the module; the tests run in
order and build on each other (the credential added in one is used by the jobs of the next).

IonQ is reached offline through two loopback IonQ emulators (real subprocesses speaking IonQ's
REST API): ``ionq:simulator`` points at one with a one-second queue, ``ionq:qpu.aria-1`` at one
whose queue is long enough for a job to wait there until it is cancelled. Both accept only the
API key typed into the sidebar's credential form, so a job that runs proves the key went through
the vault; the lab's environment holds no IonQ key.

- The panel: its left tab, the six sections, the ``aer`` backend, the empty Jobs section.
- A credential typed into the form is stored, shown masked, tested against IonQ, and its secret
  is in no page HTML, input, log or file of the lab (the vault holds ciphertext only).
- A job submitted from a notebook cell is followed live (QUEUED, RUNNING, COMPLETED) without a
  reload.
- A job waiting in IonQ's queue is cancelled from its row, at IonQ too.
- The completed job's detail tab shows its histogram (the ledger's counts) and its OpenQASM.
- The panel follows JupyterLab's dark theme.
- The credential form refuses a missing key and a bad alias on one line, and sends nothing.
- The keyboard alone opens a job (Enter on its row), cancels a queued one (Tab to its Cancel
  button, Enter) and shows the collapsed panel (Enter on the status-bar item).
- The status bar counts unfinished jobs and shows the budget share, and the Budget section the
  used and limit numbers, as the ledger has them over REST.
- The state and backend filters list only the matching jobs, and say so when none matches.
- The ``defaultBackend`` setting, changed in the Settings Editor, applies at once: the Backends
  section's test job goes to ``braket_local`` and completes; the command palette lists the
  panel's commands.
- Tracking is on, as by default: the Runs section lists the MLflow runs of the completed jobs
  (as ``GET /runs`` does), and "Open in MLflow" (in a run's row and on a job's detail) opens the
  MLflow UI in a JupyterLab tab, through the server's proxy, on that run.
- The Dashboards section says why there is no link while the lab's root holds no dashboard
  notebooks; once it does, a refresh links the three Voila pages, and the Jobs link, followed
  with the page's login cookie, is Voila's Jobs dashboard. Its screenshot is
  docs/images/sidebar-dashboards.png.
"""

from __future__ import annotations

import contextlib
import math
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.register_assert_rewrite("browser")
from browser import (  # noqa: E402
    ARTIFACTS,
    Chromium,
    JupyterLab,
    expect,
    open_notebook,
    running_lab,
    secret_hits,
    wait_until,
)
from qmlops_testing import BELL_QASM2  # noqa: E402

from qmlops_jupyter.testing.ionq_emulator import EmulatorProcess  # noqa: E402

pytest_plugins = ["browser"]
pytestmark = pytest.mark.slow

#: The IonQ key a user types into the sidebar's credential form; the emulators take no other.
SECRET = "IonQ-sidebar-9TqV4mXe7LcZ2hRw5Kp8"
ALIAS = "ionq-lab"
#: A key typed into a form that is refused before it is sent.
UNSAVED_SECRET = "IonQ-never-saved-4NbW7yQs2Hd"
SIDEBAR = "#qmlops-sidebar"
PLUGIN = "qmlops-jupyter:plugin"
SECTIONS = ["Backends", "Jobs", "Pipelines", "Runs", "Budget", "Dashboards"]
#: The dashboard notebooks the lab's root gets a copy of, and where the docs keep the screenshot.
DASHBOARD_NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks" / "dashboards"
DASHBOARDS_SCREENSHOT = (
    Path(__file__).resolve().parent.parent / "docs" / "images" / "sidebar-dashboards.png"
)
#: Seconds a job waits in the fast emulator's queue before it runs: short, so the run starts
#: before the engine's second poll (its polls come 0.5, 1, 2, 4 ... s apart, +-20 %, on a 1 s
#: tick; at most about 2.2 s apart around then).
QUEUE_SECONDS = 1.0
#: The emulator samples on Aer: eight million shots keep a Bell job running for about four
#: seconds (longer on a busy machine), longer than that gap, so a poll always finds it running.
LIVE_SHOTS = 8_000_000
#: Long enough for a job to be cancelled while it still waits in the slow emulator's queue.
LONG_QUEUE_SECONDS = 3600.0
#: The daily shot budget set over REST: more than the live job's shots and the test job's.
BUDGET_SHOTS = 20_000_000
#: What the command palette lists under "Quantum" (labels as shown).
PALETTE_LABELS = [
    "Open the Quantum Jobs Sidebar",
    "Refresh Quantum Jobs",
    "Add a Quantum Backend Credential…",
    "Test a Quantum Backend Credential…",
    "Delete a Quantum Backend Credential…",
    "Open a Quantum Job…",
    "Cancel a Quantum Job…",
    "Run a Bell Test Job on the Default Backend",
    "Open MLflow",
    "Show the Quantum Budget",
]

#: What the tests pass on to the next ones (job ids); a later test fails if it is missing.
SHARED: dict[str, Any] = {}


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def emulators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, EmulatorProcess]]:
    """The two IonQ emulators, outside the lab's folder (their state holds what IonQ would)."""
    fast = EmulatorProcess(tmp_path_factory.mktemp("ionq-fast"), QUEUE_SECONDS, api_key=SECRET)
    slow = EmulatorProcess(tmp_path_factory.mktemp("ionq-slow"), LONG_QUEUE_SECONDS, api_key=SECRET)
    try:
        fast.start()
        slow.start()
        yield {"fast": fast, "slow": slow}
    finally:
        fast.kill()
        slow.kill()


@pytest.fixture(scope="module")
def lab(
    tmp_path_factory: pytest.TempPathFactory, emulators: dict[str, EmulatorProcess]
) -> Iterator[JupyterLab]:
    """The module's JupyterLab (as ``browser.lab``) with IonQ pointed at the emulators in its
    QMLOPS_HOME's backends.yaml, no IonQ key in its environment, and tracking on."""
    folder = tmp_path_factory.mktemp("lab")
    home = folder / "qmlops-home"
    home.mkdir(mode=0o700)
    (home / "backends.yaml").write_text(
        "backends:\n"
        "  aer:\n"
        "    max_shots: 100000\n"
        "  ionq:simulator:\n"
        "    max_shots: 10000000\n"
        "    options:\n"
        f"      api_url: {emulators['fast'].url}\n"
        "      timeout: 20\n"
        "  ionq:qpu.aria-1:\n"
        "    options:\n"
        f"      api_url: {emulators['slow'].url}\n"
        "      timeout: 20\n",
        encoding="utf-8",
    )
    # Tracking on, as a user has it: every completed job is logged to the embedded MLflow store
    # under QMLOPS_HOME, which the Runs section lists and the MLflow tab shows.
    with running_lab(folder, IONQ_API_KEY="", QMLOPS_TRACKING="on") as server:
        yield server


class Page:
    """The module's one JupyterLab tab, what its console said and which requests failed."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.console: list[str] = []
        page.on("console", lambda msg: self.console.append(f"{msg.type}: {msg.text}"))
        page.on("pageerror", lambda exc: self.console.append(f"pageerror: {exc}"))
        page.on("response", self._on_response)

    def _on_response(self, response: Any) -> None:
        if response.status >= 400:  # the address without its query (which may hold the token)
            url = response.url.split("?", 1)[0]
            self.console.append(f"HTTP {response.status}: {response.request.method} {url}")


@pytest.fixture(scope="module")
def module_page(lab: JupyterLab, chromium: Chromium) -> Iterator[Page]:
    chromium.enter()
    try:
        tab = Page(chromium.context.new_page())
        tab.page.set_default_timeout(60_000)
    finally:
        chromium.leave()
    yield tab
    chromium.enter()
    try:
        tab.page.close()
    finally:
        chromium.leave()


@pytest.fixture
def page(module_page: Page, chromium: Chromium, request: pytest.FixtureRequest) -> Iterator[Any]:
    """The module's page, for one test; on failure, a screenshot and the browser console."""
    chromium.enter()
    try:
        yield module_page.page
        report = getattr(request.node, "rep_call", None)
        if report is None or report.failed:
            name = re.sub(r"[^\w.-]", "_", request.node.name)
            with contextlib.suppress(Exception):
                shot(module_page.page, f"{name}-failed")
            print("browser console:\n" + "\n".join(module_page.console[-80:]))
    finally:
        chromium.leave()


# -- helpers --------------------------------------------------------------------------------------


def shot(page: Any, name: str, element: Any = None) -> Path:
    """A screenshot kept under ``tests/artifacts/sidebar-<name>.png``."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"sidebar-{name}.png"
    (element or page).screenshot(path=str(path))
    print(f"screenshot: {path}")
    return path


def wait_app(page: Any) -> None:
    """Until JupyterLab has started and restored its layout."""
    page.wait_for_function(
        "() => !!window.jupyterapp && !!document.querySelector('.jp-SideBar.jp-mod-left')",
        timeout=120_000,
    )
    page.evaluate("() => window.jupyterapp.restored")


def wait_no_splash(page: Any) -> None:
    """Until JupyterLab's splash (shown while a theme loads) is gone."""
    expect(page.locator("#jupyterlab-splash")).to_have_count(0, timeout=60_000)


def sidebar(page: Any) -> Any:
    return page.locator(SIDEBAR)


def section(page: Any, name: str) -> Any:
    return sidebar(page).locator(f'.jp-qmlops-Section[data-section="{name}"]')


def open_sidebar(page: Any) -> None:
    """Show the panel through its command, as the palette does."""
    page.evaluate("() => window.jupyterapp.commands.execute('qmlops:open-sidebar')")
    expect(sidebar(page)).to_be_visible()


def section_titles(page: Any) -> list[str]:
    return page.evaluate(
        """(sel) => [...document.querySelectorAll(`${sel} .lm-AccordionPanel-title`)].map(t => {
            const label = t.querySelector('.lm-AccordionPanel-titleLabel');
            return (label || t).textContent.trim();
        })""",
        SIDEBAR,
    )


def expand(page: Any, title: str) -> None:
    """Open an accordion section of the panel by clicking its title, unless it is open."""
    heading = sidebar(page).locator(".lm-AccordionPanel-title", has_text=title).first
    expect(heading).to_be_visible()
    if heading.get_attribute("aria-expanded") != "true":
        heading.click()
    expect(heading).to_have_attribute("aria-expanded", "true")


def job_row(page: Any, job_id: str) -> Any:
    return sidebar(page).locator(f'li.jp-qmlops-Job[data-job-id="{job_id}"]')


def luminance(css_color: str) -> float:
    """The relative luminance (WCAG) of an ``rgb()``/``rgba()`` colour."""
    r, g, b = (int(v) / 255 for v in re.findall(r"[\d.]+", css_color)[:3])

    def linear(c: float) -> float:
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    return 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b)


def status_item(page: Any) -> Any:
    """The text of the panel's status-bar item (a button)."""
    return page.locator(".jp-qmlops-StatusItem .jp-qmlops-StatusItem-text")


def refresh(page: Any) -> None:
    """Click the panel's refresh button (its toolbar), as a user does to re-read everything."""
    button = sidebar(page).locator(
        '.jp-Toolbar [title="Refresh backends, jobs, pipelines, runs, budgets and dashboards"]'
    )
    expect(button).to_have_count(1)
    button.click()


def focused(page: Any) -> dict[str, Any]:
    """What has the keyboard focus: its tag, ``data-action``, and the job row it is in."""
    return page.evaluate(
        """() => {
            const a = document.activeElement;
            const row = a && a.closest('li.jp-qmlops-Job');
            return {tag: a ? a.tagName : null, action: (a && a.dataset.action) || null,
                    job: row ? row.dataset.jobId : null, isRow: !!a && a === row};
        }"""
    )


def listed_jobs(page: Any) -> list[str]:
    return (
        section(page, "jobs")
        .locator("li.jp-qmlops-Job")
        .evaluate_all("(rows) => rows.map(r => r.dataset.jobId)")
    )


def wait_shown(page: Any, shown: Any, wanted: Any, timeout: float = 15) -> None:
    """Until ``shown()`` (what the page shows) equals ``wanted``."""
    deadline = time.monotonic() + timeout
    while shown() != wanted and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert shown() == wanted


def wait_listed(page: Any, wanted: set[str], timeout: float = 15) -> None:
    """Until the Jobs section lists exactly ``wanted`` (each once)."""
    wait_shown(page, lambda: sorted(listed_jobs(page)), sorted(wanted), timeout)


def js_round_percent(used: float, limit: float) -> int:
    """``Math.round(used / limit * 100)``, as the status bar rounds a share."""
    return math.floor(used / limit * 100 + 0.5)


#: The frame of the MLflow tab (the IFrame widget's iframe).
MLFLOW_FRAME = "#qmlops-mlflow iframe"


#: The colours the panel shows: its own background (or, if it paints none, the first painted
#: ancestor's), and the text colour of the panel and of a section's body.
PANEL_COLOURS = """(sel) => {
    const panel = document.querySelector(sel);
    const painted = (node) => {
        for (let n = node; n; n = n.parentElement) {
            const bg = getComputedStyle(n).backgroundColor;
            const alpha = bg.startsWith('rgba') ? parseFloat(bg.split(',')[3]) : 1;
            if (alpha > 0.5) {
                return {color: bg, from: n === node ? 'itself' : (n.id || n.className)};
            }
        }
        return {color: 'rgb(255, 255, 255)', from: 'nothing painted'};
    };
    const body = panel.querySelector('.jp-qmlops-Section[data-section="jobs"]') || panel;
    const name = panel.querySelector('.jp-qmlops-Job-name') || body;
    return {
        own: getComputedStyle(panel).backgroundColor,
        background: painted(panel),
        sectionBackground: painted(body),
        text: getComputedStyle(panel).color,
        sectionText: getComputedStyle(name).color,
    };
}"""

#: Records, in the page, every ``data-state`` each job row of the panel shows: rows added and
#: attribute changes, as they happen. The record lives in ``window`` and so only survives as
#: long as the page is not reloaded.
RECORD_JOB_STATES = """(sel) => {
    const seen = window.qmlopsSidebarStates = {};
    const push = (row) => {
        if (!row.dataset || !row.dataset.jobId || row.dataset.state === undefined) return;
        const states = seen[row.dataset.jobId] = seen[row.dataset.jobId] || [];
        if (states[states.length - 1] !== row.dataset.state) states.push(row.dataset.state);
    };
    const rows = (node) => node.nodeType !== 1 ? [] :
        [...(node.matches('li.jp-qmlops-Job') ? [node] : []),
         ...node.querySelectorAll('li.jp-qmlops-Job')];
    document.querySelectorAll(`${sel} li.jp-qmlops-Job`).forEach(push);
    new MutationObserver((records) => {
        for (const r of records) {
            if (r.type === 'attributes') {
                if (r.target.matches('li.jp-qmlops-Job')) push(r.target);
            } else {
                r.addedNodes.forEach(n => rows(n).forEach(push));
            }
        }
    }).observe(document.body, {
        subtree: true, childList: true, attributes: true, attributeFilter: ['data-state'],
    });
}"""


def recorded_states(page: Any, job_id: str) -> list[str]:
    return page.evaluate("(id) => (window.qmlopsSidebarStates || {})[id] || []", job_id)


def in_order(seen: list[str], wanted: list[str]) -> bool:
    """Whether ``wanted`` appears in ``seen`` in that order (not necessarily adjacent)."""
    it = iter(seen)
    return all(state in it for state in wanted)


def lab_files(lab: JupyterLab) -> list[Path]:
    return [p for p in lab.folder.rglob("*") if p.is_file()]


def assert_secret_nowhere(page: Any, lab: JupyterLab) -> None:
    """Not in the page's HTML, not in any input's value, not in any file the lab wrote (its
    log, notebooks, Jupyter's and IPython's folders, QMLOPS_HOME: the vault is ciphertext)."""
    assert SECRET not in page.content()
    in_inputs = page.evaluate(
        """(s) => [...document.querySelectorAll('input, textarea')]
            .filter(i => (i.value || '').includes(s)).length""",
        SECRET,
    )
    assert in_inputs == 0, "an input still holds the secret"
    files = lab_files(lab)
    assert lab.log_path in files
    assert secret_hits(SECRET, files) == []


# -- the tests ------------------------------------------------------------------------------------


def test_the_panel_opens_with_its_six_sections_the_aer_backend_and_an_empty_jobs_list(
    lab: JupyterLab, page: Any
) -> None:
    page.goto(f"{lab.base}/lab?reset&token={lab.token}", timeout=120_000)
    wait_app(page)
    tab = page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab[data-id='qmlops-sidebar']")
    expect(tab).to_have_count(1)
    if not sidebar(page).is_visible():
        tab.click()  # a user opens it from its tab in the left side bar
    panel = sidebar(page)
    expect(panel).to_be_visible()
    expect(panel).to_have_class(re.compile(r"\bjp-qmlops-Sidebar\b"))
    assert section_titles(page) == SECTIONS

    for name in ("backends", "jobs", "runs", "budget"):
        expect(section(page, name)).to_have_count(1)
    expand(page, "Backends")
    aer = panel.locator('li.jp-qmlops-Backend[data-backend="aer"]')
    expect(aer).to_be_visible()
    expect(aer).to_contain_text("aer")
    expect(aer.locator(".jp-qmlops-chip").first).to_be_visible()

    # No job exists yet: the Jobs section says so and what to do.
    assert lab.api("GET", "/jobs")["jobs"] == []
    expand(page, "Jobs")
    empty = section(page, "jobs").locator(".jp-qmlops-Empty")
    expect(empty).to_be_visible()
    text = empty.inner_text().strip()
    print(f"empty jobs section: {text!r}")
    assert re.search(r"submit|run", text, re.IGNORECASE), text
    expect(section(page, "jobs").locator("li.jp-qmlops-Job")).to_have_count(0)
    shot(page, "opened")
    shot(page, "opened-panel", panel)

    # The command shows it too, once the left area has been collapsed.
    tab.click()
    expect(panel).to_be_hidden()
    open_sidebar(page)


def test_a_credential_added_in_the_form_is_masked_tested_and_its_secret_is_nowhere(
    lab: JupyterLab, page: Any
) -> None:
    open_sidebar(page)
    expand(page, "Backends")
    panel = sidebar(page)
    panel.locator('button[data-action="add-credential"]').click()
    form = panel.locator("form.jp-qmlops-CredentialForm")
    expect(form).to_be_visible()
    provider = form.locator('select[name="provider"]')
    values = provider.locator("option").evaluate_all("(os) => os.map(o => o.value)")
    assert {"ionq", "ibm", "aws"} <= set(values), values
    provider.select_option("ionq")
    form.locator('input[name="alias"]').fill(ALIAS)
    key = form.locator('input[name="api_key"]')
    expect(key).to_have_attribute("type", "password")
    key.fill(SECRET)
    shot(page, "credential-form", panel)
    form.locator('button[type="submit"]').click()

    row = panel.locator(f'li.jp-qmlops-Credential[data-alias="{ALIAS}"]')
    expect(row).to_be_visible()
    expect(form).to_be_hidden()  # closed (and emptied) after the save
    hint = row.locator(".jp-qmlops-Credential-hint").inner_text().strip()
    assert hint.endswith(SECRET[-4:]), hint
    assert SECRET not in hint and SECRET[:-4] not in hint, "the hint shows the secret"
    stored = {c["alias"]: c for c in lab.api("GET", "/credentials")}
    assert stored[ALIAS]["provider"] == "ionq"
    assert hint.endswith(stored[ALIAS]["hint"].lstrip("…")), (hint, stored[ALIAS]["hint"])

    # Test asks IonQ (the emulator, which takes this key only) whether it accepts it.
    row.locator('button[data-action="test-credential"]').click()
    answer = row.locator(".jp-qmlops-Credential-test")
    expect(answer).to_have_attribute("data-ok", "true", timeout=30_000)
    print(f"credential test: {answer.inner_text()!r}")
    assert SECRET not in answer.inner_text()
    shot(page, "credential-saved", panel)
    assert_secret_nowhere(page, lab)


def test_the_credential_form_refuses_a_missing_key_and_a_bad_alias_and_saves_nothing(
    lab: JupyterLab, page: Any
) -> None:
    before = lab.api("GET", "/credentials")
    open_sidebar(page)
    expand(page, "Backends")
    panel = sidebar(page)
    sent: list[str] = []

    def on_request(request: Any) -> None:
        if "/qmlops/api/v1/credentials/" in request.url and request.method != "GET":
            sent.append(f"{request.method} {request.url}")

    page.on("request", on_request)
    try:
        panel.locator('button[data-action="add-credential"]').click()
        form = panel.locator("form.jp-qmlops-CredentialForm")
        expect(form).to_be_visible()
        form.locator('select[name="provider"]').select_option("ionq")
        form.locator('input[name="alias"]').fill("ionq-no-key")
        form.locator('button[type="submit"]').click()  # the API key left empty
        error = form.locator(".jp-qmlops-CredentialForm-error")
        expect(error).to_be_visible()
        expect(error).to_have_text(re.compile(r"^API key is required\.$"))
        shot(page, "credential-error-missing-key", panel)

        # A key, but an alias the vault would refuse (a space, a "!").
        form.locator('input[name="alias"]').fill("ionq lab!")
        form.locator('input[name="api_key"]').fill(UNSAVED_SECRET)
        form.locator('button[type="submit"]').click()
        expect(error).to_contain_text("An alias is 1 to 64 letters")
        text = error.inner_text().strip()
        print(f"credential form error: {text!r}")
        assert "\n" not in text, text  # one line
        assert UNSAVED_SECRET not in text
        expect(form).to_be_visible()  # still open, to be corrected
        shot(page, "credential-error-alias", panel)

        # Cancel closes the form and drops what was typed.
        form.locator('button[data-action="cancel-credential"]').click()
        expect(form).to_be_hidden()
    finally:
        page.remove_listener("request", on_request)
    assert sent == [], sent  # nothing reached the server ...
    assert lab.api("GET", "/credentials") == before  # ... and nothing was stored
    assert UNSAVED_SECRET not in page.content()
    panel.locator('button[data-action="add-credential"]').click()
    form = panel.locator("form.jp-qmlops-CredentialForm")
    expect(form.locator('input[name="alias"]')).to_have_value("")
    expect(form.locator('input[name="api_key"]')).to_have_value("")
    form.locator('button[data-action="cancel-credential"]').click()
    expect(form).to_be_hidden()


def test_a_job_submitted_from_a_notebook_is_followed_live_in_the_panel(
    lab: JupyterLab, page: Any, emulators: dict[str, EmulatorProcess]
) -> None:
    lab.write_notebook(
        "live.ipynb",
        [
            "import qmlops_jupyter as q\n"
            "from qmlops_jupyter.client import get_client\n"
            "print(type(get_client()).__name__)\n"
            f"job = q.submit({BELL_QASM2!r}, backend='ionq:simulator', credential={ALIAS!r},\n"
            f"               shots={LIVE_SHOTS}, name='sidebar-live')\n"
            "print(job.id)",
        ],
    )
    notebook = open_notebook(page, lab, "live.ipynb")
    marker = uuid.uuid4().hex
    page.evaluate("(m) => { window.qmlopsPageMarker = m; }", marker)
    open_sidebar(page)
    expand(page, "Jobs")
    page.evaluate(RECORD_JOB_STATES, SIDEBAR)

    outputs = notebook.run_cell(0)
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert not errors, errors
    client, job_id = "".join(o.get("text", "") for o in outputs).split()
    assert client == "RemoteClient"  # the kernel submitted through the server
    SHARED["live"] = job_id

    row = job_row(page, job_id)
    expect(row).to_be_visible(timeout=30_000)
    expect(row.locator(".jp-qmlops-Job-name")).to_contain_text("sidebar-live")
    shot(page, "live-submitted")
    # The screenshot of the running row is taken when the row first shows RUNNING (or ends).
    page.wait_for_function(
        """(id) => {
            const row = document.querySelector(`li.jp-qmlops-Job[data-job-id="${id}"]`);
            return !!row && ['RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED']
                .includes(row.dataset.state);
        }""",
        arg=job_id,
        timeout=60_000,
        polling=50,
    )
    shot(page, "live-running")
    expect(row).to_have_attribute("data-state", "COMPLETED", timeout=120_000)
    chip = row.locator(".jp-qmlops-chip[data-state]")
    expect(chip).to_have_text(re.compile(r"COMPLETED\s*$"))
    expect(row.locator('button[data-action="cancel-job"]')).to_have_count(0)
    shot(page, "live-completed")

    states = recorded_states(page, job_id)
    record = lab.api("GET", f"/jobs/{job_id}?events=true")
    ledger = [e["to_state"] for e in record["events"] if e["kind"] == "transition"]
    print(f"sidebar row states: {states}; ledger transitions: {ledger}")
    # The job itself went through RUNNING (else the emulator ran it too fast to be seen) ...
    assert in_order(ledger, ["QUEUED", "RUNNING", "COMPLETED"]), ledger
    # ... and the row showed each of those states as it happened.
    assert in_order(states, ["QUEUED", "RUNNING", "COMPLETED"]), (states, ledger)
    assert states[-1] == "COMPLETED"
    # Seen in this page, without a reload: the marker set before the cell ran is still there.
    assert page.evaluate("() => window.qmlopsPageMarker") == marker
    assert record["state"] == "COMPLETED", record.get("error")
    assert record["provider_job_id"] in {j["id"] for j in emulators["fast"].jobs()}


def submit_to_the_long_queue(lab: JupyterLab, name: str) -> str:
    """A Bell job, over REST, to the IonQ backend whose queue outlasts the test: its id."""
    job = lab.api(
        "POST",
        "/jobs",
        {
            "backend": "ionq:qpu.aria-1",
            "circuits": [BELL_QASM2],
            "shots": 100,
            "name": name,
            "credential": ALIAS,
        },
    )
    return job["id"]


def test_a_job_waiting_in_the_ionq_queue_is_cancelled_from_its_row(
    lab: JupyterLab, page: Any, emulators: dict[str, EmulatorProcess]
) -> None:
    job_id = submit_to_the_long_queue(lab, "sidebar-cancel")
    open_sidebar(page)
    expand(page, "Jobs")
    row = job_row(page, job_id)
    expect(row).to_be_visible(timeout=30_000)
    # Waiting at IonQ (the slow emulator) before the cancel is asked for.
    expect(row).to_have_attribute("data-state", "QUEUED", timeout=60_000)
    # The status bar counts it: the one unfinished job.
    status = page.locator(".jp-qmlops-StatusItem-text")
    expect(status).to_have_attribute("data-running", "1")
    expect(status).to_have_text(re.compile(r"(^|\s)1 running"))
    shot(page, "cancel-queued")
    remote_id = lab.api("GET", f"/jobs/{job_id}")["provider_job_id"]
    assert emulators["slow"].job(remote_id)["status"] == "ready"

    row.locator('button[data-action="cancel-job"]').click()
    dialog = page.locator(".jp-Dialog")
    with contextlib.suppress(Exception):
        dialog.wait_for(state="visible", timeout=2_000)
    if dialog.is_visible():  # a confirmation, if the panel asks for one
        shot(page, "cancel-confirm")
        dialog.locator("button.jp-mod-accept").click()
    expect(row).to_have_attribute("data-state", "CANCELLED", timeout=60_000)
    expect(row.locator(".jp-qmlops-chip[data-state]")).to_have_text(re.compile(r"CANCELLED\s*$"))
    expect(row.locator('button[data-action="cancel-job"]')).to_have_count(0)
    expect(status).to_have_attribute("data-running", "0")
    expect(status).to_have_text(re.compile(r"(^|\s)0 running"))
    shot(page, "cancel-cancelled")

    states = recorded_states(page, job_id)
    print(f"cancelled row states: {states}")
    assert states[-1] == "CANCELLED" and "QUEUED" in states, states
    assert set(states) <= {"CREATED", "SUBMITTING", "QUEUED", "CANCELLING", "CANCELLED"}, states
    assert lab.api("GET", f"/jobs/{job_id}")["state"] == "CANCELLED"
    # Cancelled at IonQ too, not only in the ledger.
    assert emulators["slow"].job(remote_id)["status"] == "canceled"
    assert_secret_nowhere(page, lab)  # the key has now been used for three provider calls


def test_the_completed_job_opens_its_histogram_and_openqasm(lab: JupyterLab, page: Any) -> None:
    job_id = SHARED.get("live")
    assert job_id, "the live job's test did not get as far as submitting it"
    record = lab.api("GET", f"/jobs/{job_id}?qasm=true")
    (counts,) = record["result"]["counts"]
    assert sum(counts.values()) == record["shots"] == LIVE_SHOTS
    assert set(counts) <= {"00", "11"}, counts

    open_sidebar(page)
    expand(page, "Jobs")
    row = job_row(page, job_id)
    row.locator(".jp-qmlops-Job-name").click()
    detail = page.locator(f'[id="qmlops-job-{job_id}"]')
    expect(detail).to_be_visible()
    root = detail.locator(".jp-qmlops-JobDetail").or_(
        page.locator(f'[id="qmlops-job-{job_id}"].jp-qmlops-JobDetail')
    )
    expect(root.first).to_have_attribute("data-state", "COMPLETED")
    histogram = detail.locator("svg.jp-qmlops-Histogram")
    expect(histogram).to_be_visible()
    bars = histogram.locator("rect.jp-qmlops-Histogram-bar")
    expect(bars).to_have_count(len(counts))
    shown = {
        b["outcome"]: int(b["count"])
        for b in bars.evaluate_all(
            "(rs) => rs.map(r => ({outcome: r.dataset.outcome, count: r.dataset.count}))"
        )
    }
    assert shown == counts
    assert sum(shown.values()) == record["shots"]

    qasm = detail.locator("pre.jp-qmlops-Qasm")
    expect(qasm).to_have_count(1)
    shown_qasm = " ".join(qasm.inner_text().split())
    sources = [" ".join(text.split()) for text in [*record.get("qasm3", []), BELL_QASM2]]
    assert shown_qasm in sources, shown_qasm
    assert "OPENQASM" in shown_qasm and "h q[0]" in shown_qasm
    shot(page, "histogram")
    shot(page, "histogram-detail", detail)


def test_the_panel_follows_the_dark_theme(page: Any) -> None:
    open_sidebar(page)
    expand(page, "Jobs")
    light = page.evaluate(PANEL_COLOURS, SIDEBAR)
    print(f"light theme: {light}")
    assert page.evaluate("() => document.body.dataset.jpThemeLight") == "true"
    page.evaluate(
        "() => window.jupyterapp.commands.execute('apputils:change-theme', "
        "{theme: 'JupyterLab Dark'})"
    )
    try:
        page.wait_for_function(
            "() => document.body.dataset.jpThemeLight === 'false'", timeout=60_000
        )
        # The theme's stylesheet applies once loaded: until the panel's background has changed.
        page.wait_for_function(
            """([sel, before]) => {
                const panel = document.querySelector(sel);
                let n = panel;
                while (n && getComputedStyle(n).backgroundColor === 'rgba(0, 0, 0, 0)') {
                    n = n.parentElement;
                }
                return !!n && getComputedStyle(n).backgroundColor !== before;
            }""",
            arg=[SIDEBAR, light["background"]["color"]],
            timeout=30_000,
        )
        wait_no_splash(page)
        dark = page.evaluate(PANEL_COLOURS, SIDEBAR)
        print(f"dark theme: {dark}")
        shot(page, "dark")
        shot(page, "dark-panel", sidebar(page))
        assert luminance(light["background"]["color"]) > 0.5, light
        assert luminance(dark["background"]["color"]) < 0.1, dark
        assert luminance(dark["sectionBackground"]["color"]) < 0.1, dark
        assert luminance(dark["text"]) > 0.4, dark
        assert luminance(dark["sectionText"]) > 0.4, dark
    finally:
        page.evaluate(
            "() => window.jupyterapp.commands.execute('apputils:change-theme', "
            "{theme: 'JupyterLab Light'})"
        )
        page.wait_for_function(
            "() => document.body.dataset.jpThemeLight === 'true'", timeout=60_000
        )
        wait_no_splash(page)


def test_the_keyboard_opens_a_job_cancels_a_queued_one_and_opens_the_panel(
    lab: JupyterLab, page: Any, emulators: dict[str, EmulatorProcess]
) -> None:
    job_id = submit_to_the_long_queue(lab, "sidebar-keyboard")
    SHARED["keyboard"] = job_id
    open_sidebar(page)
    expand(page, "Jobs")
    row = job_row(page, job_id)
    expect(row).to_have_attribute("data-state", "QUEUED", timeout=60_000)
    expect(status_item(page)).to_have_attribute("data-running", "1")
    jobs = section(page, "jobs")
    expect(jobs.locator("li.jp-qmlops-Job").first).to_have_attribute("data-job-id", job_id)

    # Tab from the backend filter reaches the newest job's row; Enter opens its detail.
    backend_filter = jobs.locator('select[name="backend-filter"]')
    backend_filter.focus()
    page.keyboard.press("Tab")
    assert focused(page) == {"tag": "LI", "action": None, "job": job_id, "isRow": True}
    shot(page, "keyboard-row-focused")
    page.keyboard.press("Enter")
    detail = page.locator(f'[id="qmlops-job-{job_id}"]')
    expect(detail).to_be_visible()
    expect(detail.locator(".jp-qmlops-JobDetail")).to_have_attribute("data-state", "QUEUED")
    assert page.evaluate("() => window.jupyterapp.shell.currentWidget.id") == f"qmlops-job-{job_id}"

    # Tab twice from the filter: the row, then its Cancel button; Enter cancels the job.
    backend_filter.focus()
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    assert focused(page) == {"tag": "BUTTON", "action": "cancel-job", "job": job_id, "isRow": False}
    remote_id = lab.api("GET", f"/jobs/{job_id}")["provider_job_id"]
    assert emulators["slow"].job(remote_id)["status"] == "ready"
    page.keyboard.press("Enter")
    expect(row).to_have_attribute("data-state", "CANCELLED", timeout=60_000)
    # The open detail follows, and the status bar no longer counts it.
    expect(detail.locator(".jp-qmlops-JobDetail")).to_have_attribute("data-state", "CANCELLED")
    expect(status_item(page)).to_have_attribute("data-running", "0")
    expect(status_item(page)).to_have_text(re.compile(r"(^|\s)0 running"))
    shot(page, "keyboard-cancelled")
    assert lab.api("GET", f"/jobs/{job_id}")["state"] == "CANCELLED"
    assert emulators["slow"].job(remote_id)["status"] == "canceled"

    # The status-bar item is a button: Enter on it shows the collapsed panel again.
    page.evaluate("() => window.jupyterapp.shell.collapseLeft()")
    expect(sidebar(page)).to_be_hidden()
    item = status_item(page)
    expect(item).to_have_attribute("role", "button")
    item.focus()
    assert page.evaluate(
        "() => document.activeElement.classList.contains('jp-qmlops-StatusItem-text')"
    )
    page.keyboard.press("Enter")
    expect(sidebar(page)).to_be_visible()
    shot(page, "keyboard-status-opened")


def test_the_status_bar_and_the_budget_section_show_the_ledgers_budget(
    lab: JupyterLab, page: Any
) -> None:
    assert lab.api("GET", "/budget") == []
    expect(status_item(page)).to_have_attribute("data-budget-level", "none")
    expect(status_item(page)).not_to_contain_text("budget")

    budgets = lab.api("PUT", "/budget", {"shots_per_day": BUDGET_SHOTS})
    (everything,) = [b for b in budgets if b["backend"] == "*"]
    assert everything["usd_per_month"] is None
    shots = everything["shots_per_day"]
    used, limit, remaining = shots["used"], shots["limit"], shots["remaining"]
    print(f"budget over REST: {used} of {limit} shots used today")
    assert limit == BUDGET_SHOTS
    assert used >= LIVE_SHOTS  # the live job's shots, at least
    assert remaining == limit - used

    open_sidebar(page)
    expand(page, "Budget")
    refresh(page)
    row = section(page, "budget").locator('tr[data-budget-backend="*"]')
    expect(row).to_be_visible()
    meter = row.locator('td[data-limit="shots_per_day"] [role="meter"]')
    expect(meter).to_have_attribute("aria-valuenow", str(used))
    expect(meter).to_have_attribute("aria-valuemax", str(limit))
    cell = row.locator('td[data-limit="shots_per_day"]')
    expect(cell.locator(".jp-qmlops-Budget-used")).to_have_text(f"{used:,} of {limit:,} used")
    expect(cell.locator(".jp-qmlops-Budget-remaining")).to_have_text(f"{remaining:,} left")
    expect(row.locator('td[data-limit="usd_per_month"]')).to_have_text("no limit")

    percent = js_round_percent(used, limit)
    expect(status_item(page)).to_have_text(re.compile(rf"(^|\s)0 running · {percent}% budget$"))
    expect(status_item(page)).to_have_attribute(
        "data-budget-level", "ok" if percent < 80 else "high"
    )
    print(f"status bar: {status_item(page).inner_text()!r}")
    shot(page, "budget")
    shot(page, "budget-panel", sidebar(page))
    SHARED["budget_used"] = used


def test_the_jobs_filters_show_only_the_jobs_that_match(lab: JupyterLab, page: Any) -> None:
    jobs = {job["id"]: job for job in lab.api("GET", "/jobs")["jobs"]}
    assert {"COMPLETED", "CANCELLED"} <= {job["state"] for job in jobs.values()}, jobs
    backends = {job["backend"] for job in jobs.values()}
    assert {"ionq:simulator", "ionq:qpu.aria-1"} <= backends, backends
    open_sidebar(page)
    expand(page, "Jobs")
    body = section(page, "jobs")
    state_filter = body.locator('select[name="state-filter"]')
    backend_filter = body.locator('select[name="backend-filter"]')
    wait_listed(page, set(jobs))

    for state in ("COMPLETED", "CANCELLED"):
        state_filter.select_option(state)
        wanted = {i for i, job in jobs.items() if job["state"] == state}
        from_rest = {j["id"] for j in lab.api("GET", f"/jobs?state={state}")["jobs"]}
        assert from_rest == wanted
        wait_listed(page, wanted)
        states = body.locator("li.jp-qmlops-Job").evaluate_all(
            "(rows) => rows.map(r => r.dataset.state)"
        )
        assert set(states) == {state}, states
    shot(page, "filter-state", sidebar(page))
    state_filter.select_option("")
    wait_listed(page, set(jobs))

    options = backend_filter.locator("option").evaluate_all("(os) => os.map(o => o.value)")
    assert options[0] == "" and backends <= set(options), options
    for backend in ("ionq:simulator", "ionq:qpu.aria-1"):
        backend_filter.select_option(backend)
        wanted = {i for i, job in jobs.items() if job["backend"] == backend}
        wait_listed(page, wanted)
    shot(page, "filter-backend", sidebar(page))

    # No COMPLETED job on the long-queue backend: the section says how to see every job.
    state_filter.select_option("COMPLETED")
    wait_listed(page, set())
    empty = body.locator(".jp-qmlops-Empty")
    expect(empty).to_be_visible()
    print(f"no match: {empty.inner_text()!r}")
    expect(empty).to_contain_text("No jobs match these filters")
    expect(empty).to_contain_text("All states")
    shot(page, "filter-empty", sidebar(page))

    state_filter.select_option("")
    backend_filter.select_option("")
    wait_listed(page, set(jobs))
    expect(empty).to_have_count(0)


def test_the_default_backend_setting_and_the_command_palette(lab: JupyterLab, page: Any) -> None:
    open_sidebar(page)
    expand(page, "Backends")
    button = section(page, "backends").locator('button[data-action="submit-test-job"]')
    expect(button).to_have_attribute("title", "Submit a Bell pair to aer")

    # Set in the Settings Editor, as a user does: saved to the lab's settings, applied live.
    page.evaluate(
        "() => window.jupyterapp.commands.execute('settingeditor:open', {query: 'Quantum'})"
    )
    field = page.locator(f'input[id="jp-SettingsEditor-{PLUGIN}_defaultBackend"]')
    expect(field).to_have_value("aer")
    field.fill("braket_local")
    wait_until(
        lambda: lab.setting(PLUGIN).get("defaultBackend") == "braket_local",
        30,
        "the setting to be saved",
    )
    shot(page, "settings-editor")
    expect(button).to_have_attribute("title", "Submit a Bell pair to braket_local")
    page.evaluate("() => window.jupyterapp.commands.execute('application:close')")
    open_sidebar(page)
    expand(page, "Backends")

    before = {job["id"] for job in lab.api("GET", "/jobs")["jobs"]}
    button.click()

    def new_job() -> Any:
        return [j for j in lab.api("GET", "/jobs")["jobs"] if j["id"] not in before]

    (job,) = wait_until(new_job, 30, "the test job")
    print(f"test job: {job['id']} on {job['backend']} ({job['state']})")
    assert job["name"] == "bell-test" and job["backend"] == "braket_local"
    assert job["shots"] == 1024
    SHARED["bell"] = job["id"]
    expand(page, "Jobs")
    row = job_row(page, job["id"])
    expect(row).to_have_attribute("data-state", "COMPLETED", timeout=60_000)
    expect(row.locator(".jp-qmlops-Job-backend")).to_have_text("braket_local")
    shot(page, "settings-test-job")

    # Its shots count against the budget, which the panel re-reads once a job has finished (on
    # its next poll, without a click).
    (everything,) = [b for b in lab.api("GET", "/budget") if b["backend"] == "*"]
    used = everything["shots_per_day"]["used"]
    assert used == SHARED["budget_used"] + job["shots"], (used, SHARED["budget_used"])
    meter = section(page, "budget").locator(
        'tr[data-budget-backend="*"] td[data-limit="shots_per_day"] [role="meter"]'
    )
    expect(meter).to_have_attribute("aria-valuenow", str(used), timeout=30_000)

    # The command palette lists the panel's commands under "Quantum".
    page.keyboard.press("Control+Shift+C")
    palette = page.locator(".lm-CommandPalette:visible")
    expect(palette).to_have_count(1)
    palette.locator("input.lm-CommandPalette-input").fill("Quantum")
    labels = palette.locator(".lm-CommandPalette-item .lm-CommandPalette-itemLabel")
    expect(labels.first).to_be_visible()
    shown = [" ".join(text.split()) for text in labels.all_inner_texts()]
    print(f"palette: {shown}")
    shot(page, "palette")
    page.keyboard.press("Escape")
    expect(page.locator(".lm-CommandPalette:visible")).to_have_count(0)
    for label in PALETTE_LABELS:
        assert label in shown, (label, shown)


def test_runs_list_the_jobs_mlflow_runs_and_open_them_in_mlflow(lab: JupyterLab, page: Any) -> None:
    live_id, bell_id = SHARED.get("live"), SHARED.get("bell")
    assert live_id and bell_id, "the jobs of the earlier tests are missing"
    # The server logs a completed job to MLflow shortly after it ends.
    run_ids = {
        job_id: wait_until(
            lambda job_id=job_id: lab.api("GET", f"/jobs/{job_id}")["mlflow_run_id"],
            60,
            f"job {job_id}'s MLflow run",
        )
        for job_id in (live_id, bell_id)
    }
    runs = lab.api("GET", "/runs")["runs"]
    by_id = {run["run_id"]: run for run in runs}
    print(f"runs over REST: {[(r['run_name'], r['job_ids']) for r in runs]}")
    for job_id, run_id in run_ids.items():
        assert job_id in by_id[run_id]["job_ids"], by_id.get(run_id)

    open_sidebar(page)
    expand(page, "Runs")
    refresh(page)
    body = section(page, "runs")
    live_run = by_id[run_ids[live_id]]
    row = body.locator(f'li.jp-qmlops-Run[data-run-id="{live_run["run_id"]}"]')
    expect(row).to_be_visible()
    # Every run of the REST answer, in its order (newest first), once the refresh has answered.
    wait_shown(
        page,
        lambda: body.locator("li.jp-qmlops-Run").evaluate_all(
            "(rs) => rs.map(r => r.dataset.runId)"
        ),
        [run["run_id"] for run in runs],
    )
    expect(row.locator(".jp-qmlops-Run-name")).to_have_text(live_run["run_name"])
    expect(row).to_contain_text(live_run["experiment"])
    expect(row).to_contain_text("1 job")
    # Its first metrics by name, with MLflow's values (four significant digits).
    names = row.locator("dl.jp-qmlops-Metrics dt").all_inner_texts()
    values = row.locator("dl.jp-qmlops-Metrics dd").all_inner_texts()
    assert names, "no metrics shown"
    assert names == sorted(live_run["metrics"])[:4], (names, live_run["metrics"])
    for name, text in zip(names, values, strict=True):
        assert math.isclose(
            float(text.replace(",", "")), live_run["metrics"][name], rel_tol=1e-3, abs_tol=1e-9
        ), (name, text, live_run["metrics"][name])
    shot(page, "runs", sidebar(page))

    # Open in MLflow: the MLflow UI in a main-area tab, on that run.
    row.locator('button[data-action="open-mlflow"]').click()
    tab = page.locator("#qmlops-mlflow")
    expect(tab).to_be_visible()
    frame = tab.locator("iframe")
    expect(frame).to_have_attribute(
        "src",
        re.compile(
            rf"/mlflow/#/experiments/{live_run['experiment_id']}/runs/{live_run['run_id']}$"
        ),
    )
    inside = page.frame_locator(MLFLOW_FRAME)
    started = time.monotonic()
    expect(inside.get_by_text(live_run["run_name"], exact=True).first).to_be_visible(
        timeout=120_000
    )
    expect(inside.get_by_text(live_run["run_id"]).first).to_be_visible(timeout=30_000)
    print(f"MLflow showed the run after {time.monotonic() - started:.1f} s")
    shot(page, "mlflow-run")

    # The job detail's button opens the same tab on the other job's run.
    bell_run = by_id[run_ids[bell_id]]
    page.evaluate(
        "async (id) => { await window.jupyterapp.commands.execute('qmlops:open-job', {id}); }",
        bell_id,
    )
    detail = page.locator(f'[id="qmlops-job-{bell_id}"]')
    expect(detail).to_be_visible()
    expect(detail.locator(".jp-qmlops-Facts")).to_contain_text(bell_run["run_id"])
    detail.locator('button[data-action="open-mlflow"]').click()
    expect(page.locator("#qmlops-mlflow")).to_have_count(1)
    expect(tab).to_be_visible()
    expect(frame).to_have_attribute(
        "src",
        re.compile(
            rf"/mlflow/#/experiments/{bell_run['experiment_id']}/runs/{bell_run['run_id']}$"
        ),
    )
    expect(inside.get_by_text(bell_run["run_id"]).first).to_be_visible(timeout=60_000)
    expect(inside.get_by_text(bell_run["run_name"], exact=True).first).to_be_visible()
    shot(page, "mlflow-job-detail-run")
    assert_secret_nowhere(page, lab)  # nor in the MLflow store


def test_dashboards_link_their_voila_pages_once_the_root_holds_them(
    lab: JupyterLab, page: Any, chromium: Chromium
) -> None:
    from qmlops_jupyter.dashboards import DASHBOARDS

    target = lab.root / "notebooks" / "dashboards"
    shutil.rmtree(target, ignore_errors=True)
    page.goto(f"{lab.base}/lab?reset&token={lab.token}", timeout=120_000)
    wait_app(page)
    open_sidebar(page)
    expand(page, "Dashboards")
    body = section(page, "dashboards")

    # The root holds no dashboard notebook: no link, and the server's hint says what to do.
    hint = body.locator(".jp-qmlops-Empty")
    expect(hint).to_contain_text("not in a visible folder under this server's root")
    expect(hint.locator("code")).to_contain_text("qmlops dashboard jobs")
    expect(body.locator("a[data-dashboard]")).to_have_count(0)

    # A copy in the root, then the panel's refresh: a link to each Voila page, in a new tab.
    target.mkdir(parents=True)
    for board in DASHBOARDS.values():
        shutil.copyfile(DASHBOARD_NOTEBOOKS / board.filename, target / board.filename)
    refresh(page)
    links = body.locator("a[data-dashboard]")
    expect(links).to_have_count(len(DASHBOARDS))
    expect(body.locator(".jp-qmlops-Empty")).to_have_count(0)
    shown = links.evaluate_all(
        """(as) => as.map(a => ({name: a.dataset.dashboard, href: a.getAttribute('href'),
            text: a.textContent.trim(), title: a.title, target: a.target, rel: a.rel}))"""
    )
    assert shown == [
        {
            "name": board.name,
            "href": f"/voila/render/notebooks/dashboards/{board.filename}",
            "text": board.title,
            "title": board.description,
            "target": "_blank",
            "rel": "noopener noreferrer",
        }
        for board in DASHBOARDS.values()
    ]

    # The screenshot: the section's heading and its links.
    page.mouse.move(0, 0)
    heading = sidebar(page).locator(".lm-AccordionPanel-title", has_text="Dashboards").first
    top, bottom = heading.bounding_box(), body.bounding_box()
    assert top is not None and bottom is not None
    clip = {
        "x": top["x"],
        "y": top["y"],
        "width": top["width"],
        "height": bottom["y"] + bottom["height"] - top["y"],
    }
    ARTIFACTS.mkdir(exist_ok=True)
    picture = ARTIFACTS / "sidebar-dashboards.png"
    page.screenshot(path=str(picture), clip=clip)
    DASHBOARDS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(picture, DASHBOARDS_SCREENSHOT)
    print(f"screenshot: {picture} (copied to {DASHBOARDS_SCREENSHOT})")

    # Following the Jobs link with the page's login cookie: Voila's Jobs dashboard.
    href = links.first.get_attribute("href")
    voila = chromium.context.new_page()
    try:
        response = voila.goto(f"{lab.base}{href}", timeout=240_000)
        assert response is not None and response.status == 200, response and response.status
        expect(voila.locator("h1", has_text="Jobs").first).to_be_visible(timeout=120_000)
        assert "Jobs" in voila.title() or "jobs" in voila.title(), voila.title()
        assert lab.token not in voila.content()
        shot(voila, "dashboard-jobs")
    finally:
        voila.close()
