"""The ``memos`` command line, end to end on a real home (SQLite + Qdrant Edge + MiniLM).

Most runs go through typer's ``CliRunner`` in-process (stdout and stderr apart); a few go
through the installed console script in a subprocess, to prove the entry point works. Each
invocation opens the home afresh, as a user's shell would, so the number of invocations is
kept small.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from memos.cli import app

slow = pytest.mark.slow  # these open a real home (and load the embedder)

RUNNER = CliRunner()


def cli(home: Path, *args: str, input: str | None = None, user: str | None = None) -> Result:
    """Run ``memos ARGS`` in-process against ``home``."""
    env = {"MEMOS_HOME": str(home), "HF_HUB_OFFLINE": "1", "MEMOS_USER": user}
    return RUNNER.invoke(app, list(args), input=input, env=env)


def ok(result: Result) -> Result:
    assert result.exit_code == 0, f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result


def cli_json(home: Path, *args: str, **kw: Any) -> Any:
    """Run ``memos --json ARGS`` and parse stdout, which must be JSON and nothing else."""
    return json.loads(ok(cli(home, "--json", *args, **kw)).stdout)


def script(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed ``memos`` console script in a subprocess."""
    exe = Path(sys.executable).with_name("memos")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "memos.cli"]
    env = {**os.environ, "MEMOS_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    env.pop("MEMOS_USER", None)
    return subprocess.run([*cmd, *args], env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home set up by the real console script: `memos init`."""
    path = tmp_path_factory.mktemp("home")
    proc = script(path, "--json", "init")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["user_created"] and data["cube_created"] and data["config_written"]
    assert data["cube"]["name"] == "default"
    assert (path / "config.toml").is_file()
    return path


# ---------------------------------------------------------------------------- no home needed
def test_import_is_cheap() -> None:
    code = (
        "import sys, memos.cli; heavy = {'torch', 'transformers', 'sentence_transformers', 'sqlalchemy',"
        " 'qdrant_edge', 'qdrant_client', 'memos.core'} & set(sys.modules); print(sorted(heavy))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


def test_help_and_usage_errors(tmp_path: Path) -> None:
    result = ok(cli(tmp_path, "--help"))
    for command in ("init", "add", "search", "import-chat", "export", "import", "purge", "cube", "stats"):
        assert command in result.stdout
    missing = cli(tmp_path, "search")
    assert missing.exit_code == 2
    bad_type = cli(tmp_path, "add", "x", "--type", "bogus")
    assert bad_type.exit_code == 2
    assert "Traceback" not in bad_type.output


def test_config_template_lists_the_defaults() -> None:
    from memos.cli.admin import config_template
    from memos.config import Settings

    text = config_template()
    assert tomllib.loads(text) == {}  # all commented out: the defaults apply
    settings = [
        line[2:]
        for line in text.splitlines()
        if re.match(r"^# (\w+ = |\[(search|runtime|chat|parametric|scheduler)\]$)", line)
        and "(not set)" not in line
    ]
    values = tomllib.loads("\n".join(settings))
    defaults = Settings(home=Path("/tmp")).model_dump(mode="json")
    assert values["search"] == defaults["search"]
    assert len(values) > 5
    tables = ("runtime", "chat", "parametric", "scheduler")
    for table in tables:  # settings that are not set by default are left out
        assert values[table] == {k: v for k, v in defaults[table].items() if v is not None}, table
    for key, value in values.items():
        if key not in tables:
            assert value == defaults[key], key


def test_config_show(tmp_path: Path) -> None:
    data = cli_json(tmp_path, "config", "show")
    assert data["home"] == str(tmp_path.resolve())
    assert data["relational_url"].startswith("sqlite:///")
    assert "search" in data
    assert "rrf_k" in ok(cli(tmp_path, "config", "show")).stdout


def test_bad_input_fails_before_opening_the_home(tmp_path: Path) -> None:
    log = tmp_path / "bad.json"
    log.write_text('{"not": "a chat log"}', encoding="utf-8")
    result = cli(tmp_path, "import-chat", str(log))
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and "Traceback" not in result.output
    # confirmation refused: nothing happens, status 1
    refused = cli(tmp_path, "purge", "some-id", input="n\n")
    assert refused.exit_code == 1
    assert not (tmp_path / "memos.db").exists()


def test_unexpected_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(state: object) -> None:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr("memos.cli.admin.settings_for", broken)
    plain = cli(tmp_path, "config", "show")
    assert plain.exit_code == 1
    assert plain.stderr.strip().splitlines() == [
        "error: unexpected ZeroDivisionError: boom (run with --debug for the traceback)"
    ]
    debug = cli(tmp_path, "--debug", "config", "show")
    assert debug.exit_code == 1 and "Traceback" in debug.stderr and "ZeroDivisionError" in debug.stderr


def test_a_missing_home_is_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "typo"
    result = cli(missing, "list")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: there is no memos home") and "memos init" in result.stderr
    assert not missing.exists()


# ---------------------------------------------------------------------------- memories
@slow
def test_add_and_search(home: Path) -> None:
    added = cli_json(
        home,
        "add",
        "Alice's favourite tea is jasmine",
        "--tag",
        "drinks",
        "--meta",
        "source=chat",
        "--meta",
        "n=3",
    )
    memory = added["memories"][0]
    assert memory["type"] == "fact"
    assert memory["tags"] == ["drinks"]
    assert memory["metadata"] == {"source": "chat", "n": 3}
    said = cli_json(
        home, "add", "-", "--role", "user", "--name", "Alice", "--session", "s0", input="I moved to Porto."
    )
    assert said["memories"][0]["type"] == "episode"
    assert said["memories"][0]["provenance"]["speaker"] == "Alice"

    hits = cli_json(home, "search", "favourite jasmine tea", "--cube", "default", "--top-k", "3")
    assert hits[0]["memory"]["id"] == memory["id"]
    assert hits[0]["why"] and hits[0]["scores"]

    table = ok(cli(home, "search", "Porto", "--filter", "type=episode", "--filter", "speaker=Alice")).stdout
    assert "Porto" in table and "s0" in table and "jasmine" not in table


@slow
def test_memory_lifecycle(home: Path) -> None:
    mid = cli_json(home, "add", "Bob's badge number is 4411")["memories"][0]["id"]
    shown = ok(cli(home, "show", mid)).stdout
    assert "4411" in shown and mid in shown

    updated = cli_json(
        home,
        "update",
        mid,
        "--text",
        "Bob's badge number is 5522",
        "--importance",
        "0.9",
        "--reason",
        "new badge",
    )
    assert updated["version"] == 2 and updated["importance"] == 0.9
    hist = cli_json(home, "history", mid)
    assert [v["version"] for v in hist["versions"]] == [1, 2]
    assert hist["versions"][0]["text"].endswith("4411")
    assert [e["action"] for e in hist["events"]] == ["add", "update"]
    assert hist["events"][1]["reason"] == "new badge"

    assert cli_json(home, "delete", mid, "--reason", "test")["state"] == "deleted"
    page = cli_json(home, "list", "--state", "deleted")
    assert [m["id"] for m in page["items"]] == [mid]
    assert cli_json(home, "restore", mid)["state"] == "active"
    listed = ok(cli(home, "list", "--type", "fact", "--limit", "50")).stdout
    assert mid in listed

    assert cli_json(home, "purge", mid, "--yes", "--reason", "test")["purged"] == [mid]
    gone = cli(home, "show", mid)
    assert gone.exit_code == 1
    lines = gone.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and mid in lines[0]
    assert "Traceback" not in gone.output

    debug = cli(home, "--debug", "show", mid)
    assert debug.exit_code == 1
    assert "Traceback" in debug.stderr and "NotFound" in debug.stderr


# ---------------------------------------------------------------------------- users and cubes
@slow
def test_users_and_sharing(home: Path) -> None:
    assert cli_json(home, "user", "add", "bob", "--name", "Bob")["name"] == "Bob"
    assert {u["id"] for u in cli_json(home, "user", "list")} == {"default", "bob"}
    cube = cli_json(home, "cube", "create", "work", "--description", "team notes")
    assert cube["role"] == "owner"

    share = cli_json(home, "cube", "share", "work", "bob", "--role", "writer")
    assert share["role"] == "writer"
    bobs = cli_json(home, "cube", "list", user="bob")
    assert [(c["id"], c["role"]) for c in bobs] == [(cube["id"], "writer")]

    ok(cli(home, "cube", "unshare", cube["id"], "bob"))
    listing = ok(cli(home, "cube", "list")).stdout
    assert "work" in listing and "default" in listing

    refused = cli(home, "cube", "delete", "work", user="bob")
    assert refused.exit_code == 1 and refused.stderr.startswith("error: ")
    assert cli_json(home, "cube", "delete", "work", "--yes")["deleted"] is True


# ---------------------------------------------------------------------------- import and export
@slow
def test_import_chat_jsonl(home: Path, tmp_path: Path) -> None:
    log = tmp_path / "chat.jsonl"
    lines = [
        {
            "role": "user",
            "name": "Dana",
            "content": "I started learning the cello in March.",
            "id": "m1",
            "timestamp": "2024-03-02T10:00:00Z",
        },
        {
            "role": "assistant",
            "content": "That's wonderful, how are the lessons going?",
            "id": "m2",
            "timestamp": "2024-03-02T10:00:05Z",
        },
        {
            "role": "user",
            "name": "Dana",
            "content": "My teacher is called Mr. Okafor.",
            "id": "m3",
            "timestamp": "2024-03-02T10:01:00Z",
        },
    ]
    log.write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    ok(cli(home, "cube", "create", "chats"))
    first = cli_json(
        home, "import-chat", str(log), "--cube", "chats", "--session", "lesson", "--batch-size", "2"
    )
    assert (first["messages"], first["added"], first["skipped"]) == (3, 3, 0)
    again = cli_json(home, "import-chat", str(log), "--cube", "chats")
    assert (again["added"], again["skipped"]) == (0, 3)  # message ids make a re-import a no-op

    page = cli_json(home, "list", "--cube", "chats", "--type", "episode")
    assert page["total"] == 3
    assert {m["provenance"]["session_id"] for m in page["items"]} == {"lesson"}


def test_import_chat_with_deferred_extraction_then_extract(home: Path, tmp_path: Path) -> None:
    """A bulk import stores and indexes at once and queues extraction; `memos extract` runs it."""
    log = tmp_path / "bulk.jsonl"
    lines = [
        {"role": "user", "name": "Erin", "content": "My brother Tomas lives in Porto.", "id": "b1"},
        {"role": "assistant", "content": "Porto is lovely in spring.", "id": "b2"},
    ]
    log.write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    ok(cli(home, "cube", "create", "bulk"))
    summary = cli_json(home, "import-chat", str(log), "--cube", "bulk", "--defer-extraction")
    assert (summary["added"], summary["derived"]) == (2, 0)
    assert cli_json(home, "stats")["extraction_pending"] == 2
    assert cli_json(home, "list", "--cube", "bulk", "--type", "fact")["total"] == 0
    done = cli_json(home, "extract", "--cube", "bulk")
    assert (done["extracted"], done["pending"]) == (2, 0)
    facts = cli_json(home, "list", "--cube", "bulk", "--type", "fact")["items"]
    assert any("Porto" in f["text"] for f in facts)
    assert cli_json(home, "extract")["extracted"] == 0  # nothing left: a no-op
    bad = cli(home, "extract", "--cube", "no-such-cube")
    assert bad.exit_code != 0 and "no-such-cube" in bad.output


@slow
def test_import_chat_sessions(home: Path, tmp_path: Path) -> None:
    log = tmp_path / "conversation.json"
    data = {
        "sessions": [
            {
                "id": "s1",
                "date": "2023-05-08T13:56:00Z",
                "messages": [
                    {
                        "role": "user",
                        "name": "Alice",
                        "content": "We adopted a beagle named Biscuit.",
                        "id": "s1-1",
                    },
                    {"role": "assistant", "content": "Biscuit is a lovely name!", "id": "s1-2"},
                ],
            },
            {
                "id": "s2",
                "date": "2023-06-20T09:00:00Z",
                "messages": [
                    {
                        "role": "user",
                        "name": "Alice",
                        "content": "My sister Carol moved to Lisbon.",
                        "id": "s2-1",
                    }
                ],
            },
        ]
    }
    log.write_text(json.dumps(data), encoding="utf-8")
    ok(cli(home, "cube", "create", "sessions"))
    summary = cli_json(home, "import-chat", str(log), "--cube", "sessions")
    assert (summary["sessions"], summary["messages"], summary["added"]) == (2, 3, 3)

    hits = cli_json(
        home,
        "search",
        "Alice's dog",
        "--cube",
        "sessions",
        "--filter",
        "type=episode",
        "--until",
        "2023-05-31",
    )
    assert hits, "expected the beagle message"
    top = hits[0]["memory"]
    assert top["provenance"]["session_id"] == "s1" and top["provenance"]["message_id"] == "s1-1"
    assert top["provenance"]["timestamp"].startswith("2023-05-08")
    assert all(h["memory"]["provenance"]["session_id"] == "s1" for h in hits)


@slow
def test_export_import_and_stats(home: Path, tmp_path: Path) -> None:
    archive = tmp_path / "default.memcube"
    exported = cli_json(home, "export", "default", str(archive))
    assert archive.is_file() and exported["bytes"] > 0

    other = tmp_path / "other"
    proc = script(other, "init")
    assert proc.returncode == 0, proc.stderr
    imported = cli_json(other, "import", str(archive), "--name", "restored", "--cube-id", "restored-1")
    assert (imported["id"], imported["name"]) == ("restored-1", "restored")
    page = cli_json(other, "list", "--cube", "restored", "--limit", "100")
    source = cli_json(home, "list", "--limit", "100")
    assert {m["text"] for m in page["items"]} == {m["text"] for m in source["items"]}

    stats = cli_json(other, "stats")
    assert stats["cubes"] == 2 and stats["memories"] >= page["total"]
    assert stats["index_pending"] == 0 and stats["index_points"] >= page["total"]


# ---------------------------------------------------------------------------- issue 19
@slow
def test_import_chat_checks_the_whole_file_before_writing(home: Path, tmp_path: Path) -> None:
    """A bad message late in a file stores nothing, and is named by its place in the file
    (it used to commit the batches before it and name its index within its batch)."""
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": f"note number {i} about the garden", "id": f"g{i}"} for i in range(250)
    ]
    del messages[180]["content"]
    log = tmp_path / "bad.json"
    log.write_text(json.dumps(messages), encoding="utf-8")
    ok(cli(home, "cube", "create", "garden"))
    result = cli(home, "import-chat", str(log), "--cube", "garden")
    assert result.exit_code == 1
    assert "messages[180]" in result.stderr and "messages[80]" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert cli_json(home, "list", "--cube", "garden", "--all")["total"] == 0

    sessions = {"sessions": [{"id": "a", "messages": messages[:2]}, {"id": "b", "messages": messages[170:]}]}
    log.write_text(json.dumps(sessions), encoding="utf-8")
    result = cli(home, "import-chat", str(log), "--cube", "garden")
    assert result.exit_code == 1 and "session 2 of 2 ('b'): messages[10]" in result.stderr, result.stderr
    assert cli_json(home, "list", "--cube", "garden", "--all")["total"] == 0


@slow
def test_json_after_the_command(home: Path) -> None:
    """`memos search … --json` (as the README says) is the global `memos --json search …`."""
    ok(cli(home, "add", "Carmen keeps bees on the roof"))
    after = json.loads(ok(cli(home, "search", "bees on the roof", "--top-k", "2", "--json")).stdout)
    before = cli_json(home, "search", "bees on the roof", "--top-k", "2")
    assert [h["memory"]["id"] for h in after] == [h["memory"]["id"] for h in before]
    assert "Carmen" in after[0]["memory"]["text"]
    cubes = json.loads(ok(cli(home, "cube", "list", "--json")).stdout)
    assert "default" in {c["name"] for c in cubes}
    assert isinstance(json.loads(ok(cli(home, "stats", "--json")).stdout)["memories"], int)


READ_ONLY = [
    ["stats"],
    ["list"],
    ["search", "anything"],
    ["user", "list"],
    ["cube", "list"],
    ["show", "some-id"],
    ["history", "some-id"],
    ["export", "default", "out.memcube"],
    ["doctor"],
    ["reindex", "--check"],
    ["activation", "list"],
]


def test_read_only_commands_leave_an_empty_folder_untouched(tmp_path: Path) -> None:
    """They used to create a home (database, index, lock) in any folder they were pointed at."""
    empty = tmp_path / "empty"
    empty.mkdir()
    for args in READ_ONLY:
        result = cli(empty, *args)
        assert result.exit_code == 1, (args, result.output)
        line = result.stderr.strip()
        assert line.startswith("error: there is no memos home") and "memos init" in line, (args, line)
        assert list(empty.iterdir()) == [], (args, list(empty.iterdir()))


def _commands() -> set[str]:
    """Every command name of the CLI (subcommands as ``group name``)."""
    from typer.main import get_command

    root: Any = get_command(app)
    names = set()
    for name, command in root.commands.items():
        names.add(name)
        names.update(f"{name} {sub}" for sub in getattr(command, "commands", {}))
    return names


@slow
def test_locked_home_error_names_real_commands(tmp_path: Path, embedder: Any) -> None:
    """The lock error suggested `memos serve`, which does not exist."""
    from memos.core import MemOS

    path = tmp_path / "locked"
    with MemOS(home=path, embedder=embedder):
        proc = script(path, "stats")
        assert proc.returncode == 1
        message = proc.stderr.strip()
        assert len(message.splitlines()) == 1 and "open in another process" in message, message
        named = re.findall(r"`memos ([a-z-]+(?: [a-z-]+)?)", message)
        assert all(n in _commands() or n.split()[0] in _commands() for n in named), named
        assert "memos serve" not in message
        doctor = script(path, "--json", "doctor")
        assert doctor.returncode == 1, doctor.stderr
        report = json.loads(doctor.stdout)
        assert report["locked_by"]["pid"] == os.getpid() and not report["ok"]


def _quarantine_a_row(path: Path, embedder: Any) -> tuple[str, str]:
    """A home made with the SDK (no user "default") with one row the index cannot hold, as
    an older memos left it (tests/test_quarantine.py): an index built before payloads were
    sealed, and a NaN in the row's metadata. Returns the ids of that row and a healthy one."""
    import sqlite3

    from memos.core import MemOS

    with MemOS(home=path, embedder=embedder) as mos:
        mos.add_user("alice")
        cube = mos.create_cube("alice", "notes")
        good = mos.add(text="Alice grows tomatoes", user_id="alice", cube_id=cube.id).memories[0].id
        bad = mos.add(text="Alice owns a kayak", user_id="alice", cube_id=cube.id).memories[0].id
    db = sqlite3.connect(path / "memos.db")
    with db:
        (value,) = db.execute("SELECT value FROM meta WHERE key = 'index'").fetchone()
        meta = json.loads(value)
        meta.pop("payload_key", None)
        db.execute("UPDATE meta SET value = ? WHERE key = 'index'", (json.dumps(meta),))
        db.execute(
            "UPDATE memories SET metadata = ?, index_state = 'pending' WHERE id = ?", ('{"depth": NaN}', bad)
        )
    db.close()
    with MemOS(home=path, embedder=embedder) as mos:  # the repair on open quarantines it
        assert mos.stats()["index_quarantined"] == 1
    return bad, good


@slow
def test_reindex_and_doctor_on_an_sdk_made_home(tmp_path: Path, embedder: Any) -> None:
    """`memos reindex` without --user rebuilt nothing on a home whose users the SDK made
    (the CLI's user "default" owns no cube there); `doctor` and `reindex --check` report
    the quarantined row, change nothing, and exit 1 with a hint."""
    path = tmp_path / "sdk-home"
    bad, good = _quarantine_a_row(path, embedder)

    check = cli(path, "reindex", "--check", "--json")
    assert check.exit_code == 1, check.output
    report = json.loads(check.stdout)
    assert [q["memory_id"] for q in report["quarantined"]] == [bad]
    assert report["quarantined"][0]["error"] and report["searchable_rows"] == report["index_points"] == 1
    assert (report["missing"], report["extra"], report["ok"]) == (0, 0, False)

    doctor = RUNNER.invoke(
        app, ["doctor"], env={"MEMOS_HOME": str(path), "MEMOS_USER": None, "COLUMNS": "80"}
    )
    assert doctor.exit_code == 1
    assert bad in doctor.stdout and "memos reindex" in doctor.stdout and "quarantined" in doctor.stdout
    assert max(len(line) for line in doctor.stdout.splitlines()) <= 80
    data = json.loads(cli(path, "doctor", "--json").stdout)
    assert data["home"] == str(path.resolve()) and data["relational"] == "sqlite"
    assert data["vector_index"] and data["embedder"] and data["locked_by"] is None
    assert data["extraction"]["pending"] == 0 and len(data["problems"]) == 1
    assert cli_json(path, "stats", "--all")["index_quarantined"] == 1  # the checks changed nothing

    rebuilt = cli_json(path, "reindex")
    assert rebuilt["reindexed"] >= 1  # was 0: the acting user "default" has no cube here
    hits = cli_json(path, "search", "tomatoes", user="alice")
    assert hits[0]["memory"]["id"] == good
    assert cli_json(path, "reindex", user="nobody")["reindexed"] == 0  # a named user: their cubes


def _words(text: str) -> set[str]:
    return set(re.findall(r"[A-Za-z]{3,}", text))


@slow
def test_tables_are_readable_at_80_columns(home: Path) -> None:
    """Every word and id shown whole at COLUMNS=80; tables used to wrap letter by letter."""
    env = {"MEMOS_HOME": str(home), "HF_HUB_OFFLINE": "1", "MEMOS_USER": None, "COLUMNS": "80"}

    def at80(*args: str) -> str:
        out = ok(RUNNER.invoke(app, list(args), env=env)).stdout
        assert max(len(line) for line in out.splitlines()) <= 80
        return out

    text = "Ingrid's daughter practises the clarinet every Wednesday afternoon at the conservatory"
    mid = cli_json(home, "add", text, "--tag", "family", "--tag", "music")["memories"][0]["id"]
    ok(
        cli(
            home,
            "update",
            mid,
            "--text",
            text + " downtown",
            "--reason",
            "moved to the downtown conservatory",
        )
    )
    hits = cli_json(home, "search", "clarinet conservatory", "--top-k", "3")
    expected_words = _words(text) | {w for h in hits for w in _words(" ".join(h["why"]))}
    outputs = {
        "search": at80("search", "clarinet conservatory", "--top-k", "3"),
        "list": at80("list", "--limit", "5"),
        "history": at80("history", mid),
        "show": at80("show", mid),
        "cube list": at80("cube", "list"),
        "user list": at80("user", "list"),
        "stats": at80("stats"),
    }
    for name, out in outputs.items():
        shown = _words(out)
        if name in ("search", "history", "show"):
            assert _words(text) <= shown, (name, _words(text) - shown, out)
        if name == "search":
            assert expected_words <= shown, (expected_words - shown, out)
        ids = re.findall(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", out)
        if name in ("search", "list", "history", "show", "cube list"):
            assert ids, (name, out)  # ids stay whole, on one line, to be copied
    assert mid in outputs["search"] and mid in outputs["history"]


def test_only_the_cache_rename_notices_are_silenced(caplog: pytest.LogCaptureFixture) -> None:
    """transformers 5 warned on every forward call of every chat (issue 19); the filter the
    runtime installs drops those two notices and nothing else."""
    import logging
    import warnings

    from memos.adapters.runtimes.hf import _quiet_cache_rename

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        _quiet_cache_rename()
        warnings.warn(
            "`past_key_values` is deprecated and will be removed in version 5.40.0 for "
            "`LlamaForCausalLM.forward`. Use `cache` instead.",
            FutureWarning,
            stacklevel=1,
        )
        warnings.warn(
            "`is_gradient_checkpointing` is deprecated and will be removed in v6.",
            FutureWarning,
            stacklevel=1,
        )
        warnings.warn("something else will change", FutureWarning, stacklevel=1)
        warnings.warn("memos: our own warning", UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["something else will change", "memos: our own warning"]

    logger = logging.getLogger("transformers.utils.generic")
    with caplog.at_level(logging.WARNING, logger="transformers.utils.generic"):
        logger.warning("`past_key_values`/`cache_params` are deprecated. Use `cache` instead.")
        logger.warning("another transformers warning")
    assert [r.getMessage() for r in caplog.records] == ["another transformers warning"]
