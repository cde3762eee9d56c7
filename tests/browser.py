"""JupyterLab in headless Chromium, for the tests that look at what a user sees.

A real ``jupyter lab`` process (the qmlops server extension enabled as installed, the ipywidgets
and anywidget labextensions from the venv) on 127.0.0.1 with token auth and its own QMLOPS_HOME,
root, runtime, config and IPython folders; Debian's Chromium (``/usr/bin/chromium``, never a
downloaded browser) driven through Playwright. One server and one browser per test module: a
test module opts in with ``pytest_plugins = ["browser"]`` and asks for ``lab`` and ``lab_page``.

The page is JupyterLab as a user has it, with the application object exposed
(``window.jupyterapp``, as JupyterLab's own UI tests do) so running cells and saving use the same
commands as the menus.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from qmlops_testing import JupyterServer, jupyter_env, process_cmdline

#: Debian's package, installed by ``scripts/system-packages.sh``.
CHROMIUM_PACKAGE = "chromium"
CHROMIUM = "/usr/bin/chromium"
#: Headless, and nothing that reaches for the network: these machines only reach 127.0.0.1 and
#: the package registries. Playwright adds a fresh user-data dir of its own for each launch.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Where screenshots are kept (git-ignored).
ARTIFACTS = Path(__file__).parent / "artifacts"

WIDGET_MANAGER = "@jupyter-widgets/jupyterlab-manager:plugin"
NOTIFICATIONS = "@jupyterlab/apputils-extension:notification"


def chromium_or_fail() -> str:
    """The Chromium executable; a missing one fails the test (CI or not), saying how to get it."""
    path = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    if path:
        return path
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(
            f"the browser tests need Debian's {CHROMIUM_PACKAGE!r} package in CI "
            "(scripts/system-packages.sh installs it)"
        )
    pytest.fail(
        f"the browser tests need Chromium: run scripts/system-packages.sh as root "
        f"(or apt-get install {CHROMIUM_PACKAGE})"
    )


def playwright_or_fail() -> Any:
    """Playwright's sync API (the ``dev`` extra installs it)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser tests need Playwright: pip install 'playwright>=1.4'")
    return sync_playwright


