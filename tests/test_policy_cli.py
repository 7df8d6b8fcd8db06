"""``memos policy show|set|unset|plan|apply``, ``memos archive``, ``memos search
--include-archived`` and ``memos list --state``: as text and as JSON; errors as one line.

The home's memories are written through the SDK on a clock two years back, so the
commands (on the real clock) find them old enough for the rules the test sets."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from memos.cli import app

RUNNER = CliRunner()


def cli(home: Path, *args: str, user: str | None = "alice") -> Result:
    env = {"MEMOS_HOME": str(home), "HF_HUB_OFFLINE": "1", "MEMOS_USER": user}
    return RUNNER.invoke(app, list(args), env=env)


def ok(result: Result) -> Result:
    assert result.exit_code == 0, f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result


def cli_json(home: Path, *args: str, user: str | None = "alice") -> Any:
    return json.loads(ok(cli(home, "--json", *args, user=user)).stdout)


def one_line_error(result: Result, text: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error:") and text in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


@pytest.fixture
def home(tmp_path: Path, embedder: Any) -> tuple[Path, dict[str, str]]:
    """alice's cube 'personal' with an episode tagged tmp, a fact and an episode, all two years old."""
    from memos.core import MemOS

    path = tmp_path / "home"
    with MemOS(home=path, embedder=embedder, clock=lambda: datetime(2024, 1, 1, tzinfo=UTC)) as mos:
        mos.add_user("alice")
        mos.add_user("bob")
        cube = mos.create_cube("alice", "personal").id

        def add(text: str, **kw: Any) -> str:
            return str(mos.add(text=text, user_id="alice", cube_id=cube, extract=False, **kw).memories[0].id)

        ids = {
            "cube": cube,
            "tmp": add("the door code this week is 2468", type="episode", tags=["tmp"]),
            "fact": add("Alice's sister is called Mia", type="fact"),
            "chat": add("we talked about the harbour", type="episode"),
        }
    return path, ids


def test_show_set_unset(home: tuple[Path, dict[str, str]]) -> None:
    path, ids = home
    defaults = cli_json(path, "policy", "show")
    assert defaults["cube_id"] is None
    assert (
        defaults["settings"]["ttl"]["types"] == {} and defaults["settings"]["capacity"]["max_active"] is None
    )
    assert defaults["settings"]["heat"]["half_life"] == "180d"
    text = ok(cli(path, "policy", "show")).stdout
    assert "ttl" in text and 'half_life = "180d"' in text

    done = cli_json(path, "policy", "set", "personal", "ttl.tags.tmp=7d", "capacity.max_active=2")
    assert (
        done["settings"]["ttl"]["tags"] == {"tmp": "7d"} and done["settings"]["capacity"]["max_active"] == 2
    )
    shown = cli_json(path, "policy", "show", "--cube", "personal")
    assert shown["cube_id"] == ids["cube"]
    assert shown["overrides"] == {"ttl": {"tags": {"tmp": "7d"}}, "capacity": {"max_active": 2}}
    assert "(overridden here)" in ok(cli(path, "policy", "show", "--cube", "personal")).stdout
    assert "unset capacity" in ok(cli(path, "policy", "unset", "personal", "capacity")).stdout
    assert cli_json(path, "policy", "show", "--cube", "personal")["overrides"] == {
        "ttl": {"tags": {"tmp": "7d"}}
    }


def test_bad_settings_are_one_line_errors(home: tuple[Path, dict[str, str]]) -> None:
    path, _ = home
    one_line_error(cli(path, "policy", "set", "personal", "ttl.grace=soon"), "'grace' of the ttl policy")
    one_line_error(
        cli(path, "policy", "set", "personal", "decay.nope=1"), "'nope' is not a setting of the decay"
    )
    one_line_error(cli(path, "policy", "set", "personal", "ttl.grace"), "key=value")
    one_line_error(cli(path, "policy", "unset", "personal", "ttl.grace"), "no override ttl.grace is set")
    # several at once: all or none
    one_line_error(
        cli(path, "policy", "set", "personal", "ttl.grace=2d", "decay.after=x"), "'after' of the decay"
    )
    assert cli_json(path, "policy", "show", "--cube", "personal")["overrides"] == {}
    one_line_error(cli(path, "policy", "set", ids_cube(path), "decay.after=1d", user="bob"), "no access")


