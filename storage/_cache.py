"""Arrays worth computing once per experiment (a climatological B from a long free run),
kept as `.npy` files at a path or fsspec URL and written atomically (a temporary name
moved into place), so a reader never takes half a file."""

import io

import fsspec
import numpy as np


def read_cached_array(url: str, storage_options: dict | None = None) -> np.ndarray | None:
    """The array at `url`, or None when there is none (or it cannot be read: it is then
    recomputed and rewritten)."""
    fs, path = fsspec.core.url_to_fs(str(url), **(storage_options or {}))
    try:
        with fs.open(path, "rb") as f:
            return np.load(io.BytesIO(f.read()), allow_pickle=False)
    except (FileNotFoundError, ValueError, OSError):
        return None


def write_cached_array(url: str, array, storage_options: dict | None = None) -> None:
    """Writes `array` to `url` (folders created); best effort: a cache that cannot be
    written is not an error, the array is only computed again next time."""
    fs, path = fsspec.core.url_to_fs(str(url), **(storage_options or {}))
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    tmp = f"{path}.partial"
    try:
        parent = path.rsplit("/", 1)[0] if "/" in path else ""
        if parent:
            fs.makedirs(parent, exist_ok=True)
        with fs.open(tmp, "wb") as f:
            f.write(buffer.getvalue())
        fs.mv(tmp, path)
    except OSError:
        pass


def cached_array(url: str, compute, storage_options: dict | None = None) -> np.ndarray:
    """The array at `url`, or `compute()` written there for the next time."""
    found = read_cached_array(url, storage_options)
    if found is None:
        found = np.asarray(compute())
        write_cached_array(url, found, storage_options)
    return found
