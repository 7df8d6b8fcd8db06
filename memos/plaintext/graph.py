"""Per-cube entity graph, materialised in networkx on demand.

Entities and edges are rows (the truth); a cube's graph is built from them the first
time a search needs it and cached until the cube is written to again.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import select

from memos.storage.relational.engine import RelationalStore
from memos.storage.relational.models import EdgeRow, EntityRow

if TYPE_CHECKING:
    import networkx as nx

_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass
class CubeGraph:
    graph: nx.MultiDiGraph
    #: lower-cased entity key -> entity id
    keys: dict[str, int] = field(default_factory=dict)
    max_words: int = 1

    def match(self, text: str) -> list[int]:
        """Entity ids whose key occurs in ``text`` as a whole word sequence."""
        words = [w.lower() for w in _WORD.findall(text)]
        found: list[int] = []
        seen: set[int] = set()
        for n in range(min(self.max_words, 4), 0, -1):
            for i in range(len(words) - n + 1):
                eid = self.keys.get(" ".join(words[i : i + n]))
                if eid is not None and eid not in seen:
                    seen.add(eid)
                    found.append(eid)
        return found

    def neighbours(self, entity_ids: list[int], limit: int = 20) -> list[int]:
        """Entities one hop away from any of ``entity_ids`` (either direction), by degree."""
        out: dict[int, int] = {}
        for eid in entity_ids:
            if eid not in self.graph:
                continue
            for nb in list(self.graph.successors(eid)) + list(self.graph.predecessors(eid)):
                if nb not in entity_ids:
                    out[nb] = out.get(nb, 0) + 1
        return [e for e, _ in sorted(out.items(), key=lambda kv: -kv[1])[:limit]]


class GraphCache:
    def __init__(self, store: RelationalStore) -> None:
        self.store = store
        self._graphs: dict[str, CubeGraph] = {}
        self._lock = threading.Lock()

    def invalidate(self, cube_id: str) -> None:
        with self._lock:
            self._graphs.pop(cube_id, None)

    def get(self, cube_id: str) -> CubeGraph:
        with self._lock:
            cached = self._graphs.get(cube_id)
        if cached is not None:
            return cached
        import networkx as nx

        g = nx.MultiDiGraph()
        keys: dict[str, int] = {}
        with self.store.read_session() as s:
            for eid, key, name, kind in s.execute(
                select(EntityRow.id, EntityRow.key, EntityRow.name, EntityRow.kind).where(
                    EntityRow.cube_id == cube_id
                )
            ):
                g.add_node(eid, name=name, kind=kind)
                keys[key] = eid
            for src, pred, dst, mid, vto in s.execute(
                select(
                    EdgeRow.src_id, EdgeRow.predicate, EdgeRow.dst_id, EdgeRow.memory_id, EdgeRow.valid_to
                ).where(EdgeRow.cube_id == cube_id)
            ):
                g.add_edge(src, dst, predicate=pred, memory_id=mid, current=vto is None)
        built = CubeGraph(graph=g, keys=keys, max_words=max((k.count(" ") + 1 for k in keys), default=1))
        with self._lock:
            self._graphs[cube_id] = built
        return built
