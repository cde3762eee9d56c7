"""The ``%qmlops`` line magic and the ``%%qmlops run`` cell magic (``%load_ext qmlops_jupyter``).

::

    %qmlops backends                        # backends, kinds, limits, credential status
    %qmlops use aer --shots 2000            # this kernel's defaults
    %%qmlops run --seed 7                   # the cell: OpenQASM 2/3 text, or Python whose
    OPENQASM 3.0; ...                       # last expression is a circuit (or a list)
    %qmlops submit circuits --shots 500     # a circuit (or a list) held in a variable
    %qmlops jobs --state RUNNING            # a job list; show / watch / cancel JOB
    %qmlops estimate bell --backend ionq:simulator --shots 1000
    %qmlops budget | creds | env | help
    %qmlops track vqe-1  ...  %qmlops track stop

Everything goes through :func:`qmlops_jupyter.get_client`: in a kernel that a Jupyter server
with the qmlops extension started, jobs belong to the server's engine, so a kernel restart loses
none of them. Arguments are taken literally (no ``$var`` / ``{var}`` expansion); ``EXPR``
arguments are Python expressions evaluated in the notebook's namespace. Bad arguments, unknown
jobs or backends and refused requests are one-line ``UsageError`` messages, never tracebacks.
No secret is ever accepted on a magic line: ``%qmlops creds`` opens a form whose password field
sends the secret from the browser to the server.

Only IPython's magic machinery is imported here; the client, the widgets and the displays load
inside the commands that use them.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING, Any, NoReturn

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

DEFAULT_BACKEND = "aer"
DEFAULT_SHOTS = 1024
#: What replaces, in the kernel's history, a line refused because it may hold a secret.
SCRUBBED = "# (removed: this line may have held a secret)"

_ALIAS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass
class Session:
    """This kernel's defaults (``%qmlops use``) and the run ``%qmlops track`` opened."""

    backend: str = DEFAULT_BACKEND
    shots: int = DEFAULT_SHOTS
    credential: str | None = None
    run: Any = None

    def describe(self) -> str:
        credential = self.credential or "none"
        return f"backend {self.backend}, {self.shots} shots, credential {credential}"


# -- argument parsing ---------------------------------------------------------------------------


