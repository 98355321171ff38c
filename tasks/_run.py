"""A run of cycles: one experiment and its store, held open as the writer (with the lock)
for as long as the run lasts, and handed explicitly to every step and cycle of it."""

import contextlib

import storage


class CycleHalted(RuntimeError):
    """The gate rejected a cycle's analysis under the `halt` policy (exit code 1)."""

    exit_code = 1


class Run:
    """The experiment (`exp`) and its store (`store`, open for writing) of one run, and
    the Dask cluster its member forecasts run on (`compute.member_forecasts: dask`:
    `members()`, reached on the first ensemble forecast and closed with the run).

    A plain object on purpose: Prefect records a flow's parameters, and this one is shown
    as `<Run>` rather than serialised (it holds the store's lock and the core objects)."""

    __slots__ = ("exp", "store", "_pool")

    def __init__(self, exp, store: storage.CycleStore):
        self.exp, self.store, self._pool = exp, store, None

    def members(self):
        """The run's `MemberPool`, or `None` when members are forecast in one `vmap` here."""
        compute = self.exp.cfg.compute
        if compute.member_forecasts != "dask":
            return None
        if self._pool is None:
            from ._members import MemberPool

            self._pool = MemberPool(compute.dask, self.exp.config_path)
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __repr__(self) -> str:
        return f"Run({self.exp.name}, {self.store.url})"


def open_store(exp, *, writable: bool = True) -> storage.CycleStore:
    """The experiment's store: as its writer (created if it does not exist yet, checked
    against the experiment's layout and identity), or read-only."""
    if not writable:
        return storage.CycleStore.open(exp.store_url, storage_options=exp.storage_options)
    return storage.CycleStore.open_or_create(
        exp.store_url,
        exp.layout,
        exp.cfg.cycling.origin,
        exp.cfg.cycling.interval,
        experiment=exp.name,
        config_text=exp.identity,
        storage_options=exp.storage_options,
        block=exp.cfg.store.block,
        field_chunk=exp.cfg.store.field_chunk,
    )


@contextlib.contextmanager
def open_run(exp):
    """Opens (or creates) the experiment's store as its writer for a run; the lock is
    released when the run ends."""
    store = open_store(exp)
    run = Run(exp, store)
    try:
        yield run
    finally:
        try:
            run.close()
        finally:
            store.close()


def checked_store(exp) -> storage.CycleStore | None:
    """The experiment's existing store, read-only, checked as a run opens it (layout,
    identity, cycle axis: `storage.StoreMismatchError` naming what differs); None when
    there is no store yet."""
    try:
        store = storage.CycleStore.open(
            exp.store_url,
            layout=exp.layout,
            config_text=exp.identity,
            storage_options=exp.storage_options,
        )
    except storage.StoreNotFoundError:
        return None
    if store.axis != exp.axis:
        raise storage.StoreMismatchError(
            f"store {exp.store_url} cycles from {store.attrs.get('cycle_origin')} every "
            f"{store.attrs.get('cycle_interval')}, this config from {exp.cfg.cycling.origin} "
            f"every {exp.cfg.cycling.interval}"
        )
    return store


def all_done(exp, first, last) -> int | None:
    """The number of cycles `first … last` (cycle points) when the experiment's store holds
    every one as done, else `None` — also when the store is missing, was made for another
    experiment or cannot be read: a run finds and reports that. Reads the store only."""
    try:
        store = checked_store(exp)
        if store is None:
            return None
        todo = store.not_done(first.time, last.time)
    except Exception:
        return None
    return None if len(todo) else last.index - first.index + 1
