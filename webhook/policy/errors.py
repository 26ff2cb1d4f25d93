"""Policy load errors, each pointing at a file, a line, a policy and a field."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PolicyError:
    file: str
    line: int | None
    message: str
    policy: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        what = "/".join(p for p in (self.policy, self.field) if p)
        return f"{where}: {what}: {self.message}" if what else f"{where}: {self.message}"


class PolicyLoadError(Exception):
    def __init__(self, errors: list[PolicyError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))




class PolicyDirectoryError(PolicyLoadError):
    """The policy directory itself is missing, not a directory or unreadable: the
    command line treats it as a usage error, not as invalid policies."""
