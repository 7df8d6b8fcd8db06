"""``memos scheduler …``: status, jobs, cancel and run, as text and as JSON; who sees what."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from memos.cli import app

RUNNER = CliRunner()

HANDLERS = """
def compile(ctx):
    ctx.progress(0.5, "compiling")
    return {"cube": ctx.job.cube_id}
"""


def cli(home: Path, *args: str, user: str | None = None) -> Result:
    env = {"MEMOS_HOME": str(home), "HF_HUB_OFFLINE": "1", "MEMOS_USER": user}
    return RUNNER.invoke(app, list(args), env=env)


def ok(result: Result) -> Result:
    assert result.exit_code == 0, f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result


def cli_json(home: Path, *args: str, user: str | None = None) -> Any:
    return json.loads(ok(cli(home, "--json", *args, user=user)).stdout)


def one_line_error(result: Result, text: str) -> None:
    assert result.exit_code == 1
    assert result.stderr.startswith("error:") and text in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


@pytest.fixture
def home(tmp_path: Path, embedder: Any) -> tuple[Path, dict[str, int]]:
    """alice owns a cube with a queued and a running job; the home has one job of its own
    (no cube) and one done job."""
    from memos.core import MemOS

    path = tmp_path / "home"
    with MemOS(home=path, embedder=embedder) as mos:
        mos.add_user("alice")
        mos.add_user("bob")
        cube = mos.create_cube("alice", "personal").id
        ids = {
            "running": mos.scheduler.enqueue("train", {"n": 1}, user_id="alice", cube_id=cube).id,
            "queued": mos.scheduler.enqueue("compile", user_id="alice", cube_id=cube).id,
            "home": mos.scheduler.enqueue("reindex").id,
        }
        running = mos.scheduler.queue.claim("elsewhere", kinds=["train"])
        assert running is not None
        mos.scheduler.queue.progress(running, 0.25, "epoch 1")
    return path, ids


def test_status_and_jobs(home: tuple[Path, dict[str, int]]) -> None:
    path, ids = home
    st = cli_json(path, "scheduler", "status")
    assert (st["mode"], st["background"]) == ("off", False)
    assert st["totals"] == {"queued": 2, "running": 1, "done": 0, "failed": 0, "cancelled": 0}
    assert st["kinds"]["train"]["running"] == 1 and st["kinds"]["reindex"]["queued"] == 1
    [running] = st["running"]
    assert (running["id"], running["lease_owner"], running["progress"], running["message"]) == (
        ids["running"],
        "elsewhere",
        0.25,
        "epoch 1",
    )
    text = ok(cli(path, "scheduler", "status")).stdout
    assert "scheduler off" in text and "2 queued" in text and "epoch 1" in text and "elsewhere" in text

    every = cli_json(path, "scheduler", "jobs")
    assert [j["id"] for j in every] == sorted(ids.values(), reverse=True)  # newest first
    assert [j["id"] for j in cli_json(path, "scheduler", "jobs", "--state", "queued")] == [
        ids["home"],
        ids["queued"],
    ]
    assert [j["id"] for j in cli_json(path, "scheduler", "jobs", "--kind", "train")] == [ids["running"]]
    text = ok(cli(path, "scheduler", "jobs", "--state", "running")).stdout
    assert f"{ids['running']} train running 25%" in text and "attempt 1/5" in text
    assert "no jobs" in ok(cli(path, "scheduler", "jobs", "--state", "failed")).stdout
    one_line_error(cli(path, "scheduler", "jobs", "--state", "sleeping"), "a job state is one of")


def test_a_user_sees_and_cancels_only_the_jobs_of_cubes_they_own(home: tuple[Path, dict[str, int]]) -> None:
    path, ids = home
    mine = cli_json(path, "scheduler", "jobs", user="alice")
    assert {j["id"] for j in mine} == {ids["running"], ids["queued"]}  # not the home's own job
    assert [j["id"] for j in cli_json(path, "scheduler", "jobs", "--cube", "personal", user="alice")] == [
        ids["queued"],
        ids["running"],
    ]
    assert cli_json(path, "scheduler", "status", user="alice")["totals"]["queued"] == 1
    assert cli_json(path, "scheduler", "jobs", user="bob") == []
    one_line_error(
        cli(path, "scheduler", "cancel", str(ids["queued"]), user="bob"), f"no job {ids['queued']}"
    )
    one_line_error(cli(path, "scheduler", "cancel", str(ids["home"]), user="alice"), f"no job {ids['home']}")
    assert cli_json(path, "scheduler", "jobs", "--state", "cancelled") == []


def test_cancel(home: tuple[Path, dict[str, int]]) -> None:
    path, ids = home
    out = ok(cli(path, "scheduler", "cancel", str(ids["queued"]), user="alice")).stdout
    assert f"job {ids['queued']} (compile): cancelled" in out
    asked = cli_json(path, "scheduler", "cancel", str(ids["running"]))
    assert (asked["state"], asked["cancel_requested"]) == ("running", True)
    one_line_error(cli(path, "scheduler", "cancel", str(ids["queued"])), "cancelled already")
    one_line_error(cli(path, "scheduler", "cancel", "999"), "no job 999")
    assert [j["id"] for j in cli_json(path, "scheduler", "jobs", "--state", "cancelled")] == [ids["queued"]]


def test_run_until_idle(
    home: tuple[Path, dict[str, int]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, ids = home
    (tmp_path / "cli_handlers_e.py").write_text(HANDLERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    run = cli_json(
        path,
        "scheduler",
        "run",
        "--until-idle",
        "--kind",
        "compile",
        "--handler",
        "compile=cli_handlers_e:compile",
    )
    assert run == {"jobs_run": 1}
    [done] = cli_json(path, "scheduler", "jobs", "--state", "done")
    assert (done["id"], done["result"], done["message"]) == (
        ids["queued"],
        {"cube": done["cube_id"]},
        "compiling",
    )
    # a job of a kind this worker has no handler for fails, saying so
    result = ok(cli(path, "scheduler", "run", "--until-idle", "--kind", "reindex"))
    assert "ran 1 job" in result.stdout and "no handler for job kind 'reindex'" in " ".join(
        result.stderr.split()
    )
    one_line_error(cli(path, "scheduler", "run", "--handler", "compile=nowhere"), "module:function")


def test_prune(home: tuple[Path, dict[str, int]]) -> None:
    path, ids = home
    ok(cli(path, "scheduler", "cancel", str(ids["home"])))
    assert cli_json(path, "scheduler", "prune", "--days", "1") == {"pruned": 0}  # it just finished
    assert "pruned 1 finished job" in ok(cli(path, "scheduler", "prune", "--days", "0")).stdout
    assert {j["id"] for j in cli_json(path, "scheduler", "jobs")} == {ids["running"], ids["queued"]}
    one_line_error(cli(path, "scheduler", "prune", user="alice"), "operator")
    one_line_error(cli(path, "scheduler", "prune", "--days", "-1"), "older_than_days")
