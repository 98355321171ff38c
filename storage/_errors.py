"""Errors of the storage layer: each names the store, cycle, variable or file at fault, and
carries the command line's exit code for it (`exit_code`)."""


class StoreError(Exception):
    """Base class of storage errors: the store cannot be read or written (exit code 4)."""

    exit_code = 4


class StoreNotFoundError(StoreError):
    """No store where one was named (a path or URL given by the user: exit code 2)."""

    exit_code = 2


class StoreMismatchError(StoreError):
    """An existing store was made for another model, observation layout or config."""

    exit_code = 2


class StoreLockedError(StoreError):
    """Another writer holds the store's lock (exit code 3)."""

    exit_code = 3


class CycleError(StoreError, ValueError):
    """A cycle point that the store cannot take (before the origin, off the interval), or a
    cycle that cannot run yet (its previous cycle is not done)."""

    exit_code = 2


class ObservationError(StoreError, ValueError):
    """An observation file or its contents cannot be used."""

    exit_code = 2


class StoreCorruptError(StoreError):
    """A store whose contents cannot be trusted: a chunk that does not decode or does not
    match the checksum written at its commit, a damaged lock, an interrupted creation
    (exit code 4)."""

    exit_code = 4
