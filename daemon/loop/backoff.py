"""The one backoff of the project: a wait that doubles with each try, up to a cap.

Retries (`run` and `once`), pauses and the disk-full probes all grow this way.
"""

from __future__ import annotations

from daemon.config import RetryConfig


def doubling(first: float, attempt: int, *, cap: float) -> float:
    """`first` seconds at attempt 1, twice that at attempt 2, and so on, at most `cap`."""
    return float(min(first * 2 ** (attempt - 1), cap))


def retry_delay(retry: RetryConfig, attempt: int) -> float:
    """Seconds before try `attempt + 1` of a job that failed for a passing reason."""
    return doubling(retry.backoff_sec, attempt, cap=retry.max_backoff_sec)
