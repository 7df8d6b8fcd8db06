"""Plaintext memory's machinery, below the :class:`~memos.home.Home`: memories as rows (the
truth), a vector index kept in step with them, a graph of their entities, and hybrid search
over all three. The services that add, read and change memories are in
:mod:`memos.memories`; nothing here imports them, the home or the access checks.

- ``validation`` (what may come in), ``convert`` (row ↔ public type), ``knowledge``
  (entities and relations written from an extraction);
- ``indexer`` and ``sealing`` (the index in step with the rows, holding no payload in
  clear), ``graph`` (entity graph cache), ``hits`` (access statistics);
- ``retrieval/`` (search).
"""
