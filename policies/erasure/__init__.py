"""erasure: what was built from a purged memory is retired — the purge's propagation, as a policy.

The guarantee stays synchronous: the purge itself (``memory_purged`` on the event bus)
retires every KV prefix and adapter built from the memory before ``purge`` returns, and
queues the adapter's retrain (a ``parametric.retrain`` job, in the transaction that
retires it), with no scheduler running. A scheduler that runs later must not be what
erasure waits for. This policy is the framework's view of the same rule, and its net:

    an artifact (not yet retired) lists a memory the cube no longer has, or one named by a
    ``memory_purged`` event since the last run  →  RetireArtifact

so a prefix or adapter that escaped the synchronous path (a purge by a process whose
subscriber failed, a home restored from a backup of the manifests) is retired at the next
apply. Retraining is the parametric policy's: it queues the retrain of every adapter whose
retrain is pending, in its window.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar

from memos.policies.base import Action, CubeView, Policy, PolicySettings, RetireArtifact
from memos.types import AuditEvent

PURGED = "purge"


class ErasurePolicy(Policy):
    name: ClassVar[str] = "erasure"
    Settings: ClassVar[type[PolicySettings]] = PolicySettings
    order: ClassVar[int] = 40

    def decide(
        self, view: CubeView, events: Sequence[AuditEvent], now: datetime, settings: Any
    ) -> list[Action]:
        purged = {e.memory_id for e in events if e.action == PURGED and e.memory_id is not None}
        out: list[Action] = []
        for a in view.artifacts:
            if a.state in ("purged", "retired"):
                continue
            gone = tuple(m for m in a.memory_ids if m in purged or view.get(m) is None)
            if gone:
                out.append(
                    RetireArtifact(
                        reason="a memory it was built from was purged"
                        if len(gone) == 1
                        else f"{len(gone)} memories it was built from were purged",
                        memory_ids=gone,
                        kind=a.kind,
                        artifact_id=a.id,
                    )
                )
        return out