class _HelpShown(Exception):
    """``-h``/``--help`` printed a command's help: the magic ends there."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises IPython's ``UsageError`` (one line) instead of exiting."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see %qmlops help)")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            raise UsageError(f"{self.prog}: {message.strip()}")
        raise _HelpShown


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a non-negative integer")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def _add_job_options(p: _Parser, *, name: bool = True) -> None:
    p.add_argument("--backend", "-b", help="backend name (default: the session's, %%qmlops use)")
    p.add_argument("--shots", "-s", type=_positive_int, help="shots (default: the session's)")
    if name:
        p.add_argument("--name", help="a name for the job")
    p.add_argument("--seed", type=_seed, help="simulator seed: the same seed, the same counts")
    p.add_argument("--credential", metavar="ALIAS", help="credential alias (default: session's)")


#: Each command's arguments in one line (its usage, and ``%qmlops help``).
SYNOPSIS = {
    "backends": "backends",
    "use": "use [BACKEND] [--shots N] [--credential ALIAS | --no-credential] [--reset]",
    "run": "%%qmlops run [--backend B] [--shots N] [--name TEXT] [--seed S] [--credential ALIAS]"
    " [--no-wait] [--track [RUN_NAME]] [--timeout S]",
    "submit": "submit EXPR [--backend B] [--shots N] [--name TEXT] [--seed S] "
    "[--credential ALIAS] [--wait] [--timeout S]",
    "jobs": "jobs [--state STATE] [--backend B] [--limit N]",
    "show": "show JOB [--events]",
    "watch": "watch [JOB ...] [--limit N]",
    "cancel": "cancel JOB",
    "estimate": "estimate EXPR [--backend B] [--shots N]",
    "budget": "budget",
    "creds": "creds [ALIAS] [--provider ibm|aws|ionq]",
    "env": "env",
    "track": "track NAME [--experiment E] | track stop | track",
    "help": "help [COMMAND]",
}


def _commands() -> tuple[_Parser, dict[str, _Parser]]:
    top = _Parser(
        prog="%qmlops",
        add_help=False,
        description="Quantum jobs from the notebook. Jobs belong to the engine, not to this "
        "kernel: they survive kernel restarts. Arguments are literal; EXPR is a Python "
        "expression of the notebook's namespace. '%qmlops help COMMAND' or "
        "'%qmlops COMMAND -h' details one command.",
    )
    sub = top.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    parsers: dict[str, _Parser] = {}

    def add(name: str, help_text: str, usage: str | None = None) -> _Parser:
        # argparse %-formats usage strings.
        usage = (usage or f"%qmlops {SYNOPSIS[name]}").replace("%", "%%")
        parser = sub.add_parser(name, help=help_text, description=help_text, usage=usage)
        parsers[name] = parser
        return parser

    add("backends", "table of backends: kind, limits, availability, credential status")

    p = add(
        "use",
        "set this kernel's defaults: backend, shots, and the credential that goes with that "
        "backend (another backend forgets it); no argument shows them",
    )
    p.add_argument("backend", nargs="?", metavar="BACKEND", help="default backend")
    p.add_argument("--shots", "-s", type=_positive_int, help="default shots")
    p.add_argument("--credential", metavar="ALIAS", help="default credential alias")
    p.add_argument("--no-credential", action="store_true", help="forget the default credential")
    p.add_argument("--reset", action="store_true", help="back to aer, 1024 shots, no credential")

    p = add(
        "run",
        "cell magic: run the cell's circuit; the cell is OpenQASM 2/3 text, or Python whose "
        "last expression is a circuit or a list of circuits (Qiskit, Braket, PennyLane)",
        usage=f"{SYNOPSIS['run']}\n<OpenQASM text, or Python ending in a circuit expression>",
    )
    _add_job_options(p)
    p.add_argument(
        "--no-wait", action="store_true", help="return the job at once instead of its result"
    )
    p.add_argument(
        "--track",
        nargs="?",
        const="",
        default=None,
        metavar="RUN_NAME",
        help="log the job to its own tracked (MLflow) run",
    )
    p.add_argument("--timeout", type=_seconds, help="stop waiting after this many seconds")

    p = add("submit", "submit a circuit (or a list) held in a variable; returns the job")
    p.add_argument("expr", metavar="EXPR", help="expression giving the circuit(s)")
    _add_job_options(p)
    p.add_argument("--wait", action="store_true", help="wait for the job to end")
    p.add_argument("--timeout", type=_seconds, help="with --wait: give up after S seconds")

    p = add("jobs", "your jobs, newest first (they outlive this kernel)")
    p.add_argument("--state", help="only jobs in this state (COMPLETED, RUNNING, ...)")
    p.add_argument("--backend", "-b", help="only jobs of this backend")
    p.add_argument("--limit", "-n", type=_positive_int, default=20, help="at most N (20)")

    p = add("show", "one job, read fresh (id or a unique prefix)")
    p.add_argument("job", metavar="JOB", help="job id or unique prefix")
    p.add_argument("--events", action="store_true", help="also print the job's event log")

    p = add("watch", "a live job monitor (your recent jobs, or the jobs named)")
    p.add_argument("jobs", nargs="*", metavar="JOB", help="job ids or unique prefixes")
    p.add_argument("--limit", "-n", type=_positive_int, default=20, help="recent jobs shown")

    p = add("cancel", "cancel a job")
    p.add_argument("job", metavar="JOB", help="job id or unique prefix")

    p = add("estimate", "what a job would cost, before sending it (nothing is submitted)")
    p.add_argument("expr", metavar="EXPR", help="expression giving the circuit(s)")
    p.add_argument("--backend", "-b", help="backend name (default: the session's)")
    p.add_argument("--shots", "-s", type=_positive_int, help="shots (default: the session's)")

    add("budget", "your budgets: limits, use this day/month, and what remains")

    p = add(
        "creds",
        "open the credential form; the secret is typed in its password field, never on the "
        "magic line",
    )
    p.add_argument("alias", nargs="?", metavar="ALIAS", help="the credential's alias")
    p.add_argument("--provider", help="ibm, aws or ionq")

    add("env", "versions of Python, qmlops and the quantum SDKs; OS, CPUs, memory")

    p = add(
        "track",
        "open a tracked (MLflow) run for the cells that follow; 'track stop' closes it; "
        "no argument shows the open run",
    )
    p.add_argument("run_name", nargs="?", metavar="NAME|stop", help="run name, or stop")
    p.add_argument("--experiment", "-e", help="MLflow experiment (default: the configured)")

    p = add("help", "this help, or one command's")
    p.add_argument("topic", nargs="?", metavar="COMMAND")
    return top, parsers


#: Commands whose first argument is a Python expression (which may hold spaces and quotes).
_EXPR_COMMANDS = frozenset({"submit", "estimate"})


def split_expression(text: str) -> tuple[str, str]:
    """``"circuits[0] --shots 10"`` -> ``("circuits[0]", "--shots 10")``: the expression ends
    at the first option (a blank then ``-`` and a letter or ``-``) outside brackets and quotes
    (write ``(a -b)`` for a subtraction)."""
    depth = 0
    quote = ""
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 2
                continue
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth <= 0 and (i == 0 or text[i - 1].isspace()) and ch == "-":
            following = text[i + 1 : i + 2]
            if following.isalpha() or following == "-":
                return text[:i].strip(), text[i:].strip()
        i += 1
    return text.strip(), ""


def openqasm_body(body: str) -> str | None:
    """The cell as OpenQASM text when, after blank lines and comments (``//``, ``/* */``,
    ``#``), it starts with ``OPENQASM``; else None (the cell is Python). The leading comments
    are left out of the text."""
    text = body.lstrip()
    while text:
        if text.startswith(("//", "#")):
            _, _, text = text.partition("\n")
        elif text.startswith("/*"):
            end = text.find("*/")
            if end < 0:
                return None
            text = text[end + 2 :]
        else:
            break
        text = text.lstrip()
    return text if text.startswith("OPENQASM") else None


def looks_like_secret(value: str) -> bool:
    """Whether a would-be alias looks like a key or token rather than a name: not an alias at
    all, a known key shape (``AKIA...``), or a run of 16+ letters and digits mixed (``ionq-main``
    and ``ibm-2026`` are names; ``sk-3kF9xQ2...`` is not)."""
    value = value.strip()
    if not _ALIAS.match(value):
        return True
    if re.match(r"^(AKIA|ASIA)[A-Z0-9]{12,}$", value):
        return True
    return any(
        len(part) >= 16 and re.search(r"[0-9]", part) and re.search(r"[A-Za-z]", part)
        for part in re.split(r"[-_.]", value)
    )


def _maybe_secret_argument(token: str) -> bool:
    """An unexpected argument (``--api-key=...`` counts by its value) that looks like a key;
    job ids and their prefixes (lowercase hex) do not."""
    value = token.split("=", 1)[1] if token.startswith("-") and "=" in token else token
    if re.fullmatch(r"[0-9a-f]{4,32}", value):
        return False
    return len(value) >= 16 and not value.startswith("-") and looks_like_secret(value)


# -- output helpers -----------------------------------------------------------------------------


class Rich:
    """A table shown as HTML in the notebook and as text elsewhere (``Out[n]``, ``print``)."""

    def __init__(self, text: str, html: str) -> None:
        self.text = text
        self.html = html

    def _repr_html_(self) -> str:
        return self.html

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(self.text)

    def __repr__(self) -> str:
        return self.text


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)


def html_table(header: list[str], rows: list[list[str]], caption: str = "") -> str:
    head = "".join(f"<th style='text-align:left'>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td style='text-align:left'>{escape(c)}</td>" for c in row) + "</tr>"
        for row in rows
    )
    cap = f"<caption style='text-align:left'>{escape(caption)}</caption>" if caption else ""
    return (
        f"<table class='qmlops-table'>{cap}<thead><tr>{head}</tr></thead>"
        f"<tbody>{body}</tbody></table>"
    )


def _usd(value: float | None) -> str:
    if value is None:
        return "unknown"
    if 0 < value < 0.01:
        return f"${value:.6f}".rstrip("0")
    return f"${value:,.2f}"


# -- the magics ---------------------------------------------------------------------------------


@magics_class
class QmlopsMagics(Magics):
    """``%qmlops COMMAND ...`` and ``%%qmlops run``; see the module doc and ``%qmlops help``."""

    def __init__(self, shell: InteractiveShell) -> None:
        super().__init__(shell)
        self.session = Session()
        self._top, self._parsers = _commands()
        # ``creds`` has its own parsing (_creds): argparse would repeat what it refuses.
        self._handlers: dict[str, Callable[[argparse.Namespace, str], Any]] = {
            name: getattr(self, f"_cmd_{name}") for name in self._parsers if name != "creds"
        }

    @no_var_expand
    @line_cell_magic
    def qmlops(self, line: str, cell: str | None = None) -> Any:
        """Quantum jobs from the notebook: ``%qmlops help`` lists the commands."""
        __tracebackhide__ = True  # an error of the cell's own code shows the cell's lines only
        command, rest = ([*line.split(None, 1), "", ""])[:2]
        rest = rest.strip()
        if not command:
            command = "help"
        if command in ("-h", "--help"):
            command, rest = "help", ""
        if command not in self._parsers:
            known = ", ".join(self._parsers)
            raise UsageError(f"unknown %qmlops command {command!r}; one of: {known}")
        if command == "run" and cell is None:
            raise UsageError(
                "run is a cell magic: put '%%qmlops run [options]' on the first line of a cell "
                "and the circuit (OpenQASM, or Python ending in a circuit) below it"
            )
        if command != "run" and cell is not None and cell.strip():
            raise UsageError(f"only %%qmlops run takes a cell body; use %qmlops {command}")
        if command == "creds":
            return self._creds(rest)
        try:
            args = self._parse(command, rest)
        except _HelpShown:
            return None
        credential = getattr(args, "credential", None)
        if credential is not None and looks_like_secret(credential):
            # Before anything runs (a cell's code, a submission).
            self._refuse_secret(
                "--credential takes an alias (like ionq-main); this looks like a key"
            )
        try:
            return self._handlers[command](args, cell or "")
        except UsageError:
            raise
        except Exception as exc:
            from ..errors import QmlopsError

            if isinstance(exc, QmlopsError):
                raise UsageError(_one_line(exc)) from None
            raise

    def _parse(self, command: str, rest: str) -> argparse.Namespace:
        parser = self._parsers[command]
        if command in _EXPR_COMMANDS:
            expr, options = split_expression(rest)
            tokens = [expr] if expr else []
            tokens += _split(options, parser.prog)
        else:
            tokens = _split(rest, parser.prog)
        args, extra = parser.parse_known_args(tokens)
        if extra:
            # argparse would repeat them: one that may be a secret is refused unrepeated.
            if any(_maybe_secret_argument(token) for token in extra):
                self._refuse_secret(f"{parser.prog}: unrecognized arguments")
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        return args

    # -- the client --------------------------------------------------------------------------

    @staticmethod
    def client() -> Any:
        from ..client import get_client

        return get_client()

    def _evaluate(self, expr: str, command: str) -> Any:
        if not expr:
            raise UsageError(f"%qmlops {command}: give the circuit: an expression such as qc")
        try:
            return self.shell.ev(expr)
        except NameError as exc:
            raise UsageError(f"%qmlops {command}: {exc}") from None
        except SyntaxError as exc:
            raise UsageError(
                f"%qmlops {command}: {expr!r} is not a Python expression ({exc.msg})"
            ) from None

    def _credential(self, value: str | None, backend: str | None = None) -> str | None:
        """The credential alias of an option, else the session's when ``backend`` is the
        session's backend (the default credential goes with the default backend). An option
        that looks like a secret is refused, and the cell leaves the kernel's history."""
        if value is None:
            session = self.session
            return session.credential if backend in (None, session.backend) else None
        if looks_like_secret(value):
            self._refuse_secret(
                "--credential takes an alias (like ionq-main); this looks like a key"
            )
        return value

    def _refuse_secret(self, why: str) -> NoReturn:
        forget_current_input(self.shell)
        raise UsageError(
            f"{why}; secrets are never typed on a magic line: open '%qmlops creds ALIAS' and type "
            "the secret in its password field (the line was replaced in the cell and removed "
            "from the kernel's history)"
        )

    # -- commands ----------------------------------------------------------------------------

    def _cmd_help(self, args: argparse.Namespace, cell: str) -> None:
        topic = args.topic
        if topic is None:
            print(self.overview())
            return
        if topic not in self._parsers:
            known = ", ".join(self._parsers)
            raise UsageError(f"unknown %qmlops command {topic!r}; one of: {known}")
        print(self._parsers[topic].format_help().rstrip())

    def overview(self) -> str:
        """``%qmlops help``: one line per command."""
        import textwrap

        lines = [
            "%qmlops COMMAND [options]    and the cell magic    %%qmlops run [options]",
            "",
            "Quantum jobs from the notebook. Jobs belong to the engine, not to this kernel: they",
            "survive kernel restarts. Arguments are literal; EXPR is a Python expression of the",
            "notebook's namespace. '%qmlops help COMMAND' or '%qmlops COMMAND -h' details one.",
            "",
        ]
        for name, parser in self._parsers.items():
            lines.append(f"  {SYNOPSIS[name].removeprefix('%%qmlops ')}")
            lines += textwrap.wrap(
                parser.description or "", 88, initial_indent=" " * 6, subsequent_indent=" " * 6
            )
        return "\n".join(lines)

    def _cmd_backends(self, args: argparse.Namespace, cell: str) -> Rich:
        from . import display

        infos = self.client().backends()
        return Rich(display.backends_text(infos), display.backends_html(infos))

    def _cmd_use(self, args: argparse.Namespace, cell: str) -> None:
        session = self.session
        if args.reset:
            session.backend, session.shots, session.credential = (
                DEFAULT_BACKEND,
                DEFAULT_SHOTS,
                None,
            )
        if args.backend is not None:
            backend = args.backend.strip()
            self.client().registry.get(backend)  # UnknownBackend, MissingBackendDependency
            if backend != session.backend:
                session.credential = None  # it was the previous backend's
            session.backend = backend
        if args.shots is not None:
            session.shots = args.shots
        if args.no_credential:
            session.credential = None
        elif args.credential is not None:
            alias = self._credential(args.credential)
            self.client().vault.info(alias)  # CredentialNotFound
            session.credential = alias
        print(f"qmlops session defaults: {session.describe()}")

    def _cmd_run(self, args: argparse.Namespace, cell: str) -> Any:
        if not cell.strip():
            raise UsageError(
                "%%qmlops run: the cell is empty; put OpenQASM text, or Python ending in a "
                "circuit expression, below the magic line"
            )
        __tracebackhide__ = True
        text = openqasm_body(cell)
        circuits = text if text is not None else self._run_python(cell)
        return self._submit(circuits, args, wait=not args.no_wait, track=args.track)

    def _cmd_submit(self, args: argparse.Namespace, cell: str) -> Any:
        circuits = self._evaluate(args.expr, "submit")
        return self._submit(circuits, args, wait=args.wait, track=None, result=False)

    def _submit(
        self,
        circuits: Any,
        args: argparse.Namespace,
        *,
        wait: bool,
        track: str | None,
        result: bool = True,
    ) -> Any:
        client = self.client()
        backend = (args.backend or self.session.backend).strip()
        options = {
            "backend": backend,
            "shots": args.shots or self.session.shots,
            "name": args.name,
            "seed": args.seed,
            "credential": self._credential(args.credential, backend),
            "wait": wait,
            "wait_timeout": args.timeout,
        }
        if track is None:
            job = self._send(client, circuits, options)
        else:
            from ..tracking import track as tracked

            with (
                _quiet_when_tracking_is_off(),
                tracked(run_name=track or args.name or None, client=client),
            ):
                job = self._send(client, circuits, options)
        if not (wait and result):
            return job
        record = job.record
        finished = job.result()  # JobFailed for a job that did not complete
        print(
            f"job {record.id} {record.state.value} on {record.backend}: "
            f"{len(record.circuits) or 1} circuit(s) x {record.shots} shots"
        )
        return finished

    @staticmethod
    def _send(client: Any, circuits: Any, options: dict[str, Any]) -> Any:
        from ..errors import WaitTimeout

        try:
            return client.submit(circuits, **options)
        except WaitTimeout as exc:
            job = exc.job
            raise UsageError(
                f"{_one_line(exc)}"
                + (f" (%qmlops show {job.id} or %qmlops watch {job.id})" if job else "")
            ) from None

    def _run_python(self, cell: str) -> Any:
        """Run the cell in the notebook's namespace; its last expression's value."""
        import ast

        __tracebackhide__ = True
        shell = self.shell
        source = shell.transform_cell(cell)
        number = len(shell.history_manager.input_hist_raw) - 1  # this cell's In[n]
        filename = shell.compile.cache(source, number, raw_code=cell)
        try:
            tree = ast.parse(source, filename=filename)
        except SyntaxError as exc:
            raise UsageError(
                f"%%qmlops run: the cell is neither OpenQASM (no OPENQASM line first) nor Python "
                f"(line {exc.lineno}: {exc.msg})"
            ) from None
        if not tree.body or not isinstance(tree.body[-1], ast.Expr):
            raise UsageError(
                "%%qmlops run: the cell's last line must be an expression giving the circuit "
                "(or a list of circuits), or the cell must be OpenQASM text"
            )
        last = ast.Expression(tree.body.pop().value)
        namespace_globals, namespace = shell.user_global_ns, shell.user_ns
        exec(compile(tree, filename, "exec", dont_inherit=True), namespace_globals, namespace)
        return eval(
            compile(last, filename, "eval", dont_inherit=True), namespace_globals, namespace
        )

    def _job(self, job_id: str) -> Any:
        return self.client().get_job(job_id)  # JobNotFound -> UsageError

    def _cmd_jobs(self, args: argparse.Namespace, cell: str) -> Any:
        from ..states import JobState

        state = None
        if args.state is not None:
            state = args.state.strip().upper()
            if state not in JobState.__members__:
                known = ", ".join(JobState.__members__)
                raise UsageError(f"%qmlops jobs: unknown state {args.state!r}; one of: {known}")
        jobs = self.client().jobs(state=state, backend=args.backend, limit=args.limit)
        from . import display

        return display.JobList(jobs)

    def _cmd_show(self, args: argparse.Namespace, cell: str) -> Any:
        job = self._job(args.job)
        if args.events:
            for e in job.events():
                before = e.from_state.value if e.from_state else "-"
                after = e.to_state.value if e.to_state else ""
                note = f"  {e.message}" if e.message else ""
                print(f"{e.at:%H:%M:%S.%f}  {e.kind:<10} {before} -> {after}{note}")
        return job

    def _cmd_watch(self, args: argparse.Namespace, cell: str) -> Any:
        client = self.client()
        jobs = [client.get_job(j) for j in args.jobs] or None  # JobNotFound -> UsageError
        from . import widgets

        return widgets.JobMonitor(jobs, client=client, limit=args.limit)

    def _cmd_cancel(self, args: argparse.Namespace, cell: str) -> None:
        client = self.client()
        job = client.get_job(args.job)
        record = client.cancel(job.id)
        print(f"job {record.id}: {record.state.value}")

    def _cmd_estimate(self, args: argparse.Namespace, cell: str) -> Rich:
        circuits = self._evaluate(args.expr, "estimate")
        backend = (args.backend or self.session.backend).strip()
        shots = args.shots or self.session.shots
        est = self.client().estimate(circuits, backend=backend, shots=shots)
        header = f"{_usd(est.usd)} for {est.circuits} circuit(s) x {est.shots} shots on {backend}"
        rows = [["basis", est.basis]]
        rows += [[part, f"{value:g}"] for part, value in est.breakdown.items()]
        if est.as_of:
            rows.append(["prices", f"as of {est.as_of}; an estimate, not a quote"])
        text = "\n".join([f"estimate  {header}", *(f"{k:<9} {v}" for k, v in rows)])
        return Rich(text, html_table(["", ""], rows, caption=f"Estimate: {header}"))

    def _cmd_budget(self, args: argparse.Namespace, cell: str) -> Any:
        from ..cost.budgets import BUDGET_COLUMNS, budget_rows

        header = list(BUDGET_COLUMNS)
        rows = budget_rows(self.client().budgets())
        if not rows:
            note = (
                "no budgets (set one with: qmlops budget set --shots-per-day N --usd-per-month X)"
            )
            return Rich(note, f"<p>{escape(note)}</p>")
        return Rich(text_table(header, rows), html_table(header, rows, caption="Budgets"))

    def _creds(self, rest: str) -> Any:
        """``%qmlops creds [ALIAS] [--provider P]``: anything else may be a secret, so it is
        refused without being repeated, and the line leaves the kernel's history."""
        try:
            tokens = shlex.split(rest)
        except ValueError:
            self._refuse_secret("%qmlops creds takes only an alias and --provider")
        alias = provider = None
        i = 0
        while i < len(tokens):
            token = tokens[i]
            if token in ("-h", "--help") and len(tokens) == 1:
                print(self._parsers["creds"].format_help().rstrip())
                return None
            if token == "--provider" and i + 1 < len(tokens) and provider is None:
                provider, i = tokens[i + 1], i + 2
                continue
            if token.startswith("--provider=") and provider is None:
                provider, i = token.split("=", 1)[1], i + 1
                continue
            if not token.startswith("-") and alias is None:
                alias, i = token, i + 1
                continue
            self._refuse_secret("%qmlops creds takes only an alias and --provider")
        if alias is not None and looks_like_secret(alias):
            self._refuse_secret("that is not an alias (like ionq-main): it looks like a key")
        kwargs: dict[str, Any] = {}
        if alias is not None:
            kwargs["alias"] = alias
        if provider is not None:
            from ..vault.store import PROVIDER_ALIASES, PROVIDERS

            key = PROVIDER_ALIASES.get(provider.strip().lower(), provider.strip().lower())
            if key not in PROVIDERS:
                if looks_like_secret(provider):
                    self._refuse_secret("--provider takes a provider name")
                known = ", ".join(sorted(PROVIDERS))
                raise UsageError(f"%qmlops creds: unknown provider {provider!r}; one of: {known}")
            kwargs["provider"] = key
        from . import widgets

        try:
            return widgets.CredentialForm(client=self.client(), **kwargs)
        except Exception as exc:
            from ..errors import QmlopsError

            if isinstance(exc, QmlopsError):
                raise UsageError(_one_line(exc)) from None
            raise

    def _cmd_env(self, args: argparse.Namespace, cell: str) -> Any:
        from . import display

        return display.EnvTable()

    def _cmd_track(self, args: argparse.Namespace, cell: str) -> None:
        session = self.session
        name = args.run_name
        if name is None:
            if session.run is None:
                raise UsageError("no tracked run is open; open one with %qmlops track NAME")
            print(f"tracked run open: {_run_summary(session.run)}")
            return
        if name == "stop":
            run = session.run
            if run is None:
                raise UsageError("%qmlops track stop: no tracked run is open")
            session.run = None
            run.end("FINISHED")
            print(f"tracked run ended: {_run_summary(run)}")
            return
        if session.run is not None:
            raise UsageError(
                f"tracked run {session.run.run_name!r} is open; close it first with "
                "%qmlops track stop"
            )
        from ..tracking import track as tracked

        run = tracked(args.experiment, run_name=name, client=self.client())
        with _quiet_when_tracking_is_off():
            run.__enter__()
        session.run = run
        print(f"tracked run open: {_run_summary(run)}; close it with %qmlops track stop")

    def close(self) -> None:
        """End the run ``%qmlops track`` left open (the extension is unloaded)."""
        run, self.session.run = self.session.run, None
        if run is not None:
            run.end("FINISHED")


def _run_summary(run: Any) -> str:
    jobs = len(run.job_ids)
    where = f"experiment {run.experiment!r}" if run.enabled else "tracking is off, nothing logged"
    run_id = run.run_id if run.enabled else None
    mlflow = f", MLflow run {run_id}" if run_id else ""
    return f"{run.run_name!r} ({where}), {jobs} job(s){mlflow}"


@contextlib.contextmanager
def _quiet_when_tracking_is_off() -> Iterator[None]:
    """``track()`` warns when tracking is off; the magics say so in their own output."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="qmlops tracking is off")
        yield


def _split(text: str, prog: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"{prog}: {exc}") from None


def _one_line(exc: BaseException) -> str:
    from ..vault.redaction import redact

    return redact(" ".join(str(exc).split()))


def forget_current_input(shell: Any) -> None:
    """Replace the cell being run, in this kernel's input history (``In``, ``_iN``, IPython's
    history database), with a placeholder: a line refused because it may hold a secret must
    not stay there. In the notebook, the cell's ``%qmlops`` lines are replaced by the
    placeholder too (a ``set_next_input`` payload that JupyterLab applies to the cell), so
    saving it cannot keep the secret; its other lines stay."""
    hm = getattr(shell, "history_manager", None)
    if hm is None:
        return
    # The cell being run is the last one stored; its line number is its index in ``In``.
    number = len(hm.input_hist_raw) - 1
    if number < 1:
        return
    raw = hm.input_hist_raw[-1]
    if isinstance(raw, str) and raw != SCRUBBED:
        cleaned = "\n".join(
            SCRUBBED if line.lstrip().startswith(("%qmlops", "%%qmlops")) else line
            for line in raw.splitlines()
        )
        # A shell without payloads (a terminal) has nothing to replace.
        with contextlib.suppress(Exception):
            shell.set_next_input(cleaned, replace=True)
    for cache in (hm.input_hist_parsed, hm.input_hist_raw):
        cache[-1] = SCRUBBED
    hm._i00 = SCRUBBED
    shell.user_ns[f"_i{number}"] = SCRUBBED
    with hm.db_input_cache_lock:
        hm.db_input_cache = [
            (n, SCRUBBED, SCRUBBED) if n == number else (n, source, raw)
            for n, source, raw in hm.db_input_cache
        ]
        if hm.enabled:
            try:
                with hm.db:
                    hm.db.execute(
                        "UPDATE history SET source = ?, source_raw = ? "
                        "WHERE session = ? AND line = ?",
                        (SCRUBBED, SCRUBBED, hm.session_number, number),
                    )
            except Exception:  # a history database that cannot be written: nothing to scrub
                pass


_loaded: QmlopsMagics | None = None


def load(shell: InteractiveShell) -> None:
    """Register the magics in ``shell`` (``%load_ext qmlops_jupyter``)."""
    global _loaded
    if _loaded is not None and _loaded.shell is shell:
        return
    _loaded = QmlopsMagics(shell)
    shell.register_magics(_loaded)


def unload(shell: InteractiveShell) -> None:
    """Remove the magics (``%unload_ext qmlops_jupyter``), ending an open tracked run."""
    global _loaded
    magics, _loaded = _loaded, None
    if magics is None:
        return
    magics.close()
    table = shell.magics_manager.magics
    for kind in ("line", "cell"):
        table[kind].pop("qmlops", None)
    shell.magics_manager.registry.pop(type(magics).__name__, None)
