"""The actors' baton in the deterministic simulation (:mod:`.simulation`): a function
run in its own thread one slice at a time, and failpoints that hand control back.

Exactly one thread runs at a time: the scheduler's :meth:`Fiber.switch` resumes an
actor and waits until the actor calls :meth:`Fiber.pause` (at a failpoint, a sleep, an
idle pause) or ends. Nothing else switches threads, so the order of everything the
actors do follows from the scheduler's choices alone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import attrs

from dci6bridge.errors import SimulationError
from dci6bridge.provisioning._failpoints import FailpointCrash, Failpoints

__all__ = ["FINAL", "Fiber", "Hooks", "Message", "Stop"]


class Stop(BaseException):
    """Unwinds an actor's thread at the end of a run."""


@attrs.frozen
class Message:
    """What an actor says when it hands control back."""

    kind: str  # hit, sleep, idle, done, crashed, stopped, error
    point: str = ""
    seconds: float = 0.0
    error: BaseException | None = None


#: What an actor says when its thread ends.
FINAL = frozenset({"done", "crashed", "stopped", "error"})


class Fiber:
    """A function run in its own thread one slice at a time: :meth:`switch` runs it
    until it calls :meth:`pause` (or returns); exactly one of the two threads runs."""

    def __init__(self, name: str, body: Callable[[], None], timeout: float) -> None:
        self.name = name
        self._timeout = timeout
        self._body = body
        self._go = threading.Semaphore(0)
        self._back = threading.Semaphore(0)
        self._reply = "go"
        self._message = Message("done")
        self._thread = threading.Thread(target=self._main, name=f"sim-{name}", daemon=True)
        self.started = False
        self.finished = False
        #: switched to and not back yet (only after a timeout, seen from outside)
        self.running = False

    def _main(self) -> None:
        self._go.acquire()
        try:
            self._check_reply("start")
            self._body()
            message = Message("done")
        except FailpointCrash as exc:
            message = Message("crashed", point=exc.point)
        except Stop:
            message = Message("stopped")
        except BaseException as exc:  # reported as a finding, never swallowed
            message = Message("error", error=exc)
        self.finished = True
        self._message = message
        self._back.release()

    def switch(self, reply: str = "go") -> Message:
        """Run the fiber until it pauses; ``reply`` is what its pending :meth:`pause`
        does: ``go`` returns, ``crash`` raises ``FailpointCrash``, ``stop`` unwinds."""
        if self.finished:
            raise SimulationError(f"actor {self.name} has finished")
        self._reply = reply
        if not self.started:
            self.started = True
            self._thread.start()
        self._go.release()
        self.running = True
        if not self._back.acquire(timeout=self._timeout):
            # left running: stopping it would only wait for it again
            raise SimulationError(
                f"actor {self.name} ran {self._timeout:g} s of real time without "
                "yielding: it blocked outside the simulation"
            )
        self.running = False
        message = self._message
        if message.kind in FINAL:
            self._thread.join(timeout=self._timeout)
        return message

    def pause(self, message: Message) -> None:
        """Hand control back to the scheduler (called in the fiber's own thread)."""
        self._message = message
        self._back.release()
        self._go.acquire()
        self._check_reply(message.point)

    def _check_reply(self, point: str) -> None:
        if self._reply == "crash":
            raise FailpointCrash(point)
        if self._reply == "stop":
            raise Stop()


class Hooks(Failpoints):
    """Failpoints that yield to the scheduler at every point the orchestrator passes."""

    def __init__(self, fiber: Callable[[], Fiber]) -> None:
        super().__init__()
        self._fiber = fiber

    def hit(self, point: str) -> None:
        """Yield at ``point``; the scheduler may crash the actor here."""
        self._fiber().pause(Message("hit", point=point))
