"""The root of the ``memos`` command line: global options, error handling, shared helpers.

The CLI is a thin skin over the Python SDK: every command opens a :class:`memos.core.MemOS`,
calls the public method a user of the library would call, and renders the result (a rich
table, or JSON with ``--json``). Nothing heavy is imported here; ``MemOS`` is built lazily
inside the commands, so ``memos --help`` is instant.

Errors: a :class:`memos.errors.MemosError` becomes one line on stderr (``error: …``) and
exit status 1; anything else also becomes one line, with a hint to rerun with ``--debug``,
which prints the traceback.

``--json`` is a global option (``memos --json search …``) and, the same flag, an option of
every command (``memos search … --json``), added by :class:`_MemosGroup` to each command
that has no ``--json`` of its own (the benchmarks' ``--json PATH`` writes a file).
"""

from __future__ import annotations

import copy
import json
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

from memos.errors import InvalidInput, MemosError, NotFound

if TYPE_CHECKING:
    from rich.console import Console

    from memos.config import Settings
    from memos.core import MemOS

DEFAULT_USER = "default"
DEFAULT_CUBE = "default"

#: width of tables written to a pipe or file
PIPE_WIDTH = 200

PANEL_MEMORIES = "Memories"
PANEL_TRANSFER = "Import and export"
PANEL_ADMIN = "Home, users and cubes"


@dataclass(frozen=True, slots=True)
class State:
    """Global options, resolved once by the root callback and handed to every command."""

    home: Path | None
    user: str
    json: bool
    debug: bool
    #: whether the user was named (``--user``/``MEMOS_USER``) rather than the default
    user_given: bool = False


JSON_HELP = "Print machine-readable JSON on stdout (messages go to stderr)."


def _json_flag(ctx: Any, _param: Any, value: bool) -> None:
    """``--json`` after a command name: the same as the global ``memos --json``."""
    state = ctx.find_object(State)
    if value and state is not None:
        ctx.obj = replace(state, json=True)


def _add_json_option(group: Any, option: Any) -> None:
    """Give each command under ``group`` a copy of the global ``--json`` flag."""
    for command in group.commands.values():
        if hasattr(command, "commands"):
            _add_json_option(command, option)
        elif not any("--json" in p.opts for p in command.params):
            flag = copy.copy(option)
            flag.callback, flag.expose_value = _json_flag, False
            command.params.append(flag)


