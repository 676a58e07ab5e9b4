"""crossrec: cross-hardware inference optimization for recommendation models.

Importing crossrec stays lean: it loads no serving stack, Ray, ONNX or CUDA. Import the
submodules you need (``crossrec.data``, ``crossrec.models``, ``crossrec.train``,
``crossrec.artifact``).
"""

__version__ = "0.1.0"

from crossrec.errors import (
    ArtifactError,
    BackendError,
    BadRowError,
    BudgetNotMetError,
    ConfigError,
    CrossrecError,
    DataError,
    DatasetNotFoundError,
    DeadlineExceededError,
    FetchError,
    IntegrityError,
    OverloadedError,
    ReplicaError,
    ServeError,
)

__all__ = [
    "ArtifactError",
    "BackendError",
    "BadRowError",
    "BudgetNotMetError",
    "ConfigError",
    "CrossrecError",
    "DataError",
    "DatasetNotFoundError",
    "DeadlineExceededError",
    "FetchError",
    "IntegrityError",
    "OverloadedError",
    "ReplicaError",
    "ServeError",
    "__version__",
]
