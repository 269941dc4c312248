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

    seen = set()
    while error is not None and id(error) not in seen:  # a chain of causes can loop back
        seen.add(id(error))
        text = str(error)
        if isinstance(error, MlflowException) and (
            "Max retries exceeded" in text or "Connection refused" in text or "Read timed out" in text
        ):
            return True
        error = error.__cause__ or error.__context__
    return False


def denied(error: BaseException) -> str | None:
    """What the MLflow server said when it refused the user (401: not authenticated; 403: their role does not
    allow it), or None for any other error."""
    from mlflow.exceptions import MlflowException

    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, MlflowException) and error.error_code in ("PERMISSION_DENIED", "UNAUTHENTICATED"):
            if error.error_code == "UNAUTHENTICATED":
                return "not authenticated: source your credentials (the file `edgekd team user add` wrote for you)"
            return str(error).split("Response body: ", 1)[-1].strip("'")
        error = error.__cause__ or error.__context__
    return None


def stopped(error: BaseException | None) -> bool:
    """Whether `error` is a stop by SIGTERM or SIGINT (flows/infra/signals.py's KeyboardInterrupt, or Prefect's
    TerminationSignal, which its SIGTERM bridge raises inside a running flow or task) rather than a failure."""
    from prefect.exceptions import TerminationSignal

    return isinstance(error, KeyboardInterrupt | TerminationSignal)
