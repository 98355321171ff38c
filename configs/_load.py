"""Reading an experiment config from YAML, with errors that name the file and the key.

Local paths in a config file (`store.url`, `observations.url`, `method.checkpoint`; a sweep's
`base` and `folder`) are relative to the folder of the file that holds them; an absolute
path, or a URL with a scheme (`s3://…`, `file://…`), is taken as it is."""

import os
import re
from pathlib import Path

import yaml
from pydantic import ValidationError

from ._models import ENTRY_POINT_GROUPS, ExperimentConfig, SweepConfig


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and the key (exit
    code 2: bad input)."""

    exit_code = 2


def _key(loc: tuple, data, missing: bool = False) -> str:
    """The dotted config key of an error's location. Pydantic puts the tag of a union's
    member into the location (`model.lorenz96.K`); a part that is not a key of the input
    at that point is such a tag and is left out (but for a `missing` key, the last part)."""
    parts, node = [], data
    for i, p in enumerate(loc):
        last = missing and i == len(loc) - 1
        if isinstance(p, str) and isinstance(node, dict) and p not in node and not last:
            continue
        parts.append(str(p))
        try:
            node = node[p]
        except (KeyError, IndexError, TypeError):
            node = None
    return ".".join(parts) or "(top level)"


def _message(e: dict) -> tuple[str, str]:
    """`(key suffix, message)` of one pydantic error."""
    if e["type"] == "extra_forbidden":
        return "", "unknown key"
    if e["type"] == "union_tag_invalid":  # a name or kind that no config class has
        ctx = e["ctx"]
        expected = ctx["expected_tags"].replace(", 'plugin'", "")
        if expected != ctx["expected_tags"]:  # a union that also takes one's own
            kind = e["loc"][-1] if e["loc"] else "model"
            group = ENTRY_POINT_GROUPS.get(str(kind), "vardax_cycle.<kind>s")
            expected += (
                ', or one\'s own: target "package.module:attribute", or the name of a plugin '
                f"installed under the entry-point group {group}"
            )
        key = ctx["discriminator"].strip(chr(39))
        key = "name" if key.endswith(")") else key  # a callable discriminator: by name
        return f".{key}", f"Input should be {expected} (got {ctx['tag']!r})"
    msg = e["msg"].removeprefix("Value error, ")
    given = e.get("input")
    if e["type"] not in ("missing", "model_type") and isinstance(given, str | int | float | bool):
        # the value at fault, unless the message names it ("greater than 0" does not)
        if not _names(msg, given):
            msg += f" (got {given!r})"
    return "", msg


def _names(msg: str, given) -> bool:
    """Whether `msg` already quotes the input `given` (a string by its repr, a number as
    "got N")."""
    if isinstance(given, str):
        return repr(given) in msg
    return re.search(rf"\bgot {re.escape(str(given))}(?![\d.])", msg) is not None


def parse_config(data, source: str = "<config>") -> ExperimentConfig:
    """Validates a mapping as an `ExperimentConfig`; `ConfigError` names `source` and keys."""
    return _validate(ExperimentConfig, data, source)


def _validate(model, data, source: str):
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: the config must be a mapping of keys, got {type(data).__name__}"
        )
    try:
        return model.model_validate(data)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            suffix, msg = _message(e)
            key = _key(e["loc"], data, missing=e["type"] == "missing")
            lines.append(f"{source}: {key}{suffix}: {msg}")
        raise ConfigError("\n".join(dict.fromkeys(lines))) from None


def _read_yaml(path: Path):
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory: name a YAML file") from None
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{path}: not a text file (byte {err.start} is not UTF-8): name a YAML file"
        ) from None
    except OSError as err:
        raise ConfigError(f"config file {path} cannot be read: {err.strerror or err}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            f"{path}: not valid YAML{where}: {getattr(err, 'problem', err)}"
        ) from None


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")

# The keys of an experiment config that are local paths (relative to the file's folder).
_PATHS = (("store", "url"), ("observations", "url"), ("method", "checkpoint"))


def resolve_path(value, folder) -> str:
    """`value` (a path or URL from a config file in `folder`): a relative local path joined
    to `folder` (absolute, normalised); an absolute path or a URL with a scheme unchanged."""
    value = str(value)
    if _SCHEME.match(value) or os.path.isabs(value):
        return value
    return os.path.normpath(os.path.join(os.path.abspath(folder), value))


def _resolve_paths(data, folder, keys=_PATHS):
    """A copy of the mapping `data` with its path `keys` resolved against `folder` (what is
    not a string is left for validation to name)."""
    if not isinstance(data, dict):
        return data
    out = dict(data)
    for section, key in keys:
        node = out.get(section)
        if isinstance(node, dict) and isinstance(node.get(key), str):
            out[section] = {**node, key: resolve_path(node[key], folder)}
    return out


def load_config(path) -> ExperimentConfig:
    """Reads and validates an experiment YAML file; its local paths resolve against the
    file's folder (`resolve_path`)."""
    path = Path(path)
    return parse_config(_resolve_paths(_read_yaml(path), path.parent), str(path))


