"""The Fault protocol: a frozen set of parameters that can inject one disruption and undo it.

A fault's public ``inject(ctx)`` is final: it calls the subclass's ``_inject`` and
journals ``fault.injected`` with the parameters, the seed and exactly what was
changed; it returns an :class:`Injection`, a context manager whose exit always reverts.
``Injection.revert()`` is idempotent and journals ``fault.reverted`` once.
Random choices come from ``ctx.rng``, seeded from the seed recorded in the journal,
so a run can be reproduced.  An injection whose ``fault.injected`` cannot be journaled is
reverted before ``inject`` raises: no change is ever left applied without a record.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, final

from chaoskit.errors import FaultError
from chaoskit.journal import Journal


@dataclass
class FaultContext:
    """What a fault may act on: the journal, a seeded RNG and the running stack."""

    journal: Journal
    seed: int = 0
    stack: Any = None
    """The running :class:`~chaoskit.stack.protocol.Stack` (Any: container faults also use
    what only the Docker backends have, such as ``container_id``)."""
    annotations: dict[str, Any] = field(default_factory=dict)
    """Extra facts recorded with ``fault.injected`` (e.g. the trainer step at the fault)."""
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)


@dataclass
class Changes:
    """What ``_inject`` did: ``record`` goes into the journal, ``undo`` is kept for revert."""

    record: dict[str, Any] = field(default_factory=dict)
    undo: Any = None


@dataclass(frozen=True)
class Fault(ABC):
    """Base class of every fault; subclasses are frozen dataclasses of their parameters."""

    kind: ClassVar[str] = "fault"

    def versions_needed(self) -> int:
        """Model versions the store must hold before this fault can act (a precondition
        the experiment awaits, rather than leaving it to timing)."""
        return 1

    @abstractmethod
    def _inject(self, ctx: FaultContext) -> Changes:
        """Cause the disruption; return what changed and how to undo it."""

    @abstractmethod
    def _revert(self, ctx: FaultContext, changes: Changes) -> None:
        """Undo what ``_inject`` changed; must tolerate the target having moved on."""

    def params(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{self.kind}({args})"

    @final
    def inject(self, ctx: FaultContext) -> Injection:
        # the fault's time is when the change began: a detector may notice it before
        # _inject returns, and TTD must never come out negative
        began, began_wall = time.monotonic(), time.time()
        try:
            changes = self._inject(ctx)
        except FaultError:
            raise
        except Exception as e:
            raise FaultError(f"could not inject {self.describe()}: {e}") from e
        try:
            ctx.journal.record(
                "fault.injected",
                t=began,
                wall=began_wall,
                fault=self.kind,
                params=self.params(),
                seed=ctx.seed,
                changes=changes.record,
                **ctx.annotations,
            )
        except BaseException as e:
            self._undo_unjournaled(ctx, changes, e)
            raise
        return Injection(self, ctx, changes)

    def _undo_unjournaled(self, ctx: FaultContext, changes: Changes, error: BaseException) -> None:
        """Revert an injection whose ``fault.injected`` could not be journaled, at once.

        No caller holds an :class:`Injection` for it (``inject`` raises instead of
        returning one), so nothing else would ever revert it; and a fault the journal does
        not show must not stay applied, or it would disturb what follows with no record of
        why.  An ordinary *error* becomes a FaultError saying whether the revert worked; a
        BaseException (KeyboardInterrupt) is left for the caller to re-raise as it is.
        """
        try:
            self._revert(ctx, changes)
        except Exception as undo:
            still = f"could not revert it either, so it is still applied: {undo}"
            if not isinstance(error, Exception):
                error.add_note(f"chaoskit: {self.describe()} {still}")
                return
            raise FaultError(
                f"{self.describe()}: could not journal the injection ({error}), and {still}"
            ) from error
        if isinstance(error, Exception):
            raise FaultError(
                f"{self.describe()}: could not journal the injection, so it was reverted: {error}"
            ) from error


class Injection:
    """One applied fault; leaving the ``with`` block (however it is left) reverts it."""

    def __init__(self, fault: Fault, ctx: FaultContext, changes: Changes) -> None:
        self.fault = fault
        self.ctx = ctx
        self.changes = changes
        self._reverted = False
        self._lock = threading.Lock()

    @property
    def reverted(self) -> bool:
        return self._reverted

    def revert(self) -> None:
        with self._lock:
            if self._reverted:
                return
            try:
                self.fault._revert(self.ctx, self.changes)
            except FaultError:
                raise
            except Exception as e:
                raise FaultError(f"could not revert {self.fault.describe()}: {e}") from e
            self._reverted = True
            self.ctx.journal.record("fault.reverted", fault=self.fault.kind)

    def __enter__(self) -> Injection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.revert()
