"""Policy load errors, each pointing at a file, a line, a policy and a field."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

# Where a problem is, relative to the field (field validators) or model (model validators).
Location = tuple[str | int, ...]


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


def raise_each(title: str, problems: Sequence[tuple[Location, str]], *, types: Sequence[str] = ()) -> None:
    """Raise every problem a validator found, each at its own location, so that the
    loader reports each at its own line; a ValueError would stop at the first and
    point at the enclosing field. `types` keeps the pydantic error types of problems
    taken from an earlier error (the first len(types) problems); the rest are "policy"."""
    if problems:
        kinds = [*types, *["policy"] * (len(problems) - len(types))]
        raise ValidationError.from_exception_data(title, [
            InitErrorDetails(type=PydanticCustomError(kind, "{message}", {"message": message}),
                             loc=loc, input=None)
            for (loc, message), kind in zip(problems, kinds)])


def problem(check: object, *args: object) -> str | None:
    """The ValueError message of `check(*args)`, or None when it passes."""
    try:
        check(*args)  # type: ignore[operator]
    except ValueError as exc:
        return str(exc)
    return None
