"""The MemOS facade: users, cubes, sharing, and the memory operations.

One ``MemOS`` object owns one home: its relational store (the truth), its vector index
(derived), its embedder and its graph cache. Every operation names the acting user and
is checked against the cube's ACL. Writes commit relational rows first, then bring the
index up to date (see :mod:`memos.plaintext.indexer`).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, Generic, Literal, ParamSpec, TypeVar, cast, overload

from sqlalchemy import select

from memos.activation import ActivationMemory
from memos.chat import Chat, ChatResult, ChatStream, Runtimes
from memos.config import Settings, load_settings
from memos.cubes import Cubes
from memos.events import EventBus, EventKind
from memos.home import Home
from memos.memories.adding import Adding
from memos.memories.lifecycle import Lifecycle
from memos.memories.maintenance import Maintenance
from memos.memories.reading import Reading
from memos.memories.summaries import Summaries
from memos.parametric import ParametricMemory
from memos.plaintext.graph import GraphCache
from memos.plaintext.hits import AccessStats
from memos.protocols import Embedder, Runtime, VectorIndex
from memos.storage.relational.engine import RelationalStore
from memos.storage.relational.models import (
    CubeRow,
    MetaRow,
)
from memos.types import (
    ChatImport,
    Cube,
)

if TYPE_CHECKING:
    from memos.archive import ChatLog, Manifest
    from memos.archive.chat_import import Progress
    from memos.plaintext.indexer import Indexer
    from memos.plaintext.retrieval.retriever import Retriever
    from memos.protocols import Extractor

log = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


def _via(service: str, method: Callable[Concatenate[Any, P], R]) -> Callable[Concatenate[Any, P], R]:
    """A facade method that calls ``method`` on the service held in ``service``: the
    signature, docstring and types are the service's, in one line of the facade."""

    @functools.wraps(method)
    def delegate(self: Any, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return method(getattr(self, service), *args, **kwargs)

    return delegate


class _InHome(Generic[T]):
    """A facade attribute that is the Home's own (``mos.store is mos.home.store``)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, objtype: type | None = None) -> T:
        return cast(T, getattr(obj.home, self.name))

    def __set__(self, obj: Any, value: T) -> None:
        setattr(obj.home, self.name, value)


class MemOS:
    """A memos home, opened for use by this process.

    >>> mos = MemOS(home="/tmp/memos-demo")          # doctest: +SKIP
    >>> mos.add_user("alice"); cube = mos.create_cube("alice", "personal")  # doctest: +SKIP
    >>> mos.add(text="Alice lives in Berlin", user_id="alice", cube_id=cube.id)  # doctest: +SKIP
    """

    settings: _InHome[Settings] = _InHome()
    clock: _InHome[Callable[[], datetime]] = _InHome()
    store: _InHome[RelationalStore] = _InHome()
    index: _InHome[VectorIndex] = _InHome()
    embedder: _InHome[Embedder] = _InHome()
    indexer: _InHome[Indexer] = _InHome()
    graphs: _InHome[GraphCache] = _InHome()
    retriever: _InHome[Retriever] = _InHome()
    access: _InHome[AccessStats] = _InHome()
    extractor: _InHome[Extractor | None] = _InHome()
    write_lock: _InHome[threading.RLock] = _InHome()
    events: _InHome[EventBus] = _InHome()

    def __init__(
        self,
        home: str | Path | None = None,
        *,
        settings: Settings | None = None,
        embedder: Embedder | None = None,
        clock: Callable[[], datetime] | None = None,
        **overrides: Any,
    ) -> None:
        settings = settings or load_settings(home, **overrides)
        clock = clock or _utcnow
        write_lock = threading.RLock()
        self._closed = False
        from memos import factories

        self._lock = factories.lock_home(settings)
        try:
            store = RelationalStore(settings.resolved_relational_url)
            if embedder is None and settings.embedder_backend is None:
                backend = factories.embedder_backend(settings, store)
                settings = settings.model_copy(update={"embedder_backend": backend})
            embedder = embedder or factories.make_embedder(settings)
            index = factories.open_index(settings, store, embedder)
            from memos.plaintext.indexer import Indexer
            from memos.plaintext.retrieval.retriever import Retriever

            graphs = GraphCache(store)
            events = EventBus()
            #: what every service is built with (memos.home)
            self.home = Home(
                settings=settings,
                clock=clock,
                store=store,
                index=index,
                embedder=embedder,
                indexer=Indexer(store, index, embedder, clock, events),
                graphs=graphs,
                retriever=Retriever(store, index, embedder, graphs, settings.search),
                access=AccessStats(store, clock, settings.search.access_flush_seconds, write_lock),
                extractor=factories.make_extractor(settings.extractor),
                write_lock=write_lock,
                events=events,
            )
            #: the loaded runtimes (memos.chat.runtimes), configured by the home's settings
            self._runtimes = Runtimes(self.home.settings)
            self._adding = Adding(self.home)
            self._reading = Reading(self.home)
            self._lifecycle = Lifecycle(self.home)
            self._maintenance = Maintenance(self.home)
            self._summaries = Summaries(self.home, runtimes=self._runtimes.get)
            #: activation memory: compiled KV prefixes (memos.activation)
            self.activation = ActivationMemory(self.home, runtimes=self._runtimes.get)
            #: parametric memory: LoRA adapters consolidated from memories (memos.parametric)
            self.parametric = ParametricMemory(self.home, runtimes=self._runtimes.get)
            #: a KV prefix is computed under the cube's active adapters, those its chats apply
            self.activation.adapters = self.parametric.for_chat
            self._chat = Chat(
                self.home,
                reading=self._reading,
                adding=self._adding,
                lifecycle=self._lifecycle,
                activation=self.activation,
                parametric=self.parametric,
                runtimes=self._runtimes,
            )
            self._cubes = Cubes(
                self.home, blob_deleters=(self.activation.delete_cube_blobs, self.parametric.delete_cube_blobs)
            )
            for artifacts in (self.activation, self.parametric):  # erasure reaches what was built
                self.events.subscribe(artifacts.on_purge, [EventKind.memory_purged])
            # a prefix computed under an adapter goes when the adapter is retired
            self.events.subscribe(self.activation.on_adapter_retired, [EventKind.artifact_retired])
            self.repair()
            from memos.scheduler.service import Scheduler

            #: the jobs of the home (memos.scheduler); its background worker starts here if configured
            self.scheduler = Scheduler(self.home, app=self)
            from memos.scheduler.policies import Policies

            #: the scheduler's policies (memos.policies): settings, plan, apply; job kind policy.apply
            self.policies = Policies(
                self.home, lifecycle=self._lifecycle, summaries=self._summaries, scheduler=self.scheduler,
                activation=self.activation, parametric=self.parametric,
            )  # fmt: skip
        except BaseException:
            if self._lock is not None:
                self._lock.release()
            raise

    # ------------------------------------------------------------------ lifecycle
    def repair(self) -> dict[str, int]:
        """Bring the index in line with the rows: pending writes, owed removals, and — after
        an unclean shutdown of an embedded home — a full comparison of ids and the removal
        of blob files no row names (their rows' deletes committed, the files' did not)."""
        unclean = False
        with self.store.session() as s:
            marker = s.get(MetaRow, "open")
            if marker is not None and not marker.value.get("clean", True):
                unclean = True
            if self._lock is not None:
                s.merge(MetaRow(key="open", value={"clean": False, "since": self.clock().isoformat()}))
        applied = self.indexer.sync()
        report = {"applied": applied, "missing": 0, "extra": 0}
        if unclean:
            with self.store.session() as s:
                cube_ids = list(s.scalars(select(CubeRow.id)))
            report.update(self.indexer.reconcile(cube_ids))
            # the files of KV prefixes and adapters whose rows went just before the crash
            report["blobs_removed"] = len(self._maintenance.sweep_blobs(grace=0))  # we hold the home
            log.info("repaired the index after an unclean shutdown: %s", report)
        return report

    def close(self) -> None:
        """Flush the index and release the home. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self.scheduler.close()  # first: its worker may be using everything below
            self.close_runtimes()
            self.access.flush(strict=False)
            self.index.flush()
            self.index.close()
            if self._lock is not None:
                with self.store.session() as s:
                    s.merge(MetaRow(key="open", value={"clean": True, "since": self.clock().isoformat()}))
            self.store.close()
        finally:
            if self._lock is not None:
                self._lock.release()

    def __enter__(self) -> MemOS:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ plaintext memory (memos.memories)
    add = _via("_adding", Adding.add)
    search = _via("_reading", Reading.search)
    get = _via("_reading", Reading.get)
    list_memories = _via("_reading", Reading.list_memories)
    history = _via("_reading", Reading.history)
    readable_cubes = _via("_reading", Reading.readable_cubes)
    update = _via("_lifecycle", Lifecycle.update)
    delete = _via("_lifecycle", Lifecycle.delete)
    restore = _via("_lifecycle", Lifecycle.restore)
    archive = _via("_lifecycle", Lifecycle.archive)
    expire = _via("_lifecycle", Lifecycle.expire)
    supersede = _via("_lifecycle", Lifecycle.supersede)
    merge = _via("_lifecycle", Lifecycle.merge)
    summarize_session = _via("_summaries", Summaries.summarize_session)
    purge = _via("_lifecycle", Lifecycle.purge)
    check_index = _via("_maintenance", Maintenance.check_index)
    reindex = _via("_maintenance", Maintenance.reindex)
    run_deferred_extraction = _via("_maintenance", Maintenance.run_deferred_extraction)
    optimize_index = _via("_maintenance", Maintenance.optimize_index)
    stats = _via("_maintenance", Maintenance.stats)
    sweep_blobs = _via("_maintenance", Maintenance.sweep_blobs)

    # ------------------------------------------------------------------ chat (memos.chat)
    runtime = _via("_runtimes", Runtimes.get)
    close_runtimes = _via("_runtimes", Runtimes.close)
    read_memories = _via("_chat", Chat.read_memories)

    @overload
    def chat(
        self,
        message: str,
        *,
        user_id: str,
        cube_ids: Sequence[str] | str | None = None,
        session_id: str | None = None,
        runtime: str | Runtime | None = None,
        stream: Literal[False] = False,
        max_tokens: int | None = None,
        memories: int | None = None,
        write_back: bool | None = None,
        explain: bool = False,
        activation: bool = True,
        parametric: bool = True,
    ) -> ChatResult: ...

    @overload
    def chat(
        self,
        message: str,
        *,
        user_id: str,
        cube_ids: Sequence[str] | str | None = None,
        session_id: str | None = None,
        runtime: str | Runtime | None = None,
        stream: Literal[True],
        max_tokens: int | None = None,
        memories: int | None = None,
        write_back: bool | None = None,
        explain: bool = False,
        activation: bool = True,
        parametric: bool = True,
    ) -> ChatStream: ...

    @functools.wraps(Chat.chat)
    def chat(self, message: str, **kwargs: Any) -> ChatResult | ChatStream:
        return self._chat.chat(message, **kwargs)

    # ------------------------------------------------------------------ users and cubes (memos.cubes)
    add_user = _via("_cubes", Cubes.add_user)
    get_user = _via("_cubes", Cubes.get_user)
    list_users = _via("_cubes", Cubes.list_users)
    create_cube = _via("_cubes", Cubes.create_cube)
    list_cubes = _via("_cubes", Cubes.list_cubes)
    get_cube = _via("_cubes", Cubes.get_cube)
    resolve_cube = _via("_cubes", Cubes.resolve_cube)
    delete_cube = _via("_cubes", Cubes.delete_cube)
    share_cube = _via("_cubes", Cubes.share_cube)
    unshare_cube = _via("_cubes", Cubes.unshare_cube)
    shares = _via("_cubes", Cubes.shares)

    # ------------------------------------------------------------------ portability
    def export_cube(self, cube_id: str, path: str | Path, *, user_id: str, overwrite: bool = False) -> Path:
        """Write the cube to a ``.memcube`` archive (see :mod:`memos.archive`).

        An existing file at ``path`` is replaced only with ``overwrite``; anything else
        there (a directory, a device, a FIFO) never is."""
        from memos import archive

        return archive.export_cube(self.home, cube_id, Path(path), user_id=user_id, overwrite=overwrite)

    def import_cube(
        self,
        path: str | Path,
        *,
        user_id: str,
        cube_id: str | None = None,
        name: str | None = None,
        copy: bool = False,
    ) -> Cube:
        """Load a ``.memcube`` archive as a new cube owned by ``user_id``.

        Memory ids are kept (so one archive lives in a home once) and the cube keeps its id
        unless ``cube_id`` is given; ``copy=True`` imports it again with new memory ids and
        a new cube id. The archive is fully validated, every row as ``add`` would check it,
        before anything is written."""
        from memos import archive

        return archive.import_cube(self.home, Path(path), user_id=user_id, cube_id=cube_id, name=name, copy=copy)

    @staticmethod
    def verify_archive(path: str | Path, settings: Settings | None = None) -> Manifest:
        """Check a ``.memcube`` archive as :meth:`import_cube` does, with the limits of
        ``settings`` (default: :func:`load_settings`); opens no home, writes nothing, and
        returns the archive's manifest."""
        from memos import archive

        return archive.verify(Path(path), settings or load_settings())

    @staticmethod
    def read_chat(
        path: str | Path, settings: Settings | None = None, *, session_id: str | None = None
    ) -> ChatLog:
        """Read a chat log (a JSON list of messages, JSONL, or ``{"sessions": […]}``) and check
        every message as :meth:`add` will, with the limits of ``settings`` (default:
        :func:`load_settings`); opens no home and writes nothing. A bad message is named by
        its place in the file (``messages[180]``). ``session_id`` is the session of messages
        outside any session of the file."""
        from memos import archive

        return archive.read_chat(path, settings or load_settings(), session_id=session_id)

    def import_chat(
        self,
        chat: str | Path | ChatLog,
        *,
        user_id: str,
        cube_id: str,
        session_id: str | None = None,
        batch_size: int = 100,
        extract: bool | Literal["defer"] = True,
        progress: Progress | None = None,
    ) -> ChatImport:
        """Add a chat log's messages as episodes, session by session, ``batch_size`` messages
        per :meth:`add` (``extract`` is passed on). A path is read with :meth:`read_chat`
        first, so a bad file stores nothing; message ids make a second import add nothing.
        ``progress(session_id, n)`` is told as each session starts (``n=0``) and after each
        batch of ``n`` messages."""
        from memos import archive

        return archive.import_chat(
            chat,
            self.add,
            self.settings,
            user_id=user_id,
            cube_id=cube_id,
            session_id=session_id,
            batch_size=batch_size,
            extract=extract,
            progress=progress,
        )

    # ------------------------------------------------------------------ the home
    @staticmethod
    def lock_holder(settings: Settings) -> dict[str, object] | None:
        """Who holds this home open in another process (pid, host, cmd, since), or None; takes
        nothing. A home on PostgreSQL and a Qdrant server takes no lock, so it is always None."""
        from memos import lock

        return lock.holder(settings.home) if settings.embedded else None

    # ``list`` last: inside the class body it would shadow the builtin for later annotations
    list = _via("_reading", Reading.list_memories)
