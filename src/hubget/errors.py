"""Exception hierarchy. Every expected failure is a HubgetError with a CLI exit code."""

from __future__ import annotations


class ExitCode:
    OK = 0
    ERROR = 1
    USAGE = 2
    NOT_FOUND = 3
    AUTH = 4
    INTEGRITY = 5
    NETWORK = 6
    DISK = 7
    INTERRUPTED = 130


class HubgetError(Exception):
    """Base class: a failure the user should see as one clear line, not a traceback."""

    exit_code: int = ExitCode.ERROR


class UsageError(HubgetError):
    exit_code = ExitCode.USAGE


class NotFoundError(HubgetError):
    exit_code = ExitCode.NOT_FOUND


class RepoNotFoundError(NotFoundError):
    pass


class RevisionNotFoundError(NotFoundError):
    pass


class EntryNotFoundError(NotFoundError):
    pass


class AuthError(HubgetError):
    """401/403: a token is missing, wrong, or lacks access."""

    exit_code = ExitCode.AUTH


class GatedRepoError(AuthError):
    pass


class IntegrityError(HubgetError):
    """Bytes on disk do not match the hash or size the hub announced."""

    exit_code = ExitCode.INTEGRITY


class NetworkError(HubgetError):
    """The remote could not be reached or kept failing after retries."""

    exit_code = ExitCode.NETWORK


class ProtocolError(NetworkError):
    """The remote answered something a correct server never sends (bad Range answer, bad JSON...)."""


class UnsafePathError(HubgetError):
    """A server-supplied path would escape the destination or is otherwise hostile."""

    exit_code = ExitCode.INTEGRITY


class DiskError(HubgetError):
    """Not enough free space, or a write failed (ENOSPC, EIO...)."""

    exit_code = ExitCode.DISK


class OfflineError(NotFoundError):
    """Offline mode was asked for and the files are not on disk."""


class Interrupted(HubgetError):
    exit_code = ExitCode.INTERRUPTED
