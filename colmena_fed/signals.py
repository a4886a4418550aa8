"""Holding SIGINT and SIGTERM back while the main thread is inside the dispatcher.

Python runs signal handlers in the main thread, between any two bytecodes: a Ctrl+C that raised
KeyboardInterrupt halfway through a transition would leave a task half placed. The main thread
applies events whenever it posts one (``send_inputs``, ``get_result``), so a task server that
starts in the main thread wraps the handlers of these two signals once, for as long as it runs:
while the main thread applies events a signal is only noted, and the original handler runs as
soon as the thread is out. Swapping the handlers around every batch of events instead would
cost more than the rest of a task's dispatch.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

#: The signals held back.
HELD = (signal.SIGINT, signal.SIGTERM)

Handler = Callable[[int, FrameType | None], Any]


class SignalHold:
    """Wraps the main thread's handlers of `HELD`; `held` says when to note rather than run."""

    def __init__(self) -> None:
        """Wrap nothing yet (`install`)."""
        #: True while the main thread is inside the dispatcher: signals then wait.
        self.held = False
        self._originals: dict[int, Handler] = {}
        self._caught: list[tuple[int, FrameType | None]] = []

    def install(self) -> None:
        """Wrap the Python handlers of `HELD` (from the main thread; elsewhere, nothing)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in HELD:
            handler = signal.getsignal(signum)
            if callable(handler):
                self._originals[signum] = handler
                signal.signal(signum, self._handle)

    def uninstall(self) -> None:
        """Put back the handlers this wrapped, where nobody has replaced the wrapper since.

        A wrapper someone put back later still hands every signal to the handler it wrapped.
        """
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, handler in self._originals.items():
            if signal.getsignal(signum) == self._handle:
                signal.signal(signum, handler)

    def release(self) -> None:
        """Run the handlers of the signals noted while held (the main thread is out now).

        Every one runs; the first exception one raised (KeyboardInterrupt) is raised after.
        """
        caught, self._caught = self._caught, []
        failure: BaseException | None = None
        for signum, frame in caught:
            try:
                self._originals[signum](signum, frame)
            except BaseException as exc:
                failure = failure or exc
        if failure is not None:
            raise failure

    @property
    def pending(self) -> bool:
        """Whether a signal arrived while held."""
        return bool(self._caught)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.held:
            self._caught.append((signum, frame))
        else:
            self._originals[signum](signum, frame)
