"""Plugins: a forward model, observation operator or analysis method of one's own, named by
import path (`target: "package.module:attribute"`) or by the name an installed package
registers under an entry-point group (`vardax_cycle.models`, `vardax_cycle.operators`,
`vardax_cycle.methods`).

Every way a plugin can be wrong — a module that does not import, a missing attribute, a
target that is not callable, params it rejects, an error while it builds — is one
`ConfigError` naming the config file, the key and the target.
"""

import importlib
import inspect
from importlib.metadata import entry_points

from ._load import ConfigError
from ._models import ENTRY_POINT_GROUPS, _Plugin


def resolve(ref: _Plugin, key: str, source: str):
    """The class or factory a plugin config names."""
    if ref.target is None:
        return _entry_point(ref, key, source)
    module_name, _, attribute = ref.target.partition(":")
    try:
        obj = importlib.import_module(module_name)
    except Exception as err:  # ImportError, or the module's own error while importing
        raise ConfigError(
            f"{source}: {key}.target: cannot import module {module_name!r} of "
            f"{ref.target!r}: {type(err).__name__}: {err}"
        ) from None
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise ConfigError(
                f"{source}: {key}.target: module {module_name!r} has no attribute "
                f"{attribute!r} (target {ref.target!r})"
            )
        obj = getattr(obj, part)
    return obj


def _entry_point(ref: _Plugin, key: str, source: str):
    group = ENTRY_POINT_GROUPS[ref._kind]
    found = [ep for ep in entry_points(group=group) if ep.name == ref.name]
    if not found:
        raise ConfigError(f"{source}: {key}.name: no plugin {ref.name!r} in {group}")
    try:
        return found[0].load()
    except Exception as err:
        raise ConfigError(
            f"{source}: {key}.name: the plugin {ref.name!r} ({found[0].value}, entry-point "
            f"group {group}) does not load: {type(err).__name__}: {err}"
        ) from None


def call(factory, ref: _Plugin, key: str, source: str, available: dict):
    """`factory(**ref.params, **those of available its signature names)`."""
    if not callable(factory):
        raise ConfigError(
            f"{source}: {key}: {ref.reference} is a {type(factory).__name__}, not a class or "
            "factory to call"
        )
    passed = _accepted(factory, available)
    clash = sorted(set(ref.params) & set(passed))
    if clash:
        raise ConfigError(
            f"{source}: {key}.params: {clash} are given by the pipeline to {ref.reference}; "
            "leave them out of params"
        )
    try:
        return factory(**ref.params, **passed)
    except TypeError as err:
        raise ConfigError(
            f"{source}: {key}.params: {ref.reference} rejects params {ref.params}: {err}"
        ) from None
    except Exception as err:
        raise ConfigError(
            f"{source}: {key}: {ref.reference} failed with params {ref.params}: "
            f"{type(err).__name__}: {err}"
        ) from None


def _accepted(factory, available: dict) -> dict:
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # no signature to read (a builtin): pass nothing
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return dict(available)
    names = {p.name for p in parameters}
    return {k: v for k, v in available.items() if k in names}


def takes(factory, name: str) -> bool:
    """Whether `factory`'s signature names the keyword `name` (or takes any keyword)."""
    return name in _accepted(factory, {name: None})