def ids_cube(path: Path) -> str:
    return str(cli_json(path, "cube", "list")[0]["id"])


def test_plan_then_apply(home: tuple[Path, dict[str, str]]) -> None:
    path, ids = home
    ok(cli(path, "policy", "set", "personal", "ttl.tags.tmp=30d", "capacity.max_active=1"))
    plan = cli_json(path, "policy", "plan")
    assert plan["applied"] is False and plan["counts"] == {"failed": 0, "expire": 1, "archive": 1}
    (cube,) = plan["cubes"]
    by_policy = {p["policy"]: p for p in cube["policies"]}
    assert [a["memory_id"] for a in by_policy["ttl"]["actions"]] == [ids["tmp"]]
    assert [a["action"] for a in by_policy["capacity"]["actions"]] == ["archive"]
    archived = by_policy["capacity"]["actions"][0]["memory_id"]
    assert archived == ids["chat"]  # an episode is colder than a fact (type weight)
    text = ok(cli(path, "policy", "plan", "--cube", "personal")).stdout
    assert "would do" in text and "expire" in text and "tag 'tmp'" in text and "heat: nothing to do" in text
    assert (
        cli_json(path, "list", "-c", "personal", "--state", "expired")["total"] == 0
    )  # a plan changes nothing

    applied = cli_json(path, "policy", "apply")
    assert (
        applied["applied"] is True
        and applied["cubes"] == plan["cubes"]
        and applied["counts"] == plan["counts"]
    )
    expired = cli_json(path, "list", "-c", "personal", "--state", "expired")
    assert [m["id"] for m in expired["items"]] == [ids["tmp"]]
    assert [m["id"] for m in cli_json(path, "list", "-c", "personal", "--state", "archived")["items"]] == [
        archived
    ]
    assert "nothing to do" in ok(cli(path, "policy", "apply")).stdout  # applied twice: nothing more


def test_queue_apply_as_jobs(home: tuple[Path, dict[str, str]]) -> None:
    path, ids = home
    ok(cli(path, "policy", "set", "personal", "ttl.tags.tmp=1d"))
    jobs = cli_json(path, "policy", "apply", "--queue")
    assert [(j["kind"], j["cube_id"]) for j in jobs] == [("policy.apply", ids["cube"])]
    assert cli_json(path, "scheduler", "run", "--until-idle", user=None) == {"jobs_run": 1}
    assert [m["id"] for m in cli_json(path, "list", "-c", "personal", "--state", "expired")["items"]] == [
        ids["tmp"]
    ]


def test_archive_search_include_archived_restore(home: tuple[Path, dict[str, str]]) -> None:
    path, ids = home
    assert "archived" in ok(cli(path, "archive", ids["chat"], "--reason", "cold")).stdout
    assert [h["memory"]["id"] for h in cli_json(path, "search", "harbour")] != [ids["chat"]]
    assert ids["chat"] not in [h["memory"]["id"] for h in cli_json(path, "search", "harbour")]
    with_archive = cli_json(path, "search", "harbour", "--include-archived")
    assert with_archive[0]["memory"]["id"] == ids["chat"] and with_archive[0]["memory"]["state"] == "archived"
    one_line_error(cli(path, "archive", ids["chat"]), "it is archived")
    assert cli_json(path, "restore", ids["chat"])["state"] == "active"
    assert cli_json(path, "search", "harbour")[0]["memory"]["id"] == ids["chat"]


def test_expire_leaves_every_search_until_restored(home: tuple[Path, dict[str, str]]) -> None:
    path, ids = home
    assert "expired" in ok(cli(path, "expire", ids["chat"], "--reason", "old")).stdout
    for extra in ((), ("--include-archived",)):
        assert ids["chat"] not in [h["memory"]["id"] for h in cli_json(path, "search", "harbour", *extra)]
    assert [m["id"] for m in cli_json(path, "list", "-c", "personal", "--state", "expired")["items"]] == [ids["chat"]]
    assert cli_json(path, "restore", ids["chat"])["state"] == "active"
    assert cli_json(path, "search", "harbour")[0]["memory"]["id"] == ids["chat"]
