"""Errors of the storage layer: each names the store, cycle, variable or file at fault."""


class StoreError(Exception):
    """Base class of storage errors."""


class StoreMismatchError(StoreError):
    """An existing store was made for another model, observation layout or config."""


class StoreLockedError(StoreError):
    """Another writer holds the store's lock."""


class CycleError(StoreError, ValueError):
    """A cycle point that the store cannot take (before the origin, off the interval)."""


class ObservationError(StoreError, ValueError):
    """An observation file or its contents cannot be used."""