class JupyterLab(JupyterServer):
    """A real ``jupyter lab`` process; everything :class:`JupyterServer` offers (REST, kernel
    websockets, stop) plus the lab's settings and the notebooks in its root.

    Everything it writes stays in ``folder``: ``root`` (the notebooks and their checkpoints),
    ``qmlops-home``, ``home`` (its HOME), ``ipython`` (IPYTHONDIR), ``jupyter-config``,
    ``jupyter-runtime`` and ``server.log``."""

    def __init__(self, folder: Path, **env: str) -> None:
        self.folder = Path(folder)
        (self.folder / "home").mkdir(parents=True, exist_ok=True)
        environment = jupyter_env(
            self.folder / "qmlops-home", self.folder, HOME=str(self.folder / "home"), **env
        )
        super().__init__(self.folder / "root", environment, self.folder / "server.log")

    app = "lab"
    extra_args = (
        "--LabApp.expose_app_in_browser=True",
        # No announcements or update checks: nothing beyond 127.0.0.1 is reachable.
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    )

    def url(self, notebook: str) -> str:
        """The page of ``notebook`` in a fresh workspace; the token becomes the login cookie."""
        return f"{self.base}/lab/tree/{notebook}?reset&token={self.token}"

    def set_setting(self, plugin: str, values: dict[str, Any]) -> None:
        """Set a plugin's user settings through the settings REST API, as the Settings Editor
        does."""
        status, body = self.request(
            "PUT", f"/lab/api/settings/{plugin}", {"raw": json.dumps(values)}
        )
        assert status == 204, f"PUT settings {plugin}: {status} {body}"

    def setting(self, plugin: str) -> dict[str, Any]:
        status, body = self.request("GET", f"/lab/api/settings/{plugin}")
        assert status == 200, f"GET settings {plugin}: {status} {body}"
        return body["settings"]

    def write_notebook(self, name: str, cells: list[str]) -> Path:
        """A notebook of code cells with the python3 kernel, ready to open."""
        notebook = {
            "cells": [
                {
                    "cell_type": "code",
                    "execution_count": None,
                    "id": f"cell-{i}",
                    "metadata": {},
                    "outputs": [],
                    "source": source,
                }
                for i, source in enumerate(cells)
            ],
            "metadata": {
                "kernelspec": {
                    "display_name": "Python 3 (ipykernel)",
                    "language": "python",
                    "name": "python3",
                },
                "language_info": {"name": "python"},
            },
            "nbformat": 4,
            "nbformat_minor": 5,
        }
        path = self.root / name
        path.write_text(json.dumps(notebook, indent=1))
        return path

    def read_notebook(self, name: str) -> dict[str, Any]:
        return json.loads((self.root / name).read_text())

    def wait_no_kernels(self, timeout: float = 60) -> None:
        """Until every kernel has shut down (and so written its history)."""
        wait_until(
            lambda: self.request("GET", "/api/kernels")[1] == [], timeout, "kernels to shut down"
        )

    def stop(self) -> None:
        """Close every session the browser opened, then stop as :class:`JupyterServer` does
        (kernels the server leaves behind are killed)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(OSError, AssertionError, TypeError):
                status, sessions = self.request("GET", "/api/sessions", timeout=10)
                if status == 200:
                    self.sessions = [s["id"] for s in sessions]
            self.kernel_pids += [p for p in self.children() if "ipykernel" in process_cmdline(p)]
        super().stop()


class Notebook:
    """A notebook open in a JupyterLab page."""

    def __init__(self, page: Any, lab: JupyterLab, name: str) -> None:
        self.page = page
        self.lab = lab
        self.name = name

    def _eval(self, script: str, arg: Any = None) -> Any:
        return self.page.evaluate(script, arg)

    def wait_kernel_idle(self, timeout: float = 120) -> None:
        self.page.wait_for_function(
            """() => {
                const nb = window.jupyterapp.shell.currentWidget;
                const kernel = nb && nb.sessionContext.session?.kernel;
                return !!kernel && kernel.status === 'idle';
            }""",
            timeout=timeout * 1000,
        )

    def run_all(self, timeout: float = 180) -> None:
        """Run every cell as "Run All Cells" does and wait until all have run; an error output
        fails the test with its exception."""
        self.wait_kernel_idle(timeout)
        self._eval("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        self._wait_ran(None, timeout)
        errors = [
            f"cell {i}: {o.get('ename')}: {o.get('evalue')}"
            for i, outputs in enumerate(self.outputs())
            for o in outputs
            if o.get("output_type") == "error"
        ]
        assert not errors, "\n".join(errors)

    def run_cell(self, index: int, timeout: float = 180) -> list[dict[str, Any]]:
        """Run one cell as "Run Selected Cell" does: its outputs (errors included)."""
        self.wait_kernel_idle(timeout)
        self._eval(
            """(i) => {
                const nb = window.jupyterapp.shell.currentWidget;
                nb.content.activeCellIndex = i;
                return window.jupyterapp.commands.execute('notebook:run-cell');
            }""",
            index,
        )
        self._wait_ran(index, timeout)
        return self.outputs()[index]

    def _wait_ran(self, index: int | None, timeout: float) -> None:
        """Until the cell (or every non-empty code cell) has run and the kernel is idle."""
        self.page.wait_for_function(
            """(index) => {
                const nb = window.jupyterapp.shell.currentWidget;
                const kernel = nb.sessionContext.session?.kernel;
                const cells = (index === null ? nb.content.widgets : [nb.content.widgets[index]])
                    .filter(c => c.model.type === 'code'
                        && c.model.sharedModel.getSource().trim() !== '');
                const done = cells.every(c => c.model.executionCount !== null
                    && c.model.executionState !== 'running');
                return done && kernel && kernel.status === 'idle';
            }""",
            arg=index,
            timeout=timeout * 1000,
        )

    def type_in_cell(self, index: int, text: str) -> None:
        """Replace a cell's text by typing into its editor, as a user does."""
        self.cell(index).locator(".cm-content").click()
        self.page.keyboard.press("Control+A")
        self.page.keyboard.press("Delete")
        if text:
            self.page.keyboard.insert_text(text)

    def source(self, index: int) -> str:
        return self._eval(
            """(i) => window.jupyterapp.shell.currentWidget.content.widgets[i]
                .model.sharedModel.getSource()""",
            index,
        )

    def outputs(self) -> list[list[dict[str, Any]]]:
        """Each cell's outputs as the notebook model holds them (what saving would write)."""
        return self._eval(
            """() => window.jupyterapp.shell.currentWidget.content.widgets.map(
                c => c.model.type === 'code' ? c.model.outputs.toJSON() : [])"""
        )

    def cell(self, index: int) -> Any:
        """The rendered cell (a Playwright locator)."""
        return self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell").nth(index)

    def output(self, index: int) -> Any:
        """The rendered output area of a cell."""
        return self.cell(index).locator(".jp-OutputArea")

    def save(self, timeout: float = 60) -> None:
        """Save as the File menu does (which also makes a checkpoint), and wait until the
        file on disk is the saved notebook."""
        self._eval("() => window.jupyterapp.commands.execute('docmanager:save')")
        self.page.wait_for_function(
            "() => !window.jupyterapp.shell.currentWidget.context.model.dirty",
            timeout=timeout * 1000,
        )

    def screenshot(self, name: str, element: Any = None) -> Path:
        """A screenshot of the page (or of one element, a locator, scrolled into view) under
        ``tests/artifacts/`` (git-ignored); its path is printed."""
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        if element is None:
            self.page.screenshot(path=str(path))
        else:
            element.screenshot(path=str(path))
        print(f"screenshot: {path}")
        return path

    def close(self) -> None:
        """Close the tab (without saving) and shut its kernel down."""
        with contextlib.suppress(Exception):
            self._eval(
                """async () => {
                    const nb = window.jupyterapp.shell.currentWidget;
                    await nb.sessionContext.shutdown();
                    nb.context.model.dirty = false;
                    nb.dispose();
                }"""
            )


