"""Plaintext memory: memories as rows (the truth), a vector index kept in step with them,
a graph of their entities, and hybrid search over all three.

The services :class:`~memos.core.MemOS` delegates to, each built with the
:class:`~memos.home.Home`:

- :class:`~memos.plaintext.adding.Adding` — ``add``;
- :class:`~memos.plaintext.reading.Reading` — ``search``, ``get``, ``list``, ``history``;
- :class:`~memos.plaintext.lifecycle.Lifecycle` — ``update``, ``delete``, ``restore``, ``purge``;
- :class:`~memos.plaintext.maintenance.Maintenance` — ``check_index``, ``reindex``,
  ``run_deferred_extraction``, ``optimize_index``, ``stats``.

What they stand on: ``validation`` (what may come in), ``convert`` (row ↔ public type),
``knowledge`` (entities and relations written from an extraction), ``indexer`` and
``sealing`` (the index in step with the rows, holding no payload in clear), ``graph``
(entity graph cache), ``hits`` (access statistics) and ``retrieval/`` (search).
"""
