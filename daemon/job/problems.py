"""What is wrong with one job file, collected so that one error reports all of it."""

from __future__ import annotations

from daemon.errors import JobError, ReferenceMissing


class Problems:
    """Collects what is wrong with a job file, then raises one error listing all of it."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.items: list[tuple[str, str]] = []

    def add(self, what: str, fix: str) -> None:
        self.items.append((what, fix))

    def raise_if_any(self, error: type[JobError] | type[ReferenceMissing] = JobError) -> None:
        if not self.items:
            return
        whats = [what for what, _ in self.items]
        fixes = list(dict.fromkeys(fix for _, fix in self.items))
        if len(whats) == 1:
            message = f"{self.label}: {whats[0]}."
        else:
            message = f"{self.label} has {len(whats)} problems: " + "; ".join(whats) + "."
        raise error(message, hint=" ".join(fixes))
