"""Benchmark 6: the jupyter-server extension, measured from outside as a client sees it.

Every part runs real ``jupyter server`` processes (``python -m jupyter server`` on 127.0.0.1, a
random token, a private ``QMLOPS_HOME``, ``QMLOPS_TRACKING=off``, the run's owner); each is
stopped (its whole process group: Aer worker processes included) when its part ends.

1. **REST latency.** A Bell pair (OpenQASM 2), 1,000 shots, ``POST /qmlops/api/v1/jobs?wait=30``
   from one ``httpx.Client`` (a persistent connection), N in a row (default 100) after 10
   warm-up pairs; right before each, the same circuit and seed through raw
   ``AerSimulator().run(transpiled bell, shots=1000, seed_simulator=s)`` in this process, and
   0.1 s (untimed) before each pair, so what a job leaves the server to do does not land on
   the next raw run. The added latency of job i is rest_i - raw_i. Each job's ledger
   timestamps (created, submitted, started, finished) split its REST time into where it went;
   the server's CPU time per job (net of its idle background work) is in the JSON.
2. **Event latency.** A websocket client on ``/api/events/subscribe`` (jupyter_server's event
   bus) receives ``job_status`` v1 events; latency = receipt time - the event's ``time`` (when
   the ledger recorded the transition; same host, same clock). Transitions come from jobs the
   server's engine runs (``POST`` without wait) and jobs this process runs itself with a core
   ``Client`` on the server's ledger, one at a time, each after a random pause (0-200 ms) so
   transitions land at random points of the server's polling cycle.
3. **Start-up.** Time from ``Popen`` to ``GET /api/status`` answering 200, with the extension
   and without it (``--ServerApp.jpserver_extensions qmlops_jupyter=False``), alternating, after
   one untimed start of each; ratio of medians. Informational: the extension's load time (the
   gap its "successfully loaded" line leaves in the server's log) and the time until
   ``/qmlops/api/v1/health`` reports the engine up.
4. **Listing under load.** ``GET /qmlops/api/v1/jobs`` on bench_ledger's seeded 100,000-job
   ledger (the same cached SQLite file, and PostgreSQL database ``qmlops_bench``), owner
   ``bench``: 50 concurrent clients (asyncio, one ``httpx.AsyncClient`` and connection each),
   each making K requests (default 10): page 1, two pages through the cursor, then
   ``state=COMPLETED`` page 1 and the next page, again. The server runs without its engine
   (``--QmlopsApp.run_engine=False``) so that the cached ledger, shared with benchmark 3, is
   only read. Reported: per-request p50 / p95 / max, throughput, the server's CPU time per
   request, and one client alone.

Run alone: ``.venv/bin/python benchmarks/bench_server.py [--quick] [--profile]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchlib import (
    BELL_QASM2 as BELL,
)
from benchlib import (
    RESULTS,
    BenchResult,
    Row,
    log,
    median,
    percentile,
    settle,
    summary,
    timed,
)

TARGET_ADDED_MS = 15.0
TARGET_EVENT_MS = 250.0
TARGET_START_RATIO = 1.10
WARMUP = 10
#: Seconds between two pairs of the REST benchmark (not timed).
PAUSE = 0.1
SHOTS = 1000
API = "/qmlops/api/v1"
JOB_STATUS = "https://events.qmlops-jupyter.dev/job_status/v1"
BENCH = "6 server"


# -- a real jupyter server ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """One ``jupyter server`` process in its own session (so stopping it stops its Aer workers
    too), on a private home and Jupyter state folders under ``scratch``."""

    def __init__(
        self,
        scratch: Path,
        home: Path,
        owner: str,
        *,
        extension: bool = True,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.scratch = scratch
        self.root = scratch / "root"
        self.root.mkdir(parents=True, exist_ok=True)
        self.token = secrets.token_hex(16)
        self.extension = extension
        self.args = list(args or [])
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("QMLOPS_", "MLFLOW_", "JPY_"))
            and k not in ("JUPYTER_RUNTIME_DIR", "JUPYTER_CONFIG_DIR", "IPYTHONDIR")
        }
        self.env.update(
            QMLOPS_HOME=str(home),
            QMLOPS_OWNER=owner,
            QMLOPS_TRACKING="off",
            MLFLOW_DISABLE_TELEMETRY="true",
            JUPYTER_RUNTIME_DIR=str(scratch / "runtime"),
            JUPYTER_CONFIG_DIR=str(scratch / "config"),
            IPYTHONDIR=str(scratch / "ipython"),
            PYTHONUNBUFFERED="1",
            **(env or {}),
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.log_path = scratch / "server.log"
        self.started = 0.0
        self.wall_started = 0.0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    def start(self) -> None:
        self.port = free_port()
        command = [
            sys.executable,
            "-m",
            "jupyter",
            "server",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={self.root}",
            f"--IdentityProvider.token={self.token}",
            *self.args,
        ]
        if not self.extension:
            command += ["--ServerApp.jpserver_extensions", "qmlops_jupyter=False"]
        if os.geteuid() == 0:
            command.append("--allow-root")
        with open(self.log_path, "ab") as out:
            out.write(f"\n--- start ({'with' if self.extension else 'without'} qmlops)\n".encode())
            out.flush()
            self.wall_started = time.time()
            self.started = time.perf_counter()
            self.proc = subprocess.Popen(
                command,
                cwd=self.root,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_for(self, path: str, ok: Any, timeout: float = 180.0, every: float = 0.02) -> float:
        """Seconds from ``Popen`` until ``GET path`` answers 200 and ``ok(json)`` holds."""
        import httpx

        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.base, headers=self.headers, timeout=2.0) as http:
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"jupyter server exited {self.proc.returncode}:\n{self.log_tail()}"
                    )
                try:
                    response = http.get(path)
                    if response.status_code == 200 and ok(response):
                        return time.perf_counter() - self.started
                except httpx.TransportError:
                    pass
                time.sleep(every)
        raise RuntimeError(
            f"jupyter server did not answer {path} as expected in {timeout:.0f} s:\n"
            f"{self.log_tail()}"
        )

    def wait_status(self) -> float:
        return self.wait_for("/api/status", lambda r: True)

    def wait_engine(self) -> float:
        """Until the extension's health check reports its engine alive and its event pump
        polling (a pump that failed to start would leave every ``?wait`` to its re-check)."""

        def up(response: Any) -> bool:
            data = response.json()
            return bool(data.get("engine", {}).get("ok")) and bool(
                data.get("events", {}).get("last_poll")
            )

        return self.wait_for(f"{API}/health", up, every=0.05)

    def stop(self) -> None:
        """SIGTERM to the server's process group (its clean shutdown), SIGKILL if it lingers."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # workers, or a server that did not stop
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server process has used so far (Linux), its worker
        processes not included."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def log_lines_since_start(self) -> list[str]:
        text = self.log_path.read_text(errors="replace")
        return text.rsplit("\n--- start", 1)[-1].splitlines()


