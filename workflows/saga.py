"""Compensations, run in reverse order when a job fails or is cancelled.

Entries are named so a step that is redone (the root volume on another pool) replaces its undo
instead of stacking a second one, and so the undos of one placement attempt (the VM on that
host, the capacity held there) can be unwound alone before the next host is tried.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from temporalio import workflow

Undo = Callable[[], Awaitable[object]]


class Saga:
    def __init__(self) -> None:
        self._undos: list[tuple[str, Undo]] = []
        self.failures: list[str] = []

    def add(self, name: str, undo: Undo) -> None:
        self._undos = [(n, u) for n, u in self._undos if n != name]
        self._undos.append((name, undo))

    def pending(self) -> list[str]:
        return [name for name, _ in self._undos]

    async def unwind(self, only: Iterable[str] | None = None) -> None:
        """Run the undos (all, or only the named ones) newest first, and forget them.

        An undo that still fails after its retries is recorded, not raised: the remaining
        undos must still run, and the job's error text names what could not be given back.
        """
        chosen = set(only) if only is not None else None
        to_run = [(n, u) for n, u in self._undos if chosen is None or n in chosen]
        self._undos = [(n, u) for n, u in self._undos if (n, u) not in to_run]
        for name, undo in reversed(to_run):
            try:
                await undo()
            except Exception as error:
                workflow.logger.error("undo %s failed: %s", name, error)
                self.failures.append(f"{name}: {error}")

    def forget(self) -> None:
        """Past the point of no return: what was done stays done, nothing is to be undone."""
        self._undos = []