def _merge(base: dict, changes: dict) -> dict:
    out = dict(base)
    for key, value in changes.items():
        if (
            isinstance(value, dict)
            and isinstance(out.get(key), dict)
            and value.get("name", out[key].get("name")) == out[key].get("name")
        ):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_sweep(path) -> tuple[SweepConfig, dict[str, dict]]:
    """Reads a sweep file and its base experiment. **Returns** the sweep and, per member,
    its experiment config as a mapping (the base with the member's changes, its store in
    the sweep's folder: every member's store sits beside one shared OSSE). Each member is
    validated as an experiment; errors name the sweep file and the member."""
    path = Path(path)
    raw = _read_yaml(path)
    if isinstance(raw, dict):  # base and folder: relative to the sweep file's folder
        raw = {
            k: resolve_path(v, path.parent) if k in ("base", "folder") and isinstance(v, str) else v
            for k, v in raw.items()
        }
    sweep = _validate(SweepConfig, raw, str(path))
    base_path = Path(sweep.base)
    base = _resolve_paths(_read_yaml(base_path), base_path.parent)
    parse_config(base, str(base_path))
    members = {}
    for name, changes in sweep.members.items():
        data = _merge(base, _resolve_paths(changes, path.parent))
        data["experiment"] = f"{sweep.sweep}-{name}"
        data["store"] = {**base.get("store", {}), "url": f"{sweep.folder.rstrip('/')}/{name}.zarr"}
        parse_config(data, f"{path}: member {name}")
        members[name] = data
    return sweep, members


def canonical_text(config: ExperimentConfig) -> str:
    """The config as canonical YAML (sorted keys, defaults filled): what a store's lineage
    records and hashes, so comments and key order do not change the hash."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=True)


# What a store's results depend on. Operational settings (gates, catch-up, cut-offs, where
# files live, growth blocks) may change between runs of one store; these may not.
_IDENTITY = {
    "experiment": True,
    "model": True,
    "method": True,
    "cycling": True,
    "observations": {
        "source",
        "locations",
        "network",
        "operator",
        "capacity",
        "error_std",
        "every_steps",
        "qc",
    },
}


def identity_text(config: ExperimentConfig) -> str:
    """The part of a config that a store's contents depend on (model, observation layout and
    QC, method, cycling), as canonical YAML without defaults: a store records and checks
    it, so an operational change (gate policy, catch-up, cut-off, paths) or a new setting
    with a default does not orphan the store, while a change to the science is refused."""
    data = config.model_dump(
        mode="json", include=_IDENTITY, exclude=_NOT_IDENTITY, exclude_defaults=True
    )
    return yaml.safe_dump(data, sort_keys=True)


# where a file lives is operational too (a checkpoint's path is resolved to an absolute one)
_NOT_IDENTITY = {"method": {"checkpoint"}}


# What a learned method's parameters depend on: the model, the observation layout, the
# window, and the method's architecture and training. A checkpoint records its hash.
_LAYOUT = {
    "model": True,
    "method": {"name", "network", "training", "prior_cov"},
    "cycling": {"window_steps"},
    "observations": {"locations", "network", "operator", "error_std", "every_steps"},
}


def learned_layout(config: ExperimentConfig) -> dict:
    """The parts of a config a learned method's checkpoint is only valid for."""
    return config.model_dump(mode="json", include=_LAYOUT)


def layout_hash(config: ExperimentConfig) -> str:
    """A short hash of `learned_layout` (what a checkpoint records and `run` checks)."""
    import hashlib
    import json

    text = json.dumps(learned_layout(config), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
