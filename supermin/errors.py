"""Errors are data until the CLI edge: each carries a one-line message and a hint."""

from __future__ import annotations


class SuperminError(Exception):
    """Base of every error the CLI reports as one line."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(SuperminError):
    """The command line itself is wrong."""


class SourceError(SuperminError):
    """A package source cannot be read or recognised."""


class ResolveError(SuperminError):
    """A requested package or one of its dependencies cannot be satisfied."""


class ArchiveError(SuperminError):
    """A package archive or input tarball is corrupt, truncated or hostile."""


class InputError(SuperminError):
    """A supermin.d input directory cannot be read."""


class OutputError(SuperminError):
    """The output cannot be written."""


class KernelError(SuperminError):
    """No kernel for a bootable output, or one that cannot be read."""
