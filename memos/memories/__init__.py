"""The memory services :class:`~memos.core.MemOS` delegates to, each built with the
:class:`~memos.home.Home`:

- :class:`~memos.memories.adding.Adding` — ``add``;
- :class:`~memos.memories.reading.Reading` — ``search``, ``get``, ``list``, ``history``;
- :class:`~memos.memories.lifecycle.Lifecycle` — ``update``, ``delete``, ``archive``,
  ``expire``, ``restore``, ``supersede``, ``purge``;
- :class:`~memos.memories.maintenance.Maintenance` — ``check_index``, ``reindex``,
  ``run_deferred_extraction``, ``optimize_index``, ``stats``;
- ``common`` — what they share (the extractor run inside a write, a new row's shape).

They check access with :mod:`memos.acl`, record each change through
:meth:`~memos.home.Home.recording`, and stand on :mod:`memos.plaintext` (the rows, the
index kept in step with them, the entity graph, search).
"""