_LOG_TIME = re.compile(r"^\[\w (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) (\w+)\] (.*)$")


def _log_times(lines: list[str]) -> list[tuple[float, str]]:
    """(epoch seconds, message) of the server's log lines (local time, millisecond stamps)."""
    out = []
    for line in lines:
        match = _LOG_TIME.match(line)
        if match:
            stamp = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S.%f")
            out.append((stamp.timestamp(), match.group(3)))
    return out


def extension_load_ms(server: Server) -> float | None:
    """The gap the qmlops extension's load (``initialize``: settings, client, metrics, event
    pump, handlers) leaves between the previous "successfully loaded" line and its own."""
    loaded = [
        (t, m) for t, m in _log_times(server.log_lines_since_start()) if "successfully loaded" in m
    ]
    for i, (t, message) in enumerate(loaded):
        if message.startswith("qmlops_jupyter |") and i > 0:
            return (t - loaded[i - 1][0]) * 1e3
    return None


def _parse_time(text: str) -> float:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


# -- 1. REST latency ---------------------------------------------------------------------------


def rest_latency(server: Server, n: int) -> tuple[list[Row], dict[str, Any]]:
    import httpx
    from qiskit import qasm2, transpile
    from qiskit_aer import AerSimulator

    simulator = AerSimulator()
    circuit = transpile(qasm2.loads(BELL), simulator)
    http = httpx.Client(base_url=server.base, headers=server.headers, timeout=60.0)
    jobs: list[dict[str, Any]] = []
    walls: list[tuple[float, float]] = []

    def raw(seed: int) -> dict[str, int]:
        return simulator.run(circuit, shots=SHOTS, seed_simulator=seed).result().get_counts()

    def rest(seed: int) -> list[dict[str, int]]:
        sent = time.time()
        response = http.post(
            f"{API}/jobs",
            params={"wait": "30"},
            json={"backend": "aer", "circuits": [BELL], "shots": SHOTS, "seed": seed},
        )
        received = time.time()
        job = response.json()
        if response.status_code != 201 or job.get("state") != "COMPLETED":
            raise RuntimeError(f"POST /jobs: {response.status_code} {str(job)[:300]}")
        jobs.append(job)
        walls.append((sent, received))
        return job["result"]["counts"]

    raw_t: list[float] = []
    rest_t: list[float] = []
    match = True
    try:
        log(f"[server] 1. {n} Bell jobs over REST (?wait=30), each paired with raw Aer")
        for i in range(WARMUP):
            timed(lambda s=i: raw(s))
            timed(lambda s=i: rest(s))
        jobs.clear()
        walls.clear()
        settle()
        # The server's own background work (event pump, engine tick, metrics), per second.
        cpu, began = server.cpu_seconds(), time.perf_counter()
        time.sleep(3.0)
        idle_rate = (server.cpu_seconds() - cpu) / (time.perf_counter() - began)
        cpu, began = server.cpu_seconds(), time.perf_counter()
        for seed in range(10_000, 10_000 + n):
            # A pause before each pair: the server finishes what a job leaves behind (its
            # engine's next claim, the pump) before raw Aer runs, so that work does not land
            # on the raw side, and jobs arrive as a person's would, not back to back.
            time.sleep(PAUSE)
            t_raw, c_raw = timed(lambda s=seed: raw(s))
            t_rest, c_rest = timed(lambda s=seed: rest(s))
            raw_t.append(t_raw)
            rest_t.append(t_rest)
            match = match and [c_raw] == c_rest
        elapsed = time.perf_counter() - began
        cpu = server.cpu_seconds() - cpu - idle_rate * elapsed
    finally:
        http.close()

    added_ms = [(o - r) * 1e3 for o, r in zip(rest_t, raw_t, strict=True)]
    # Where a REST job's time goes, from its ledger timestamps and this client's clock.
    split: dict[str, list[float]] = {
        "request -> recorded (created_at)": [],
        "recorded -> engine took it (submitted_at)": [],
        "submitted -> running (started_at)": [],
        "running -> completed (Aer in a worker process)": [],
        "completed -> answer received": [],
    }
    run_phase: list[float] = []
    for job, (sent, received) in zip(jobs, walls, strict=True):
        marks = [sent] + [
            _parse_time(job[k]) for k in ("created_at", "submitted_at", "started_at", "finished_at")
        ]
        marks.append(received)
        for key, a, b in zip(split, marks, marks[1:], strict=False):
            split[key].append((b - a) * 1e3)
        run_phase.append(job["phases"].get("run", 0.0) * 1e3)
    tag = f"{BENCH} rest"
    rows = [
        Row(tag, f"raw Aer, Bell (p50 of {n})", median(raw_t) * 1e3, "ms"),
        Row(tag, f"POST ?wait=30, Bell (p50 of {n})", median(rest_t) * 1e3, "ms"),
        Row(tag, "POST ?wait=30, p95", percentile(rest_t, 95) * 1e3, "ms"),
        Row(
            tag,
            "added over raw Aer, p50",
            percentile(added_ms, 50),
            "ms",
            TARGET_ADDED_MS,
            note="" if match else "COUNTS DIFFER",
        ),
        Row(tag, "added over raw Aer, p95", percentile(added_ms, 95), "ms"),
    ]
    if not match:
        rows[3].status = "ERROR"
    details = {
        "jobs": n,
        "shots": SHOTS,
        "warmup": WARMUP,
        "raw_ms": summary(raw_t, 1e3),
        "rest_ms": summary(rest_t, 1e3),
        "added_ms": summary([a / 1e3 for a in added_ms], 1e3),
        "counts_match": match,
        "split_p50_ms": {k: round(percentile(v, 50), 3) for k, v in split.items()},
        "split_p95_ms": {k: round(percentile(v, 95), 3) for k, v in split.items()},
        "worker_run_phase_ms": summary([r / 1e3 for r in run_phase], 1e3),
        "pause_s": PAUSE,
        "server_cpu_ms_per_job": round(cpu / n * 1e3, 3),
        "server_idle_cpu_ms_per_s": round(idle_rate * 1e3, 3),
    }
    log(
        "[server]   REST p50 split: "
        + ", ".join(f"{k.split(' (')[0]} {v:.1f} ms" for k, v in details["split_p50_ms"].items())
    )
    return rows, details


