"""The ``memos`` command line (typer + rich): a thin skin over :class:`memos.core.MemOS`.

``app`` is the typer application, ``main`` the console-script entry point. The command
modules register themselves on ``app`` when imported here; none of them imports the
heavy parts of memos until a command runs.
"""

from __future__ import annotations

# isort: off
# Import order is the order of the panels in `memos --help`.
from memos.cli import memories, chat, activation, parametric, transfer, admin, scheduler, policy, doctor, bench, bench_chat, bench_lifecycle  # noqa: F401 - registers the commands

# isort: on
from memos.cli.app import app


def main() -> None:
    """Run the ``memos`` command line."""
    app(prog_name="memos")


__all__ = ["app", "main"]
