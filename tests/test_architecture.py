"""The import graph of memos: no cycle among its modules, lazy imports included.

`make lint` checks the layers with import-linter (the contracts in pyproject.toml); its
acyclic_siblings contract compares siblings, so a cycle through a package's own
``__init__`` (``memos`` -> ``memos.core`` -> … -> ``memos``) escapes it. This test looks at
modules: every import counts, at module level, inside a function or under TYPE_CHECKING.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]

# grimp walks the folder of `memos`; storage/, policies/ and adapters/ are in it as links
# (memos/storage -> ../storage …), so the graph holds the backends as they install.
_GRAPH = """
import json, grimp
g = grimp.build_graph("memos", include_external_packages=False, cache_dir=None)
edges = []
for m in sorted(g.modules):
    for i in sorted(g.find_modules_directly_imported_by(m)):
        lines = sorted(d["line_number"] for d in g.get_import_details(importer=m, imported=i))
        edges.append([m, i, lines])
print(json.dumps({"modules": sorted(g.modules), "edges": edges}))
"""


@pytest.fixture(scope="module")
def graph() -> dict[str, list]:
    """Modules and direct imports of memos as installed, built by grimp."""
    out = subprocess.run(
        [sys.executable, "-c", _GRAPH],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    data: dict[str, list] = json.loads(out.stdout)
    return data


def test_the_graph_holds_the_kernel_and_the_backends(graph: dict[str, list]) -> None:
    modules = set(graph["modules"])
    assert {"memos.core", "memos.protocols", "memos.memories.adding", "memos.cli.app"} <= modules
    assert "memos.storage.relational.models" in modules
    assert "memos.adapters.runtimes.hf.runtime" in modules


def test_no_import_cycle_among_the_modules_of_memos(graph: dict[str, list]) -> None:
    g = nx.DiGraph()
    lines = {}
    for importer, imported, at in graph["edges"]:
        g.add_edge(importer, imported)
        lines[importer, imported] = at
    cycles = sorted(sorted(c) for c in nx.strongly_connected_components(g) if len(c) > 1)
    report = []
    for members in cycles:
        report.append("cycle among " + ", ".join(members) + ":")
        sub = g.subgraph(members)
        report += [f"  {a} -> {b} (line {', '.join(map(str, lines[a, b]))})" for a, b in sorted(sub.edges())]
    assert not cycles, "\n".join(report)


def test_the_facades_return_types_and_version_come_from_the_package() -> None:
    """Interfaces name the facade's return types from ``memos`` (the CLI contract allows
    no service), and kernel modules read the version from ``memos.version``."""
    import memos
    from memos import ActivationInfo, ChatResult, Job, LoraInfo
    from memos.activation import ActivationInfo as service_activation_info
    from memos.chat import ChatResult as service_chat_result
    from memos.parametric import LoraInfo as service_lora_info
    from memos.scheduler import Job as service_job
    from memos.version import __version__

    assert (ActivationInfo, ChatResult, LoraInfo, Job) == (
        service_activation_info,
        service_chat_result,
        service_lora_info,
        service_job,
    )
    assert memos.__version__ == __version__
