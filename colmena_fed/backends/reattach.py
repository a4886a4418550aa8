"""Claiming, after a resume, the tasks a dead thinker left running at `globus` sites.

Globus Compute keeps a run's tasks, and their results, under the run's task group whatever
happens to the thinker. A resumed run reloads the group once (``Executor.reload_tasks``),
before it sends anything new, and matches what it finds to the tasks its journal says were in
flight: by Globus Compute's id where the journal had it, otherwise by the colmena-fed task id
every result carries (`colmena_fed.worker.run_packed`). Nothing found is run twice.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from globus_compute_sdk import Executor

from colmena_fed.backends import OutcomeCallback
from colmena_fed.errors import SiteError
from colmena_fed.models import Result
from colmena_fed.worker import read_report

if TYPE_CHECKING:
    from colmena_fed.backends.globus import GlobusBackend

#: A task a resumed run looks for in its task group: the task, its site, its Globus Compute id
#: if the journal had it, and where its outcome goes.
Claim = tuple[Result, str, "str | None", OutcomeCallback]


def reattach(
    executor: Executor,
    claims: Sequence[Claim],
    known: Collection[str],
    sites: Mapping[str, GlobusBackend],
) -> None:
    """Match the tasks of ``executor``'s task group to ``claims`` and hand over their outcomes.

    A task whose Globus Compute id the journal had is matched by that id. One sent just before
    the thinker died is matched by the colmena-fed id its result carries: every task of the
    group whose id is not ``known`` to the journal is watched until it ends. A task the service
    does not have, or that no result matched once all those ended, fails as a site failure
    (``NotReattached``), so the dispatcher sends it again by its retry rules.
    """
    by_id = {remote: claim for claim in claims if (remote := claim[2]) is not None}
    unmatched = {claim[0].task_id: claim for claim in claims if claim[2] is None}
    try:
        futures = list(executor.reload_tasks())
    except Exception as exc:
        for claim in claims:
            _not_found(claim, f"cannot reload this run's tasks from Globus Compute: {exc}")
        return
    strangers: list[Future[Any]] = []
    for future in futures:
        remote = str(future.task_id)
        found = by_id.pop(remote, None)
        if found is not None:
            future.add_done_callback(functools.partial(_claimed, sites, found))
        elif unmatched and remote not in known:
            strangers.append(future)
    for claim in by_id.values():
        _not_found(claim, f"Globus Compute does not know task {claim[2]} of this run's task group")
    if unmatched:
        _Matcher(sites, unmatched, strangers).watch()


def _claimed(sites: Mapping[str, GlobusBackend], claim: Claim, future: Future[Any]) -> None:
    claim[3](sites[claim[1]].outcome(future))


def _not_found(claim: Claim, message: str) -> None:
    claim[3](SiteError(claim[1], "NotReattached", message))


class _Matcher:
    """Matches tasks with no known Globus Compute id to the results of the group's others."""

    def __init__(
        self,
        sites: Mapping[str, GlobusBackend],
        unmatched: dict[str, Claim],
        futures: list[Future[Any]],
    ) -> None:
        self.sites, self.unmatched, self.futures = sites, unmatched, futures
        self.left = len(futures)
        self.lock = threading.Lock()

    def watch(self) -> None:
        if not self.futures:
            self._give_up()
        for future in self.futures:
            future.add_done_callback(self._ended)

    def _ended(self, future: Future[Any]) -> None:
        try:
            task_id = read_report(future.result()).task_id
        except Exception:  # a task that failed remotely carries no id of ours
            task_id = None
        with self.lock:
            claim = self.unmatched.pop(task_id, None) if task_id is not None else None
            self.left -= 1
            last = self.left == 0
        if claim is not None:
            _claimed(self.sites, claim, future)
        if last:
            self._give_up()

    def _give_up(self) -> None:
        with self.lock:
            left, self.unmatched = list(self.unmatched.values()), {}
        for claim in left:
            _not_found(claim, f"task {claim[0].task_id} was not found in this run's task group")
