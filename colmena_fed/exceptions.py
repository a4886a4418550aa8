"""Colmena's exceptions, with Colmena's meaning (``colmena.exceptions``).

Both derive from `BaseException`, as Colmena's do, so that an agent's ``except Exception``
does not swallow the signal to stop.
"""

from __future__ import annotations


class KillSignalException(BaseException):
    """The queues were told to stop (`TaskQueues.send_kill_signal`, or the thinker stopped).

    A ``get_result`` that would block raises it instead: an agent waiting for results with no
    timeout wakes when the campaign ends.
    """


class TimeoutException(BaseException):
    """``get_result`` waited its ``timeout`` and no result came."""
