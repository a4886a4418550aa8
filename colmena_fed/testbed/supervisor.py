"""The background process behind ``colmena-fed testbed up``: holds a `Testbed` until told to stop.

Endpoint daemons exit when the process that started them does, so one long-lived process must
own the testbed. This one starts it, writes a sites YAML and a state file (``testbed.json``)
for ``testbed status`` and ``testbed down``, restarts any part that dies (as a service manager
would), and stops everything on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from colmena_fed.errors import ColmenaFedError
from colmena_fed.testbed.bed import Testbed, write_sites
from colmena_fed.testbed.cli import STATE_FILE

log = logging.getLogger(__name__)


def write_state(bed: Testbed, sites_path: Path) -> None:
    """Record the testbed's processes and endpoints (replaced atomically)."""
    state: dict[str, Any] = {
        "pid": os.getpid(),
        "service_pid": bed.service_pid,
        "sites": str(sites_path),
        "endpoints": {
            name: {"endpoint_id": endpoint_id, "pid": bed.daemons[name].pid}
            for name, endpoint_id in bed.endpoints.items()
        },
    }
    path = bed.directory / STATE_FILE
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(state, indent=2))
    partial.replace(path)


def main() -> None:
    """Command line (used by ``colmena-fed testbed up``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--sites-out", type=Path, required=True)
    parser.add_argument("--endpoints", type=Path, nargs="+", required=True)
    parser.add_argument("--pythonpath", type=Path, nargs="*", default=[])
    parser.add_argument("--heartbeat-period", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    stopping = threading.Event()

    def interrupt(*_: Any) -> None:
        raise KeyboardInterrupt  # while starting: bed.start stops what it started

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, interrupt)
    bed = Testbed(args.dir, heartbeat_period=args.heartbeat_period)
    try:
        bed.start(args.endpoints, pythonpath=args.pythonpath)
    except ColmenaFedError as exc:
        log.error("the testbed did not start: %s", exc)
        sys.exit(1)
    except KeyboardInterrupt:
        log.info("stopped while starting")
        sys.exit(1)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    try:
        write_sites(args.sites_out, bed.sites())
        write_state(bed, args.sites_out)
        log.info("testbed up: %s", ", ".join(f"{k} {v}" for k, v in bed.endpoints.items()))
        while not stopping.wait(1.0):
            try:
                revived = bed.revive()
            except ColmenaFedError as exc:  # try again at the next round
                log.error("could not restart a part that died: %s", exc)
                continue
            if revived:
                log.warning("restarted after they died: %s", ", ".join(revived))
                write_state(bed, args.sites_out)
    finally:
        (args.dir / STATE_FILE).unlink(missing_ok=True)
        bed.stop()
        log.info("testbed down")


if __name__ == "__main__":
    main()