# -- 2. event latency --------------------------------------------------------------------------


class EventListener:
    """A websocket client on the server's event bus, recording when each ``job_status`` event
    arrived (``time.time()``, the clock the ledger stamps transitions with)."""

    def __init__(self, server: Server) -> None:
        import websocket

        url = f"ws://127.0.0.1:{server.port}/api/events/subscribe"
        self.ws = websocket.create_connection(
            url, header=[f"Authorization: token {server.token}"], timeout=30
        )
        self.ws.settimeout(0.2)
        self.received: list[tuple[float, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="bench-events", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        import websocket

        while not self._stop.is_set():
            try:
                message = self.ws.recv()
            except websocket.WebSocketTimeoutException:
                continue
            except (websocket.WebSocketException, OSError):
                return
            at = time.time()
            try:
                data = json.loads(message)
            except ValueError:
                continue
            if data.get("schema_id") == JOB_STATUS:
                with self._lock:
                    self.received.append((at, data))

    def events_of(self, job_id: str) -> list[tuple[float, dict[str, Any]]]:
        with self._lock:
            return [(t, d) for t, d in self.received if d.get("job_id") == job_id]

    def wait_state(self, job_id: str, state: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(d.get("new_state") == state for _, d in self.events_of(job_id)):
                return
            time.sleep(0.005)
        raise RuntimeError(f"no {state} event for job {job_id} within {timeout:.0f} s")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(Exception):
            self.ws.close()


def event_latency(server: Server, home: Path, jobs_each: int) -> tuple[list[Row], dict[str, Any]]:
    import httpx

    from qmlops_jupyter.client import Client
    from qmlops_jupyter.config import Settings

    os.environ["QMLOPS_TRACKING"] = "off"
    client = Client(Settings.from_env(home=home))
    client.submit(BELL, backend="aer", shots=SHOTS, seed=1, wait=True)  # warm: Aer, ledger
    http = httpx.Client(base_url=server.base, headers=server.headers, timeout=60.0)
    listener = EventListener(server)
    rng = random.Random(6)
    made: dict[str, str] = {}  # job id -> who made its transitions
    try:
        time.sleep(0.5)  # events of earlier jobs, if any, go by first
        log(
            f"[server] 2. event latency: {jobs_each} jobs run by the server's engine and "
            f"{jobs_each} by this process, one at a time"
        )
        order = ["server", "process"] * jobs_each
        for i, who in enumerate(order):
            time.sleep(rng.uniform(0.0, 0.2))
            if who == "server":
                response = http.post(
                    f"{API}/jobs",
                    json={"backend": "aer", "circuits": [BELL], "shots": SHOTS, "seed": i},
                )
                if response.status_code != 201:
                    raise RuntimeError(f"POST /jobs: {response.status_code} {response.text[:300]}")
                job_id = response.json()["id"]
            else:
                job_id = client.submit(BELL, backend="aer", shots=SHOTS, seed=i, wait=True).id
            made[job_id] = who
            listener.wait_state(job_id, "COMPLETED")
        time.sleep(0.3)
    finally:
        listener.close()
        http.close()

    latencies: dict[str, list[float]] = {"server": [], "process": []}
    missing = 0
    out_of_order = 0
    for job_id, who in made.items():
        got = listener.events_of(job_id)
        # What the ledger holds for the job, against what arrived.
        recorded = [e for e in client.ledger.events(job_id) if e.kind == "transition"]
        missing += max(0, len(recorded) - len(got))
        seqs = [d["seq"] for _, d in got]
        out_of_order += sum(1 for a, b in itertools.pairwise(seqs) if b <= a)
        for at, data in got:
            latencies[who].append(at - _parse_time(data["time"]))
    client.close()
    every = latencies["server"] + latencies["process"]
    tag = f"{BENCH} events"
    problems = []
    if missing:
        problems.append(f"{missing} transitions never arrived")
    if out_of_order:
        problems.append(f"{out_of_order} out of order")
    rows = [
        Row(
            tag,
            f"transition -> websocket, p50 ({len(every)} events)",
            percentile(every, 50) * 1e3,
            "ms",
        ),
        Row(
            tag,
            "transition -> websocket, p95",
            percentile(every, 95) * 1e3,
            "ms",
            TARGET_EVENT_MS,
            note="; ".join(problems),
        ),
        Row(tag, "transition -> websocket, max", max(every) * 1e3, "ms"),
        Row(
            tag,
            "p50, moves by the server's engine",
            percentile(latencies["server"], 50) * 1e3,
            "ms",
        ),
        Row(tag, "p50, moves by another process", percentile(latencies["process"], 50) * 1e3, "ms"),
    ]
    if problems:
        rows[1].status = "ERROR"
    details = {
        "jobs": {"server_engine": jobs_each, "other_process": jobs_each},
        "events": len(every),
        "latency_ms": summary(every, 1e3),
        "server_engine_ms": summary(latencies["server"], 1e3),
        "other_process_ms": summary(latencies["process"], 1e3),
        "missing": missing,
        "out_of_order": out_of_order,
        "pump_interval_s": 0.1,
    }
    return rows, details


# -- 3. start-up -------------------------------------------------------------------------------


def startup(base: Path, owner: str, runs: int, profile: bool) -> tuple[list[Row], dict[str, Any]]:
    scratch = base / "startup"
    home = scratch / "home"
    servers = {
        "with": Server(scratch / "with", home, owner, extension=True),
        "without": Server(scratch / "without", home, owner, extension=False),
    }
    times: dict[str, list[float]] = {"with": [], "without": []}
    ready: list[float] = []
    loads: list[float] = []

    def once(side: str, timed_run: bool) -> None:
        server = servers[side]
        server.start()
        try:
            t_status = server.wait_status()
            t_ready = server.wait_engine() if side == "with" else None
        finally:
            server.stop()
        if not timed_run:
            return
        times[side].append(t_status)
        if t_ready is not None:
            ready.append(t_ready)
            load = extension_load_ms(server)
            if load is not None:
                loads.append(load)
        log(
            f"[server]   start {side} qmlops: /api/status after {t_status:.3f} s"
            + (f", engine up after {t_ready:.3f} s" if t_ready is not None else "")
        )

    log(f"[server] 3. start-up, {runs} starts with and without the extension, alternating")
    once("with", False)  # creates the ledger, warms the page cache for both
    once("without", False)
    for i in range(runs):
        for side in ("without", "with") if i % 2 == 0 else ("with", "without"):
            time.sleep(0.5)
            once(side, True)
    profile_path = _profile_startup(servers["with"]) if profile else None
    ratio = median(times["with"]) / median(times["without"])
    tag = f"{BENCH} start"
    rows = [
        Row(tag, f"/api/status 200, without (median of {runs})", median(times["without"]), "s"),
        Row(tag, f"/api/status 200, with (median of {runs})", median(times["with"]), "s"),
        Row(tag, "with / without (ratio of medians)", ratio, "x", TARGET_START_RATIO),
        Row(tag, "qmlops load (initialize), median", median(loads) if loads else None, "ms"),
        Row(tag, "until /health: engine up, median", median(ready), "s"),
    ]
    details = {
        "runs": runs,
        "without_s": [round(t, 4) for t in times["without"]],
        "with_s": [round(t, 4) for t in times["with"]],
        "engine_up_s": [round(t, 4) for t in ready],
        "qmlops_load_ms": [round(t, 1) for t in loads],
        "profile": profile_path,
    }
    return rows, details


def _profile_startup(server: Server) -> str:
    """One more start with ``-X importtime``: the modules the extension's load imports (those
    imported between the previous extension's "successfully loaded" line and its own), by
    cumulative time; written to results/profile-server-startup.txt."""
    server.env["PYTHONPROFILEIMPORTTIME"] = "1"
    server.start()
    try:
        server.wait_engine()
    finally:
        server.stop()
        server.env.pop("PYTHONPROFILEIMPORTTIME")
    window: list[str] = []
    for line in server.log_lines_since_start():
        if "successfully loaded" in line:
            if "qmlops_jupyter |" in line:
                break
            window = []  # another extension's load ended: the next lines are someone else's
        elif line.startswith("import time:") and "|" in line:
            window.append(line)
    top = []
    every = []
    for line in window:
        parts = line[len("import time:") :].split("|")
        if len(parts) != 3 or not parts[0].strip().isdigit():
            continue
        entry = (int(parts[1]), int(parts[0]), parts[2].strip())
        every.append(entry)
        if not parts[2].startswith("  "):
            top.append(entry)
    top.sort(reverse=True)
    total = sum(c for c, _, _ in top)
    gap = extension_load_ms(server)
    lines = [
        "Imports made by the qmlops extension's load (-X importtime, one start, which slows "
        f"imports): {total / 1e3:.0f} ms in all; the load's log gap: "
        + ("?" if gap is None else f"{gap:.0f} ms"),
        "",
        "Top-level imports:",
        "cumulative us  self us  module",
        *(f"{c:>13}  {s:>7}  {m}" for c, s, m in top[:25]),
        "",
        "Largest self times, any depth:",
        "cumulative us  self us  module",
        *(f"{c:>13}  {s:>7}  {m}" for c, s, m in sorted(every, key=lambda e: -e[1])[:30]),
    ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "profile-server-startup.txt"
    path.write_text("\n".join(lines) + "\n")
    log(f"[server] import-time profile written to {path}")
    return str(path)


# -- 4. listing under load ---------------------------------------------------------------------


async def _list_load(
    server: Server, clients: int, per_client: int
) -> tuple[list[float], float, int]:
    """``clients`` concurrent clients, ``per_client`` requests each; returns the request
    times, the wall time of the whole and the number of jobs read."""
    import httpx

    walk = [("all", False), ("all", True), ("all", True), ("COMPLETED", False), ("COMPLETED", True)]
    times: list[float] = []
    jobs_read = 0
    start = asyncio.Event()

    async def one(http: Any) -> None:
        nonlocal jobs_read
        await start.wait()
        cursor = None
        for i in range(per_client):
            state, follow = walk[i % len(walk)]
            params: dict[str, str] = {"limit": "50"}
            if state != "all":
                params["state"] = state
            if follow and cursor:
                params["cursor"] = cursor
            began = time.perf_counter()
            response = await http.get(f"{API}/jobs", params=params)
            page = response.json()
            times.append(time.perf_counter() - began)
            if response.status_code != 200:
                raise RuntimeError(f"GET /jobs: {response.status_code} {str(page)[:300]}")
            jobs_read += len(page["jobs"])
            cursor = page["next"]

    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    https = [
        httpx.AsyncClient(
            base_url=server.base, headers=server.headers, timeout=120.0, limits=limits
        )
        for _ in range(clients)
    ]
    try:
        # Every client opens its connection first (not timed).
        await asyncio.gather(*(h.get(f"{API}/jobs", params={"limit": "1"}) for h in https))
        tasks = [asyncio.create_task(one(h)) for h in https]
        await asyncio.sleep(0.2)
        began = time.perf_counter()
        start.set()
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - began
    finally:
        await asyncio.gather(*(h.aclose() for h in https))
    return times, wall, jobs_read


def _single(server: Server, reps: int) -> list[float]:
    import httpx

    with httpx.Client(base_url=server.base, headers=server.headers, timeout=60.0) as http:
        for _ in range(5):
            http.get(f"{API}/jobs", params={"limit": "50"}).json()
        out = []
        for _ in range(reps):
            t, _ = timed(lambda: http.get(f"{API}/jobs", params={"limit": "50"}).json())
            out.append(t)
    return out


def listing(
    base: Path, owner: str, db: str, url: str, clients: int, per_client: int, n: int
) -> tuple[list[Row], dict[str, Any]]:
    scratch = base / f"list-{db}"
    server = Server(
        scratch,
        scratch / "home",
        owner,
        args=["--QmlopsApp.run_engine=False"],
        env={"QMLOPS_DATABASE_URL": url},
    )
    server.start()
    try:
        server.wait_for(f"{API}/health", lambda r: True, every=0.05)
        single = _single(server, 20)
        settle()
        cpu_server, cpu_here = server.cpu_seconds(), time.process_time()
        times, wall, jobs_read = asyncio.run(_list_load(server, clients, per_client))
        cpu_server = server.cpu_seconds() - cpu_server
        cpu_here = time.process_time() - cpu_here
    finally:
        server.stop()
    requests = len(times)
    tag = f"{BENCH} list {db}"
    rows = [
        Row(tag, "1 client alone, page of 50 (p50 of 20)", median(single) * 1e3, "ms"),
        Row(
            tag,
            f"{clients} concurrent clients: p50",
            percentile(times, 50) * 1e3,
            "ms",
            note=f"{n:,}-job ledger, {requests} requests",
        ),
        Row(tag, f"{clients} concurrent clients: p95", percentile(times, 95) * 1e3, "ms"),
        Row(tag, f"{clients} concurrent clients: max", max(times) * 1e3, "ms"),
        Row(tag, "throughput", round(requests / wall, 1), "req/s"),
        Row(tag, "server CPU per request", cpu_server / requests * 1e3, "ms"),
    ]
    details = {
        "ledger_jobs": n,
        "clients": clients,
        "requests_per_client": per_client,
        "requests": requests,
        "jobs_read": jobs_read,
        "wall_s": round(wall, 3),
        "throughput_rps": round(requests / wall, 2),
        "request_ms": summary(times, 1e3),
        "single_client_ms": summary(single, 1e3),
        "server_cpu_ms_per_request": round(cpu_server / requests * 1e3, 3),
        "clients_cpu_ms_per_request": round(cpu_here / requests * 1e3, 3),
    }
    return rows, details


def listing_ledgers(args: Any, base: Path, n: int) -> tuple[list[Row], dict[str, Any]]:
    import bench_ledger

    rows: list[Row] = []
    details: dict[str, Any] = {}
    clients = args.server_clients
    per_client = 4 if args.quick else args.server_requests
    log(f"[server] 4. GET /jobs, {clients} concurrent clients x {per_client}, {n:,}-job ledger")
    ledger, info = bench_ledger.sqlite_ledger(n, args.owner, args.fresh)
    ledger.close()
    r, d = listing(base, args.owner, "sqlite", f"sqlite:///{info['path']}", clients, per_client, n)
    rows += r
    details["sqlite"] = {**info, **d}
    try:
        ledger, info = bench_ledger.postgres_ledger(args.postgres_url, n, args.owner, args.fresh)
        url = ledger.engine.url.render_as_string(hide_password=False)
        ledger.close()
    except Exception as exc:
        from qmlops_jupyter.errors import one_line

        if not bench_ledger._unreachable(exc):
            raise
        why = f"PostgreSQL unreachable: {one_line(exc)[:160]}"
        log(f"[server] SKIP PostgreSQL listing: {why}")
        rows.append(Row(f"{BENCH} list postgres", "concurrent clients", None, "ms", note=why))
        details["postgres"] = {"skipped": why}
        return rows, details
    r, d = listing(base, args.owner, "postgres", url, clients, per_client, n)
    rows += r
    details["postgres"] = {**info, **d}
    return rows, details


# -- the benchmark -----------------------------------------------------------------------------


def run(args: Any) -> BenchResult:
    quick = args.quick
    n_jobs = 20 if quick else args.server_jobs
    starts = 2 if quick else args.server_starts
    n_ledger = 5_000 if quick else args.ledger_jobs
    event_jobs = 8 if quick else 20
    base = Path(tempfile.mkdtemp(prefix="server-", dir=args.home))
    rows: list[Row] = []
    details: dict[str, Any] = {}

    r, d = startup(base, args.owner, starts, args.profile)
    rows += r
    details["startup"] = d

    home = base / "api-home"
    server = Server(base / "api", home, args.owner)
    server.start()
    try:
        server.wait_engine()
        r, d = rest_latency(server, n_jobs)
        rows += r
        details["rest"] = d
        r, d = event_latency(server, home, event_jobs)
        rows += r
        details["events"] = d
    except Exception as exc:
        raise RuntimeError(f"{exc}\nserver log:\n{server.log_tail()}") from exc
    finally:
        server.stop()

    r, d = listing_ledgers(args, base, n_ledger)
    rows += r
    details["listing"] = d
    details["note"] = (
        "rest.split_*: where a REST job's time went, from the job's ledger timestamps "
        "(created/submitted/started/finished) and this client's clock"
    )
    return BenchResult("server", rows, details)


if __name__ == "__main__":
    from run_all import main

    sys.exit(main(["--only", "server", *sys.argv[1:]]))
