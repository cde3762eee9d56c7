"""``qmlops dashboard NAME``: a real process serving one dashboard with Voila.

One server of the Jobs dashboard is shared by the module: its URL line, the page with and
without the token, where it listens, its command line, its kernels' environment, a second
server on its port. Servers of their own are stopped with SIGTERM and with SIGINT: each exits 0
and leaves no kernel behind. The page's content beyond its title belongs to the dashboards'
own tests.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from qmlops_testing import (
    child_pids,
    free_port,
    jupyter_env,
    process_cmdline,
    use_this_python_for_kernels,
    wait_for,
)

pytestmark = pytest.mark.slow

QMLOPS = [sys.executable, "-m", "qmlops_jupyter.cli"]
TITLE = re.compile(r"<h1[^>]*>\s*Jobs\b")


@dataclass
class Dashboard:
    """A running ``qmlops dashboard`` process and what it printed."""

    proc: subprocess.Popen[str]
    port: int
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    seen: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    seen_kernels: set[int] = field(default_factory=set)

    def next_line(self, timeout: float) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"no line on stdout in {timeout:g} s (exit {self.proc.poll()}); stderr:\n"
                + "".join(self.stderr)
            ) from None
        self.seen.append(line)
        return line

    @property
    def url(self) -> str:
        return self.seen[0].split(": ", 1)[1]

    @property
    def token(self) -> str:
        return self.url.split("?token=", 1)[1]

    def kernels(self) -> list[int]:
        """Process ids of the kernels the server runs (its ipykernel children)."""
        found = [pid for pid in child_pids(self.proc.pid) if "ipykernel" in process_cmdline(pid)]
        self.seen_kernels.update(found)
        return found

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        """Send ``sig``: the exit code (a failure after ``timeout`` s)."""
        self.kernels()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running {timeout:g} s after signal {sig}") from None

    def kernels_left(self) -> list[int]:
        """The kernels seen that are still alive."""
        return [pid for pid in self.seen_kernels if "ipykernel" in process_cmdline(pid)]

    def cleanup(self) -> None:
        """Kill the server and every kernel seen, whatever a failed test left."""
        self.kernels()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for pid in self.kernels_left():
            os.kill(pid, signal.SIGKILL)


def start_dashboard(
    name: str, port: int, env: dict[str, str], *extra: str, ready: float = 60
) -> Dashboard:
    """``qmlops dashboard NAME --port PORT``, once it has printed its two lines."""
    proc = subprocess.Popen(
        [*QMLOPS, "dashboard", name, "--port", str(port), *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    board = Dashboard(proc, port)

    def pump(stream: object, into: queue.Queue[str] | list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            if isinstance(into, list):
                into.append(line)
            else:
                into.put(line.rstrip("\n"))

    threading.Thread(target=pump, args=(proc.stdout, board.lines), daemon=True).start()
    threading.Thread(target=pump, args=(proc.stderr, board.stderr), daemon=True).start()
    try:
        board.next_line(ready)
        board.next_line(5)
    except BaseException:
        board.cleanup()
        raise
    return board


def fetch(url: str, timeout: float = 120) -> tuple[int, str, dict[str, str]]:
    """``(status, body, headers)`` of a GET by a fresh client (no cookie), redirects not
    followed."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode(errors="replace"), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace"), dict(exc.headers)


