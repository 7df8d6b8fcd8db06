"""Plaintext memory: the services that add, read, change and maintain memories.

Each is built with the :class:`~memos.home.Home` and is what :class:`~memos.core.MemOS`
delegates to:

- :class:`~memos.memories.adding.Adding` — ``add``;
- :class:`~memos.memories.reading.Reading` — ``search``, ``get``, ``list``, ``history``;
- :class:`~memos.memories.lifecycle.Lifecycle` — ``update``, ``delete``, ``restore``, ``purge``;
- :class:`~memos.memories.maintenance.Maintenance` — ``check_index``, ``reindex``,
  ``run_deferred_extraction``, ``optimize_index``, ``stats``.
"""

from memos.memories.adding import Adding
from memos.memories.lifecycle import Lifecycle
from memos.memories.maintenance import Maintenance
from memos.memories.reading import Reading

__all__ = ["Adding", "Lifecycle", "Maintenance", "Reading"]
