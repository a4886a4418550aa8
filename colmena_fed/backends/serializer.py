"""Globus Compute's serializer, with task inputs pickled by the standard (C) pickler.

Globus Compute writes inputs as ``DillDataBase64``: a pickle stream written by dill, in base
64. dill's pickler is the pure-Python one: it was 13 % of the thinker's time in a profile of
bench/overhead.py's bursts (docs/benchmarks.md, 2026-12-04). A worker reads the stream with
``dill.loads``, which reads any pickle stream, so inputs that the C pickler writes the same way
dill would are written by it, in the same format, and load unchanged on every worker.

The two differ only in what dill pickles by value: functions and classes defined in
``__main__`` (a campaign script, a notebook) and objects the C pickler cannot find by name
(lambdas, local functions). The C pickler refuses the latter by itself, and `_ByName` refuses
the former, so those inputs are left to dill as before.
"""

from __future__ import annotations

import base64
import io
import pickle
import types
from typing import Any

import dill
from globus_compute_sdk.serialize import ComputeSerializer, DillDataBase64


class _ByName(pickle.Pickler):
    """The C pickler, refusing functions and classes of ``__main__``."""

    def reducer_override(self, obj: Any) -> Any:
        """Refuse what only dill can send; leave everything else to the standard reducers."""
        if isinstance(obj, (type, types.FunctionType)) and obj.__module__ == "__main__":
            raise pickle.PicklingError(f"{obj.__qualname__} of __main__ travels by value")
        return NotImplemented


class FastSerializer(ComputeSerializer):
    """A `ComputeSerializer` that writes data with the C pickler where dill would write it the same.

    Functions are serialized as Globus Compute serializes them; so is data the C pickler
    cannot write as dill would. What it writes, any `ComputeSerializer` reads.
    """

    def serialize(self, data: Any) -> str:
        """Globus Compute's string form of ``data``."""
        if not callable(data) and type(self.data_serializer) is DillDataBase64:
            written = _pickled_by_name(data)
            if written is not None:
                return written
        return super().serialize(data)


def _pickled_by_name(data: Any) -> str | None:
    """``data`` as ``DillDataBase64`` writes it, by the C pickler; None if it needs dill."""
    stream = io.BytesIO()
    try:
        _ByName(stream, protocol=dill.settings["protocol"]).dump(data)
    except Exception:  # dill gets its chance (and raises its own error if it fails too)
        return None
    return DillDataBase64.identifier + base64.encodebytes(stream.getvalue()).decode()