def environ_of(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as fh:
        pairs = [item.split(b"=", 1) for item in fh.read().split(b"\0") if b"=" in item]
    return {k.decode(): v.decode(errors="replace") for k, v in pairs}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """A home (tracking off) and the environment a dashboard process runs in."""
    folder = tmp_path_factory.mktemp("dashboard-cli")
    with pytest.MonkeyPatch.context() as monkeypatch:
        use_this_python_for_kernels(folder, monkeypatch)
        env = jupyter_env(folder / "home", folder)
    env.pop("QMLOPS_DASHBOARD_TOKEN", None)
    yield folder / "home", env


@pytest.fixture(scope="module")
def served(scratch: tuple[Path, dict[str, str]]) -> Iterator[Dashboard]:
    """The module's Jobs dashboard, with a token of its own making."""
    _, env = scratch
    board = start_dashboard("jobs", free_port(), env)
    try:
        yield board
        board.stop()
    finally:
        board.cleanup()


@pytest.fixture(scope="module")
def page(served: Dashboard) -> str:
    """The page, fetched once with the token (a kernel runs it)."""
    status, body, _ = fetch(served.url)
    assert status == 200, (status, body[:500], "".join(served.stderr))
    return body


def test_the_url_line_names_the_dashboard_and_carries_a_fresh_token(served: Dashboard) -> None:
    first, second = served.seen
    match = re.fullmatch(
        rf"Jobs dashboard: http://127\.0\.0\.1:{served.port}/\?token=([A-Za-z0-9_-]+)", first
    )
    assert match, first
    assert len(match.group(1)) >= 40  # secrets.token_urlsafe(32)
    assert "Ctrl-C" in second
    # Voila's own announcement (with the token again) is not printed.
    assert served.token not in "".join(served.stderr)


def test_the_page_with_the_token_is_the_dashboard(page: str) -> None:
    assert TITLE.search(page), page[:2000]


def test_a_request_without_the_token_gets_no_dashboard(served: Dashboard, page: str) -> None:
    base = f"http://127.0.0.1:{served.port}/"
    for url in (base, base + "?token=not-the-token", base + "voila/render/jobs.ipynb"):
        status, body, headers = fetch(url, timeout=30)
        assert status == 403 or (
            status in (301, 302, 303, 307) and "/login" in headers["Location"]
        ), (
            url,
            status,
            headers,
        )
        assert not TITLE.search(body), body[:500]


def test_it_listens_on_loopback_only(served: Dashboard) -> None:
    listening = subprocess.run(
        ["ss", "-Hltn", f"sport = :{served.port}"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert listening, f"nothing listens on port {served.port}"
    for line in listening.splitlines():
        assert line.split()[3] == f"127.0.0.1:{served.port}", listening


def test_the_token_is_on_no_command_line(served: Dashboard, page: str) -> None:
    kernels = served.kernels()
    assert kernels, "the page view started no kernel"
    for pid in [served.proc.pid, *kernels]:
        cmdline = process_cmdline(pid)
        assert cmdline and served.token not in cmdline, cmdline
    # Nor in the environment of the kernels, where notebook code could read it.
    for pid in kernels:
        assert served.token not in "\0".join(environ_of(pid).values())


def test_kernels_use_the_same_ledger_as_the_command(
    served: Dashboard, page: str, scratch: tuple[Path, dict[str, str]]
) -> None:
    home, _ = scratch
    kernels = served.kernels()
    assert kernels
    env = environ_of(kernels[0])
    assert env["QMLOPS_HOME"] == str(home)
    # Not in the command's environment: the command resolved it and handed it down.
    assert env["QMLOPS_DATABASE_URL"] == f"sqlite:///{home / 'ledger.sqlite'}"
    assert env["QMLOPS_BACKENDS_FILE"] == str(home / "backends.yaml")
    assert env["QMLOPS_OWNER"]


def test_a_busy_port_is_one_line_and_a_failure(
    served: Dashboard, scratch: tuple[Path, dict[str, str]]
) -> None:
    _, env = scratch
    again = subprocess.run(
        [*QMLOPS, "dashboard", "cost", "--port", str(served.port)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 2, again
    assert again.stderr.strip() == (
        f"qmlops: error: port {served.port} on 127.0.0.1 is in use; pick another with --port"
    )
    assert again.stdout == ""
    assert served.proc.poll() is None


def test_an_unknown_dashboard_is_exit_3_naming_those_there_are(
    scratch: tuple[Path, dict[str, str]],
) -> None:
    _, env = scratch
    result = subprocess.run(
        [*QMLOPS, "dashboard", "nope"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 3, result
    assert result.stderr.strip() == (
        "qmlops: error: no dashboard named 'nope'; there are: jobs, experiments, cost"
    )
    assert "\n" not in result.stderr.strip() and result.stdout == ""


def test_sigterm_stops_the_server_and_its_kernels(scratch: tuple[Path, dict[str, str]]) -> None:
    _, env = scratch
    board = start_dashboard("jobs", free_port(), env)
    try:
        status, body, _ = fetch(board.url)
        assert status == 200 and TITLE.search(body)
        wait_for(lambda: board.kernels(), 30, "the page's kernel")
        started = time.monotonic()
        assert board.stop(signal.SIGTERM) == 0, "".join(board.stderr)
        assert time.monotonic() - started < 10
        assert board.kernels_left() == []
    finally:
        board.cleanup()


def test_ctrl_c_stops_it_too_with_a_token_from_the_environment(
    scratch: tuple[Path, dict[str, str]],
) -> None:
    """SIGINT, as Ctrl-C sends; the token is ``QMLOPS_DASHBOARD_TOKEN``; ``--open`` hands the
    browser a file, not the URL with the token."""
    folder = scratch[0].parent
    token = "fixed-token-for-the-test-0123456789"
    opened = folder / "browser-argv.txt"
    browser = folder / "browser.sh"
    # The browser's command line, and the page it was given (removed when the server stops).
    browser.write_text(
        f'#!/bin/sh\necho "$@" > {opened}\ncat "${{1#file://}}" >> {opened}\n', encoding="utf-8"
    )
    browser.chmod(0o755)
    env = {**scratch[1], "QMLOPS_DASHBOARD_TOKEN": token, "BROWSER": str(browser)}
    board = start_dashboard("experiments", free_port(), env, "--open")
    try:
        assert board.seen[0] == (
            f"Experiments dashboard: http://127.0.0.1:{board.port}/?token={token}"
        )
        status, body, _ = fetch(board.url)
        assert status == 200 and re.search(r"<h1[^>]*>\s*Experiments\b", body), body[:500]
        wait_for(lambda: board.kernels(), 30, "the page's kernel")
        assert all(token not in "\0".join(environ_of(pid).values()) for pid in board.kernels())
        wait_for(lambda: opened.exists() and "</html>" in opened.read_text(), 30, "the browser")
        argv, _, page_file = opened.read_text().partition("\n")
        assert token not in argv and argv.startswith("file://"), argv
        assert f"http://127.0.0.1:{board.port}/?token={token}" in page_file
        assert board.stop(signal.SIGINT) == 0, "".join(board.stderr)
        assert board.kernels_left() == []
        assert not Path(argv.removeprefix("file://").strip()).exists()
    finally:
        board.cleanup()


def test_help_does_not_load_voila() -> None:
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from qmlops_jupyter.cli.main import cli\n"
        "result = CliRunner().invoke(cli, ['dashboard', '--help'])\n"
        "assert result.exit_code == 0 and 'QMLOPS_DASHBOARD_TOKEN' in result.output\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('voila', 'tornado')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout
