"""``memos chat`` through the installed console script: one-shot, piped REPL, and a real
pseudo-terminal. llama.cpp is the runtime here because it loads in a second."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")


def _cmd() -> list[str]:
    exe = Path(sys.executable).with_name("memos")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "memos.cli"]


def _env(home: Path) -> dict[str, str]:
    env = {**os.environ, "MEMOS_HOME": str(home), "HF_HUB_OFFLINE": "1", "MEMOS_RUNTIME__NAME": "llama_cpp",
           "MEMOS_RUNTIME__MAX_NEW_TOKENS": "24", "MEMOS_RUNTIME__THREADS": "2"}  # fmt: skip
    env.pop("MEMOS_USER", None)
    return env


def run(home: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_cmd(), *args], env=_env(home), input=input, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("chat-home")
    assert run(path, "init").returncode == 0
    proc = run(path, "--json", "add", "My sister Mira lives in Tromso.")
    assert proc.returncode == 0, proc.stderr
    return path


def test_one_shot(home: Path) -> None:
    proc = run(home, "chat", "-m", "Where does my sister live?")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()  # the answer, and only the answer, on stdout
    assert "memories" in proc.stderr and "first token" in proc.stderr
    proc = run(home, "--json", "chat", "-m", "Where does my sister live?", "--no-write")
    data = json.loads(proc.stdout)
    assert any("Tromso" in m["text"] for m in data["memories"])
    assert data["runtime"]["runtime"] == "llama_cpp" and data["written"] == []
    assert data["timings"]["ttft_ms"] > 0


def test_errors_are_one_line(home: Path) -> None:
    proc = run(home, "chat", "-m", "   ")
    assert (
        proc.returncode == 1
        and proc.stderr.startswith("error:")
        and len(proc.stderr.strip().splitlines()) == 1
    )
    proc = run(home, "chat", "-m", "hi", "--runtime", "nonsense")
    assert proc.returncode == 1 and "no runtimes backend named 'nonsense'" in proc.stderr


def test_piped_repl(home: Path) -> None:
    fact = json.loads(run(home, "--json", "add", "The user's locker code is 4711.").stdout)["memories"][0][
        "id"
    ]
    script = "\n".join([
        "What is my locker code?", "/memories", f"/forget {fact}", "/session", "/session new", "/nope",
        "What is my locker code?", "/memories", "/exit", "never sent",
    ])  # fmt: skip
    proc = run(home, "chat", input=script + "\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() and proc.stderr.count("tok/s") == 2  # two answers, two footers
    err = proc.stderr
    assert fact in err.split(f"forgot {fact}")[0]  # /memories listed it before /forget
    assert f"forgot {fact}" in err and "session chat-" in err and "new session" in err
    assert "unknown command /nope" in err
    assert fact not in err.split(f"forgot {fact}")[1]  # not used once forgotten
    assert err.rstrip().endswith("bye")


class Terminal:
    """The controlling side of a pseudo-terminal, read up to an expected text."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""

    def expect(self, needle: bytes, timeout: float = 180.0) -> bytes:
        deadline = time.monotonic() + timeout
        while needle not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"did not see {needle!r}; got {self.buf[-500:]!r}")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:  # the child closed the terminal
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"terminal closed before {needle!r}; got {self.buf[-500:]!r}")
                self.buf += chunk
        end = self.buf.index(needle) + len(needle)
        seen, self.buf = self.buf[:end], self.buf[end:]
        return seen

    def send(self, line: str) -> None:
        os.write(self.fd, line.encode() + b"\n")


def test_interactive_under_a_pseudo_terminal(home: Path) -> None:
    master, slave = pty.openpty()
    proc = subprocess.Popen(_cmd() + ["chat"], env={**_env(home), "COLUMNS": "200"},
                            stdin=slave, stdout=slave, stderr=slave, close_fds=True)  # fmt: skip
    os.close(slave)
    term = Terminal(master)
    try:
        term.expect(b"you>")
        term.send("Where does my sister live?")
        out = term.expect(b"tok/s")
        assert b"memos>" in out and b"memories" in out
        term.expect(b"you>")
        term.send("/memories")
        assert b"Tromso" in term.expect(b"you>")
        term.send("/exit")
        term.expect(b"bye")
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)


def test_example_chatbot_remembers_across_runs(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[1] / "examples" / "chatbot.py"
    env = {**_env(tmp_path / "unused"), "MEMOS_HOME": str(tmp_path / "unused")}

    def talk(text: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(example)], cwd=tmp_path, env=env, input=text,
                              capture_output=True, text=True, timeout=300)  # fmt: skip

    first = talk("Robin\nMy cat is called Tom.\n")
    assert first.returncode == 0, first.stderr
    assert "memories, first token" in first.stdout
    second = talk("What is my cat called?\n")  # a new run, a new session
    assert second.returncode == 0, second.stderr
    assert "[0 memories" not in second.stdout  # the first run's turn was retrieved
    assert (tmp_path / "chatbot-home" / "memos.db").is_file()


def test_activation_commands(home: Path) -> None:
    run(home, "add", "--type", "preference", "I prefer window seats on trains.")
    proc = run(home, "--json", "activation", "compile", "--tokens", "512")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["state"] == "ready" and info["fingerprint"]["runtime"] == "llama_cpp" and info["n_tokens"] > 0
    listed = json.loads(run(home, "--json", "activation", "list").stdout)
    assert [i["id"] for i in listed] == [info["id"]]
    shown = run(home, "activation", "show", info["id"][:10])
    assert (
        shown.returncode == 0
        and "segment" in shown.stdout
        and info["fingerprint"]["weights_sha256"] in shown.stdout
    )
    answer = json.loads(run(home, "--json", "chat", "-m", "Which seat do I like?", "--no-write").stdout)
    assert answer["activation"]["id"] == info["id"] and answer["activation"]["used"] is True
    other = run(home, "activation", "compile", "--runtime", "openai")
    assert other.returncode == 1 and other.stderr.startswith("error:")
    assert run(home, "activation", "drop", info["id"][:10]).returncode == 0
    missing = run(home, "activation", "show", info["id"][:10])
    assert missing.returncode == 1 and "no activation memory" in missing.stderr
    assert not list((home / "blobs").rglob("*.safetensors"))
