"""Colmena's ``colmena.models.methods``: `PythonMethod`, `PythonGeneratorMethod`.

The other kinds are refused for now.
"""

from colmena_fed.colmena import refused
from colmena_fed.methods import PythonGeneratorMethod, PythonMethod

ColmenaMethod = refused(
    "ColmenaMethod",
    "a method is a Python function, given to the task server bare or as "
    "Method(function, slot='gpu', name=..., max_retries=...) (colmena_fed.Method)",
)
ExecutableMethod = refused(
    "ExecutableMethod",
    "colmena-fed does not launch executables or MPI programs itself yet: call the program "
    "with subprocess.run inside a Python method",
)

__all__ = ["ColmenaMethod", "ExecutableMethod", "PythonGeneratorMethod", "PythonMethod"]
