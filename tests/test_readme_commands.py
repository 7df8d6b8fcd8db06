"""Every ``memos …`` line of the README, run as written through the installed console script.

The README's ```bash blocks are parsed (``;`` separates commands on a line, ``#`` starts a
comment); each command runs in a subprocess, in the order the README gives them, against
a fresh home (``MEMOS_HOME``), from a folder where ``examples/`` is the repository's. So a
README edit that breaks a command fails here.

Substituted, because they cannot run literally: ``ID`` (the memory the README's own
``memos add`` made; the activation or adapter id after ``compile`` / ``consolidate``),
``/tmp/other`` (a folder of this test), and ``path/to/locomo.json`` (a tiny LoCoMo-format
file). Environment only, never the command: answers are capped at 16 tokens.

Parsed, not run, because each takes minutes on a CPU: the benchmark lines (``memos
bench …``) and ``memos parametric consolidate`` (LoRA training; over 4 minutes on two
cores), with the lines that need the adapter it makes (``parametric show/activate/
deactivate/drop ID``). The CLI's own parser checks their command path, every option and
its value; ``parametric list`` and ``retrain`` run. Everything else runs, the chats and
``activation compile`` included (tens of seconds each).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
#: the chat REPL's input: one question, then its commands
REPL_INPUT = "Where does Alice live?\n/memories\n/session new\n/exit\n"


def readme_commands() -> list[list[str]]:
    """The ``memos`` commands of the README's bash blocks, as argument lists, in order."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), re.S):
        for line in block.splitlines():
            if not line.startswith("memos "):
                continue
            command: list[str] = []
            for token in [*shlex.split(line, comments=True), ";"]:
                if token == ";":
                    if command:
                        out.append(command)
                    command = []
                else:
                    command.append(token)
    return out


def parse_only(args: list[str]) -> bool:
    """Whether a README command is only parsed (see the module docstring)."""
    return (
        args[1] == "bench"
        or args[1:3] == ["parametric", "consolidate"]
        or (args[1] == "parametric" and "ID" in args)
    )


def _cmd() -> list[str]:
    exe = Path(sys.executable).with_name("memos")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "memos.cli"]


class Tour:
    """Runs the README's commands in one fresh home, remembering the ids they made."""

    def __init__(self, tmp: Path) -> None:
        self.cwd = tmp / "work"
        self.cwd.mkdir()
        (self.cwd / "examples").symlink_to(REPO / "examples")
        self.other = tmp / "other"
        self.env = {**os.environ, "MEMOS_HOME": str(tmp / "home"), "HF_HUB_OFFLINE": "1",
                    "MEMOS_RUNTIME__MAX_NEW_TOKENS": "16", "COLUMNS": "80"}  # fmt: skip
        self.env.pop("MEMOS_USER", None)
        self.ids: dict[str, str] = {}

    def run(self, args: list[str], stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*_cmd(), *args],
            cwd=self.cwd,
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=300,
        )

    def json(self, *args: str) -> Any:
        proc = self.run(["--json", *args])
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def substitute(self, args: list[str]) -> list[str]:
        kind = "activation" if args[1] == "activation" else "memory"
        out = []
        for a in args:
            if a == "ID":
                a = self.ids[kind]
            elif a == "/tmp/other":
                a = str(self.other)
            out.append(a)
        return out

    def after(self, args: list[str]) -> None:
        """Note the ids a command made, for the ``ID`` of the lines after it."""
        if args[1:2] == ["add"]:
            items = self.json("list", "--type", "fact")["items"]
            self.ids["memory"] = next(m["id"] for m in items if m["text"] == args[2])
        elif args[1:3] == ["activation", "compile"]:
            self.ids["activation"] = self.json("activation", "list")[0]["id"]


def dry_parse(args: list[str]) -> None:
    """Parse a command line with the CLI's own parser, running nothing."""
    from typer.main import get_command

    from memos.cli import app

    command: Any = get_command(app)
    rest = args[1:]
    while hasattr(command, "commands") and rest and rest[0] in command.commands:
        command, rest = command.commands[rest[0]], rest[1:]
    assert not hasattr(command, "commands"), f"{shlex.join(args)}: no such command"
    command.make_context(shlex.join(args[: -len(rest)] if rest else args), list(rest))


def test_readme_lists_the_cli_tour() -> None:
    commands = readme_commands()
    assert len(commands) > 40
    assert ["memos", "init"] in commands and ["memos", "stats"] in commands
    dry_parse(["memos", "bench", "scale", "--n", "1000"])
    with pytest.raises(Exception, match="bogus"):  # what parse-only lines are checked for
        dry_parse(["memos", "bench", "scale", "--bogus", "1"])
    with pytest.raises(AssertionError, match="no such command"):
        dry_parse(["memos", "parametric"])


def test_every_readme_command_runs(tmp_path: Path) -> None:
    tour = Tour(tmp_path)
    locomo = tmp_path / "locomo.json"
    locomo.write_text("[]", encoding="utf-8")
    failures: list[str] = []
    crashed: list[str] = []
    for args in readme_commands():
        line = shlex.join(args)
        if parse_only(args):
            dry_parse([locomo.as_posix() if a == "path/to/locomo.json" else a for a in args])
            continue
        if "--runtime" in args and args[args.index("--runtime") + 1] == "llama_cpp":
            pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
        interactive = args[1:] == ["chat"]
        try:
            run = tour.substitute(args)
        except KeyError as exc:
            failures.append(f"{line}\n  not run: no {exc} id (the command that makes one failed)")
            continue
        started = time.monotonic()
        proc = tour.run(run[1:], stdin=REPL_INPUT if interactive else "y\n")
        print(f"{time.monotonic() - started:6.1f} s  {line}")  # shown with -s or on failure
        if proc.returncode < 0 and "llama_cpp" in args:
            # a crash inside llama-cpp-python's native code, not a failure of memos: its
            # build for this machine dies in llama_decode (SIGSEGV) even without memos
            crashed.append(f"{line} (killed by signal {-proc.returncode})")
            continue
        if proc.returncode != 0 or "Traceback" in proc.stderr:
            failures.append(f"{line}\n  exit {proc.returncode}: {proc.stderr.strip()[-600:]}")
            continue
        # transformers' deprecation notices used to clutter every chat (issue 19)
        if "FutureWarning" in proc.stderr or "deprecated" in proc.stderr:
            failures.append(f"{line}\n  warns: {proc.stderr.strip()[-600:]}")
        if interactive and not (proc.stdout.strip() and "bye" in proc.stderr):
            failures.append(f"{line}\n  no answer: {proc.stdout!r} {proc.stderr[-300:]!r}")
        tour.after(args)
    assert not failures, "README commands that fail:\n" + "\n".join(failures)
    if crashed:
        pytest.xfail("llama-cpp-python crashed on this machine: " + "; ".join(crashed))