def open_notebook(page: Any, lab: JupyterLab, name: str, timeout: float = 120) -> Notebook:
    """Open ``name`` from the lab's root in ``page`` and wait until its kernel is idle."""
    page.goto(lab.url(name), timeout=timeout * 1000)
    page.wait_for_function(
        """(name) => {
            const app = window.jupyterapp;
            const nb = app && app.shell.currentWidget;
            return !!nb && !!nb.context && nb.context.path === name
                && nb.context.isReady && !!nb.sessionContext.session?.kernel;
        }""",
        arg=name,
        timeout=timeout * 1000,
    )
    notebook = Notebook(page, lab, name)
    notebook.wait_kernel_idle(timeout)
    return notebook


def secret_forms(secret: str) -> list[bytes]:
    """A secret as it could leak: plain, base64 (standard and URL-safe, at each of the three
    alignments it could have inside a longer encoded text) and URL-encoded."""
    import base64
    import urllib.parse

    raw = secret.encode()
    forms = [
        raw,
        urllib.parse.quote(secret, safe="").encode(),
        urllib.parse.quote_plus(secret).encode(),
    ]
    for shift in range(3):
        padded = b"\0" * shift + raw
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(padded)
            # Drop the characters that depend on the padding bytes or on what follows.
            start = (shift * 8 + 5) // 6
            end = len(padded) * 8 // 6
            forms.append(text[start:end])
    return [f for f in forms if f]


