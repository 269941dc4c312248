"""What the registry refuses, how to tell a tracking server that stopped answering from one that refused (and
what it said), and a run stopped by a signal from one that failed."""

from __future__ import annotations


class PromotionError(RuntimeError):
    """A promotion, rollback or download the registry refuses; the message says why (exit 4)."""


class IntegrityError(RuntimeError):
    """A registered artifact that does not match the sha256 recorded at registration (exit 4)."""


def unreachable(error: BaseException) -> bool:
    """Whether `error` (or what caused it) is the MLflow tracking server not answering after the client's retries,
    rather than the server refusing a request."""
    from mlflow.exceptions import MlflowException

    signs = ("Max retries exceeded", "Connection refused", "Read timed out")
    return any(isinstance(e, MlflowException) and any(s in str(e) for s in signs) for e in _chain(error))


def denied(error: BaseException) -> str | None:
    """What the MLflow server said when it refused the user (401: not authenticated; 403: their role does not
    allow it), or None for any other error."""
    from mlflow.exceptions import MlflowException

    for e in _chain(error):
        if isinstance(e, MlflowException) and e.error_code == "UNAUTHENTICATED":
            return "not authenticated: source your credentials (the file `edgekd team user add` wrote for you)"
        if isinstance(e, MlflowException) and e.error_code == "PERMISSION_DENIED":
            return str(e).split("Response body: ", 1)[-1].strip("'")
    return None


def _chain(error: BaseException | None):
    """`error`, then what caused it, and so on (a chain of causes can loop back: each once)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def stopped(error: BaseException | None) -> bool:
    """Whether `error` is a stop by SIGTERM or SIGINT (flows/infra/signals.py's KeyboardInterrupt, or Prefect's
    TerminationSignal, which its SIGTERM bridge raises inside a running flow or task) rather than a failure."""
    from prefect.exceptions import TerminationSignal

    return isinstance(error, KeyboardInterrupt | TerminationSignal)
