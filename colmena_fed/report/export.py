"""``--export FILE.jsonl``: one `Result` per line, as Colmena users' notebooks read them.

Each ended task's record, rebuilt from the journal (its inputs from when it was submitted, if
it kept them), written with ``Result.model_dump_json``: numpy arrays as lists, values JSON
cannot hold as their repr. Only tasks that ended in the window are written, in the order they
ended.
"""

from __future__ import annotations

import os
from pathlib import Path

from colmena_fed.journal import FILE_NAME, read, read_deliveries
from colmena_fed.records import rebuild, unpack
from colmena_fed.report.load import load_record
from colmena_fed.report.numbers import Window


def export(run_dir: Path, window: Window, path: Path) -> int:
    """Write the ended tasks of ``run_dir`` in ``window`` to ``path``; how many were written."""
    contents = read(run_dir / FILE_NAME, live=True)
    names = contents.meta["fields"]
    inputs: dict[str, tuple[object, object]] = {}
    delivered = dict(reversed(read_deliveries(run_dir)))  # the first delivery of each
    written = 0
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(descriptor, "w") as out:
        for task_id, kind, at, *_, record in contents.events:
            if record is None:
                continue
            if kind == "submitted":
                fields = unpack(load_record(record)[0], names)
                inputs[task_id] = (fields["args"], fields["kwargs"])
            elif kind == "ended" and window.start <= at <= window.end:
                fields = unpack(load_record(record), names)
                keep = fields.get("keep_inputs", True)
                args, kwargs = inputs.pop(task_id, ((), {}))
                fields["args"], fields["kwargs"] = (args, kwargs) if keep else ((), {})
                result = rebuild(fields)
                result.timestamps.delivered = delivered.get(task_id)
                out.write(result.model_dump_json() + "\n")
                written += 1
    return written
