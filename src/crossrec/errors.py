"""The crossrec exception tree.

Every error crossrec raises on purpose derives from :class:`CrossrecError` and also from
the built-in exception a caller would naturally catch, so ``except ValueError`` keeps working::

    CrossrecError (Exception)
    ├── ConfigError (ValueError)            a config/spec field is invalid or unknown
    ├── DataError (ValueError)              input data is malformed or inconsistent
    │   └── BadRowError                     one row of a file: names file, line and field
    ├── DatasetNotFoundError (FileNotFoundError)   a data set is absent; says how to get it
    ├── ArtifactError (ValueError)          an artifact directory is unusable
    │   └── IntegrityError                  a checksum or tensor table does not match the manifest
    ├── FetchError (RuntimeError)           a download/fetch failed through every route
    ├── BudgetNotMetError (RuntimeError)    no compression candidate stays inside the accuracy budget
    ├── BackendError (RuntimeError)         a runtime engine is missing or failed (onnxruntime, inductor, CUDA)
    └── ServeError (RuntimeError)           serving could not answer a request
        ├── ReplicaError                    a replica crashed, hung or timed out (the router retries elsewhere)
        ├── OverloadedError                 admission control refused the request; carries ``retry_after_s``
        └── DeadlineExceededError (TimeoutError)   the request's deadline passed before it was computed

Messages say what was expected, what came, and what to try. The library never prints or exits;
only :mod:`crossrec.cli` turns these into exit codes.
"""

from __future__ import annotations


class CrossrecError(Exception):
    """Base of every error crossrec raises on purpose."""


class ConfigError(CrossrecError, ValueError):
    """A config or spec is invalid: names the field, the value and what is allowed."""


class DataError(CrossrecError, ValueError):
    """Input data is malformed or inconsistent with its schema."""


class BadRowError(DataError):
    """One malformed row of an input file.

    >>> e = BadRowError("train.txt", 12, "I3", "'x1' is not an integer")
    >>> str(e).startswith("train.txt:12: field I3")
    True
    """

    def __init__(self, path: str, line: int | None, field: str | None, problem: str,
                 hint: str = "fix the row, or pass --on-bad-row skip to skip and count such rows"):
        self.path, self.line, self.field, self.problem = str(path), line, field, problem
        where = f"{path}:{line if line is not None else '?'}"
        what = f" field {field}:" if field else ""
        super().__init__(f"{where}:{what} {problem} ({hint})")


class DatasetNotFoundError(CrossrecError, FileNotFoundError):
    """A data set's files are absent; the message says how to obtain them."""


class ArtifactError(CrossrecError, ValueError):
    """An artifact directory is missing files or cannot be used."""


class IntegrityError(ArtifactError):
    """An artifact file's checksum or tensor table does not match its manifest."""


class FetchError(CrossrecError, RuntimeError):
    """A fetch failed through every available route; lists each route's failure."""


class BudgetNotMetError(CrossrecError, RuntimeError):
    """No candidate met the accuracy budget; ``trials`` holds every measured candidate."""

    def __init__(self, message: str, trials: list | None = None):
        super().__init__(message)
        self.trials = trials or []


class BackendError(CrossrecError, RuntimeError):
    """A runtime's engine is missing or failed: onnxruntime not installed, inductor could not
    compile, no CUDA device. The message says what to install or which runtime to use instead."""


class ServeError(CrossrecError, RuntimeError):
    """Serving could not answer a request (no healthy replica, server shutting down, ...)."""


class ReplicaError(ServeError):
    """A replica crashed, hung or timed out; the router retries the request on another replica."""


class OverloadedError(ServeError):
    """Admission control refused a request because the queues are full.

    >>> e = OverloadedError("queue full: 4096 items waiting", retry_after_s=0.5)
    >>> e.retry_after_s
    0.5
    """

    def __init__(self, message: str, *, retry_after_s: float = 1.0):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceededError(ServeError, TimeoutError):
    """A request's deadline passed before it could be computed (it was not computed)."""
