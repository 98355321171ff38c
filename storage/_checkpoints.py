"""Checkpoints of learned methods: the serialised parameters (bytes, from equinox) and a
JSON sidecar (layout hash, config, training metrics), at a local path or fsspec URL.

The sidecar is written last and read first: a checkpoint without one is incomplete (a
crash between the two writes) and is refused."""

import json

import fsspec

from ._errors import StoreError


class CheckpointError(StoreError):
    """A missing, incomplete or mismatched checkpoint (exit code 2: train it first)."""

    exit_code = 2


def metadata_url(url: str) -> str:
    return f"{url}.json"


def write_checkpoint(url: str, payload: bytes, metadata: dict, storage_options=None) -> None:
    """Writes `payload` to `url` and `metadata` to `url.json`, each through a temporary
    name moved into place (an old checkpoint stays whole until the new one is)."""
    fs, path = fsspec.core.url_to_fs(str(url), **(storage_options or {}))
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    if parent:
        fs.makedirs(parent, exist_ok=True)
    meta_path = metadata_url(path)
    if fs.exists(meta_path):
        fs.rm(meta_path)  # the pair is incomplete until the new sidecar lands
    for target, data in ((path, payload), (meta_path, json.dumps(metadata, indent=2).encode())):
        tmp = f"{target}.partial"
        with fs.open(tmp, "wb") as f:
            f.write(data)
        fs.mv(tmp, target)


def read_checkpoint_metadata(url: str, storage_options=None) -> dict:
    fs, path = fsspec.core.url_to_fs(str(url), **(storage_options or {}))
    meta_path = metadata_url(path)
    if not fs.exists(meta_path):
        what = "is incomplete (no metadata file)" if fs.exists(path) else "does not exist"
        raise CheckpointError(f"checkpoint {url} {what}")
    try:
        with fs.open(meta_path, "rb") as f:
            return json.loads(f.read())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"checkpoint metadata {metadata_url(url)} is not JSON: {e}") from e


def read_checkpoint(url: str, storage_options=None) -> tuple[bytes, dict]:
    """**Returns** `(payload, metadata)`; raises `CheckpointError` naming the file."""
    metadata = read_checkpoint_metadata(url, storage_options)
    fs, path = fsspec.core.url_to_fs(str(url), **(storage_options or {}))
    if not fs.exists(path):
        raise CheckpointError(f"checkpoint {url} is missing (its metadata file exists)")
    with fs.open(path, "rb") as f:
        return f.read(), metadata