class _MemosGroup(TyperGroup):
    """The root command group: turns exceptions raised by commands into one-line errors,
    and gives every command the ``--json`` flag."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _add_json_option(self, next(p for p in self.params if "--json" in p.opts))

    def invoke(self, ctx: Any) -> Any:  # a typer Context; the base class names typer's private one
        try:
            return super().invoke(ctx)
        except (TyperException, typer.Exit, typer.Abort):  # usage errors, exits, "no" to a prompt
            raise
        except MemosError as exc:
            _fail(ctx, exc, str(exc))
        except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence
            _fail(ctx, exc, f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)")


def _fail(ctx: Any, exc: BaseException, message: str) -> NoReturn:
    obj = ctx.find_object(State)
    if obj is not None and obj.debug:
        traceback.print_exception(exc, file=sys.stderr)
    line = " ".join(message.split()) or type(exc).__name__
    typer.echo(f"{typer.style('error:', fg='red', bold=True)} {line}", err=True)
    raise typer.Exit(1)


app = typer.Typer(
    name="memos",
    cls=_MemosGroup,
    help="memos — a memory OS for LLM apps: remember, search and manage memories in MemCubes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from memos import __version__

        typer.echo(f"memos {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    home: Annotated[
        Path | None,
        typer.Option(
            "--home",
            envvar="MEMOS_HOME",
            help="The memos home (database, index, config.toml). Default: ~/.memos.",
            show_default=False,
        ),
    ] = None,
    user: Annotated[
        str,
        typer.Option("--user", "-u", envvar="MEMOS_USER", help="The user acting."),
    ] = DEFAULT_USER,
    json_output: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an error.")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """memos — a memory OS for LLM apps.

    Start with `memos init`, then `memos add "…"` and `memos search "…"`.
    """
    ctx.obj = State(
        home=home.expanduser() if home else None,
        user=user,
        json=json_output,
        debug=debug,
        user_given=getattr(ctx.get_parameter_source("user"), "name", "DEFAULT") != "DEFAULT",
    )


# ---------------------------------------------------------------------------- helpers
def get_state(ctx: typer.Context) -> State:
    """The global options of this invocation."""
    obj = ctx.find_object(State)
    return obj if obj is not None else State(home=None, user=DEFAULT_USER, json=False, debug=False)


def settings_for(state: State) -> Settings:
    """Resolve the configuration of the home (arguments > MEMOS_* env > config.toml > defaults)."""
    from memos.config import load_settings

    return load_settings(state.home)


def home_exists(settings: Settings) -> bool:
    """Whether the configured home was created (by ``memos init`` or the SDK).

    With the default SQLite store that is its database file: an empty or unrelated folder
    is not a home. With a database server the folder only holds ``config.toml`` (or
    nothing), so the folder is enough.
    """
    if not settings.home.is_dir():
        return False
    db = settings.sqlite_path
    return db is None or db.is_file()


@contextmanager
def open_memos(state: State, settings: Settings | None = None, *, create: bool = False) -> Iterator[MemOS]:
    """Open the home for one command and always close it, releasing the home lock.

    A home that does not exist yet is an error unless ``create`` (``memos init`` creates
    it), so that a mistyped ``--home`` does not quietly create an empty one, nor leave a
    database in an empty folder.
    """
    from memos.core import MemOS

    settings = settings or settings_for(state)
    if not create and not home_exists(settings):
        raise NotFound(
            f"there is no memos home at {settings.home}; run `memos init` to create one there, "
            "or point --home / MEMOS_HOME at an existing home"
        )
    mos = MemOS(settings=settings)
    try:
        yield mos
    finally:
        mos.close()


def default_cube(mos: MemOS, user_id: str) -> str:
    """The id of the cube named "default" that ``user_id`` owns."""
    for cube in mos.list_cubes(user_id):
        if cube.owner_id == user_id and cube.name == DEFAULT_CUBE:
            return cube.id
    raise NotFound(f"user {user_id!r} has no cube named {DEFAULT_CUBE!r}; run `memos init` or pass --cube")


def resolve_cube(mos: MemOS, user_id: str, ref: str | None) -> str:
    """A cube id from ``--cube`` (an id or a name), or the user's default cube."""
    return mos.resolve_cube(user_id, ref) if ref else default_cube(mos, user_id)


def cubes_option(default: str) -> Any:
    """The repeatable ``--cube``/``-c`` option; ``default`` says what giving none means."""
    return typer.Option(
        "--cube", "-c", help=f"Cube id or name (repeatable). Default: {default}.", show_default=False
    )


def parse_pairs(
    pairs: Sequence[str] | None, option: str, *, json_values: bool | Callable[[str], bool]
) -> dict[str, Any]:
    """``key=value`` options into a dict; a key given twice collects its values in a list.

    With ``json_values`` a value that parses as JSON (``3``, ``true``, ``["a"]``) is taken
    as such, anything else as a string. It may be a predicate on the key.
    """
    out: dict[str, Any] = {}
    for pair in pairs or ():
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InvalidInput(f"{option} takes key=value, got {pair!r}")
        value: Any = raw
        use_json = json_values(key) if callable(json_values) else json_values
        if use_json:
            try:
                value = json.loads(raw)
            except ValueError:
                value = raw
        if key in out:
            prev = out[key]
            out[key] = [*prev, value] if isinstance(prev, list) else [prev, value]
        else:
            out[key] = value
    return out


def stdout_console() -> Console:
    """The console for results. Piped output is not wrapped at 80 columns (rich's default)."""
    from rich.console import Console

    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = PIPE_WIDTH
    return console


def stderr_console() -> Console:
    from rich.console import Console

    return Console(stderr=True)


def emit(state: State, data: Any, render: Callable[[Console], None]) -> None:
    """Print ``data`` as JSON with ``--json``, else let ``render`` draw it for a person."""
    if state.json:
        from pydantic_core import to_jsonable_python

        typer.echo(json.dumps(to_jsonable_python(data), indent=2, ensure_ascii=False))
    else:
        render(stdout_console())


def note(message: str) -> None:
    """A message for a person, on stderr (so it never mixes with ``--json`` output)."""
    stderr_console().print(message)


def confirm(question: str, *, yes: bool) -> None:
    """Ask before something irreversible, unless ``--yes``; on "no", stop with status 1."""
    if not yes:
        typer.confirm(question, abort=True, err=True)
