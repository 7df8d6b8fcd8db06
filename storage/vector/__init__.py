"""Vector indexes: implementations of :class:`memos.protocols.VectorIndex`.

- :mod:`memos.storage.vector.qdrant_edge` — ``qdrant_edge``: the embedded default, one
  Qdrant Edge shard in a directory (``qdrant-edge-py``), no server.
- :mod:`memos.storage.vector.qdrant_server` — ``qdrant``: one collection on a Qdrant
  server or cluster (``qdrant-client``), cubes as tenants.

Both store a cosine ``dense`` vector and a ``lexical`` sparse vector (BM25 weights from
:mod:`memos.plaintext.retrieval.lexical`, IDF applied by the engine), so they score alike. The registry
imports a backend by name when it is configured; this package imports neither, so
``import memos.storage.vector`` never loads qdrant.
"""

from __future__ import annotations

#: ``vector_url`` forms and the backend (``memos.vector_indexes`` entry point) serving
#: each: an exact value, or a prefix ending in ``*``; ``None``: unset
URL_FORMS: tuple[tuple[str | None, str], ...] = (
    (None, "qdrant_edge"),
    (":memory:", "qdrant"),
    ("qdrant-local:*", "qdrant"),
    ("qdrant://*", "qdrant"),
    ("http://*", "qdrant"),
    ("https://*", "qdrant"),
)


def backend_for(url: str | None) -> str | None:
    """The vector-index backend that serves ``vector_url`` (``None``: no form matches)."""
    for form, name in URL_FORMS:
        if form == url:
            return name
        if form is not None and url is not None and form.endswith("*") and url.startswith(form[:-1]):
            return name
    return None