def secret_hits(secret: str, files: list[Path]) -> list[str]:
    """The files holding ``secret`` in any of its forms."""
    forms = secret_forms(secret)
    return [str(p) for p in files if p.is_file() and any(f in p.read_bytes() for f in forms)]


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterLab]:
    """One JupyterLab for the module: private QMLOPS_HOME, root, runtime, config, HOME and
    IPYTHONDIR (so the kernels' IPython history database is at a known place, see
    :func:`ipython_history`); widget state saved with the notebook, as a user sets it in the
    Settings Editor ("Save Widget State Automatically")."""
    with running_lab(tmp_path_factory.mktemp("lab")) as server:
        yield server


@contextlib.contextmanager
def running_lab(folder: Path, **env: str) -> Iterator[JupyterLab]:
    """A started :class:`JupyterLab` in ``folder`` (``env`` added to its environment), with
    widget state saved and no news or update checks; stopped, its log named, at the end."""
    server = JupyterLab(folder, **env)
    try:
        server.start()
        server.set_setting(WIDGET_MANAGER, {"saveState": True})
        server.set_setting(NOTIFICATIONS, {"fetchNews": "false", "checkForUpdates": False})
        yield server
    finally:
        server.stop()
        print(f"jupyter lab log: {server.log_path}")


def ipython_history(lab: JupyterLab) -> Path:
    """The kernels' IPython history database."""
    return Path(lab.env["IPYTHONDIR"]) / "profile_default" / "history.sqlite"


class Chromium:
    """The module's headless Chromium: one Playwright browser context (its own cookies and
    storage), and the thread's event-loop bookkeeping.

    Playwright's sync API keeps its event loop marked as running in this thread between calls
    (its dispatcher is a greenlet that needs the mark whenever it runs). pytest_jupyter's autouse
    ``jp_asyncio_loop`` fixture, which every test gets, would adopt that loop and close it; so
    the mark is cleared whenever the thread goes back to pytest (:meth:`leave`) and set again
    before the browser is used (:meth:`enter`). In a test body, asyncio code of the test's own
    (such as :meth:`JupyterServer.execute`) runs inside ``with chromium.outside():``."""

    def __init__(self, context: Any) -> None:
        self.context = context
        self.loop = asyncio._get_running_loop()

    def enter(self) -> None:
        asyncio._set_running_loop(self.loop)

    def leave(self) -> None:
        asyncio._set_running_loop(None)

    @contextlib.contextmanager
    def outside(self) -> Iterator[None]:
        """A block free to run an event loop of its own (``asyncio.run``)."""
        self.leave()
        try:
            yield
        finally:
            self.enter()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Chromium]:
    """One headless Chromium for the module."""
    executable = chromium_or_fail()
    sync_playwright = playwright_or_fail()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        owner = Chromium(context)
        owner.leave()
        try:
            yield owner
        finally:
            owner.enter()
            context.close()
            browser.close()


@pytest.fixture
def lab_page(lab: JupyterLab, chromium: Chromium, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh tab (a Playwright page); on failure, a screenshot and the browser console."""
    chromium.enter()
    page = chromium.context.new_page()
    page.set_default_timeout(60_000)
    console: list[str] = []
    page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
    page.on("pageerror", lambda exc: console.append(f"pageerror: {exc}"))
    try:
        yield page
        report = getattr(request.node, "rep_call", None)
        if report is None or report.failed:
            name = re.sub(r"[^\w.-]", "_", request.node.name)
            with contextlib.suppress(Exception):
                ARTIFACTS.mkdir(exist_ok=True)
                path = ARTIFACTS / f"{name}-failed.png"
                page.screenshot(path=str(path))
                print(f"screenshot: {path}")
            print("browser console:\n" + "\n".join(console[-80:]))
        page.close()
    finally:
        chromium.leave()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the test item, so fixtures can tell a failed test."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def expect(target: Any) -> Any:
    """Playwright's auto-retrying assertions (``expect(locator).to_have_text(...)``)."""
    playwright_or_fail()
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


def wait_until(predicate: Any, timeout: float, what: str) -> Any:
    """``predicate()``'s first truthy value within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")
