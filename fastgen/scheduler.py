"""Which request runs in which slot: the queue, admission into free slots, finished rows.

Host bookkeeping only (no tensors, no device). Requests wait in a queue, longest prompt first, so a
prefill batch pads little; :meth:`Scheduler.admit` fills every free slot from the queue, lowest slot
first; :meth:`Scheduler.retire` frees the slots whose rows finished, so the next admission refills
them (continuous batching). Between the two, the scheduler tracks an upper bound of each live slot's
next cache position, from which the engine picks how much of the cache a decode step attends over.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from fastgen.sampling import Mode
from fastgen.types import Request

__all__ = ["Scheduler"]


class Scheduler:
    """The slots of one ``generate`` call: who owns each, and how far each live row may have reached."""

    def __init__(self, requests: Sequence[Request], slots: int) -> None:
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self.requests = requests
        self.queue = deque(sorted(range(len(requests)), key=lambda i: -len(requests[i].prompt_ids)))
        self.owner: list[int | None] = [None] * slots  # the request index each slot decodes
        # An upper bound of each live slot's next position: the prompt length at admission, one more
        # per decode step, never past the last position its budget can write.
        self.reach = [0] * slots
        self._cap = [0] * slots

    @property
    def waiting(self) -> int:
        """Requests not yet admitted."""
        return len(self.queue)

    def busy(self) -> bool:
        """Whether any request is queued or decoding."""
        return bool(self.queue) or any(o is not None for o in self.owner)

    def live(self) -> list[int]:
        """The slots decoding a request, in slot order."""
        return [slot for slot, o in enumerate(self.owner) if o is not None]

    def admit(self) -> list[tuple[int, int]]:
        """Move queued requests into the free slots; ``(slot, request index)`` pairs, longest prompt
        first, into the lowest free slots (empty when no slot is free or nothing waits)."""
        free = [slot for slot, o in enumerate(self.owner) if o is None]
        taken = [self.queue.popleft() for _ in range(min(len(free), len(self.queue)))]
        pairs = list(zip(free, taken, strict=False))
        for slot, i in pairs:
            r = self.requests[i]
            self.owner[slot] = i
            self.reach[slot] = len(r.prompt_ids)
            self._cap[slot] = len(r.prompt_ids) + r.max_new_tokens - 1
        return pairs

    def mode(self) -> Mode:
        """The sampling mode the live rows need (one graph per mode)."""
        live = [self.requests[o] for o in self.owner if o is not None]
        return Mode.of([r.temperature for r in live], [r.top_p for r in live])

    def top_position(self) -> int:
        """The highest position a live slot may write next (0 when none is live)."""
        return max((self.reach[slot] for slot in self.live()), default=0)

    def advance(self) -> None:
        """One decode step ran: every live slot moved one position on (up to its budget's last)."""
        for slot in self.live():
            self.reach[slot] = min(self.reach[slot] + 1, self._cap[slot])

    def retire(self, done: Sequence[bool]) -> list[tuple[int, int]]:
        """Free the live slots whose ``done`` flag is set; their ``(slot, request index)`` pairs."""
        finished: list[tuple[int, int]] = []
        for slot, o in enumerate(self.owner):
            if o is not None and done[slot]:
                finished.append((slot, o))
                self.owner[slot] = None
        return finished
