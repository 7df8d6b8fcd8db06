"""Vector indexes: implementations of :class:`memos.protocols.VectorIndex`.

- :mod:`memos.storage.vector.qdrant_edge` — ``qdrant_edge``: the embedded default, one
  Qdrant Edge shard in a directory (``qdrant-edge-py``), no server.
- :mod:`memos.storage.vector.qdrant_server` — ``qdrant``: one collection on a Qdrant
  server or cluster (``qdrant-client``), cubes as tenants.

Both store a cosine ``dense`` vector and a ``lexical`` sparse vector (BM25 weights from
:mod:`memos.lexical`, IDF applied by the engine), so they score alike. The registry
imports a backend by name when it is configured; this package imports neither, so
``import memos.storage.vector`` never loads qdrant.
"""
