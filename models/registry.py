"""Config names -> model builders.

A builder module registers itself with `@register("name")`. Modules of this package are imported
on first lookup, so a job only says `build(cfg.model.name, cfg.model)`; builder modules import
TensorFlow inside their build functions, so this lookup never loads TensorFlow.

A builder whose model is split into named units (Dom-ST's heads and temporal block, land cover's
layers) takes `place`: unit name -> device scope, so `build(name, cfg, place)` puts each unit where a
placement plan says; the others refuse a placement.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import pkgutil
from typing import Any, Callable

_BUILDERS: dict[str, Callable[[Any], Any]] = {}
_loaded = False


def register(name: str):
    """Decorator: make `fn(cfg) -> model` buildable as `name`."""
    def decorate(fn):
        known = _BUILDERS.get(name)
        if known is not None and (known.__module__, known.__qualname__) != \
                (fn.__module__, fn.__qualname__):
            raise ValueError(f"model name {name!r} is already registered by "
                             f"{known.__module__}.{known.__qualname__}")
        _BUILDERS[name] = fn
        return fn
    return decorate


def _load_builders() -> None:
    global _loaded
    if _loaded:
        return
    package = importlib.import_module(__package__)
    for info in pkgutil.iter_modules(package.__path__):
        if info.name != "registry" and not info.name.startswith("_"):
            importlib.import_module(f"{__package__}.{info.name}")
    _loaded = True


def names() -> list[str]:
    """Every registered model name, sorted."""
    _load_builders()
    return sorted(_BUILDERS)


def get(name: str) -> Callable[[Any], Any]:
    if name not in _BUILDERS:
        # The usual case: the name is its module's name; import just that one.
        if name.isidentifier() and importlib.util.find_spec(f"{__package__}.{name}"):
            importlib.import_module(f"{__package__}.{name}")
    if name not in _BUILDERS:
        _load_builders()
    try:
        return _BUILDERS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; valid names: {', '.join(sorted(_BUILDERS))}") \
            from None


def build(name: str, cfg: Any, place: Callable[[str], Any] | None = None):
    """Build the model registered as `name` from `cfg`, each unit inside `place(unit)` when given."""
    builder = get(name)
    if place is None:
        return builder(cfg)
    if "place" not in inspect.signature(builder).parameters:
        raise ValueError(f"model {name!r} has no units to place; models that do: {', '.join(placeable())}")
    return builder(cfg, place=place)


def placeable() -> list[str]:
    """The registered models that take a placement, sorted."""
    _load_builders()
    return sorted(n for n, b in _BUILDERS.items() if "place" in inspect.signature(b).parameters)


def config_params(model: str, cfg: Any, required: tuple, fixed: dict, where: str) -> dict:
    """A builder's config (dict, dataclass or namespace) -> plain parameters: `fixed` (what the sources
    fix, or per-run defaults) overlaid with the given keys. Every key of `required` must be given (the
    study's YAML is their one source, named by `where`); any key outside `required`, `fixed` and `name`
    is refused."""
    given = dict(cfg) if isinstance(cfg, dict) else \
        dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(vars(cfg))
    valid = set(required) | set(fixed)
    unknown = sorted(set(given) - valid - {"name"})
    if unknown:
        raise ValueError(f"{model} model: unknown config keys {unknown}; valid: {sorted(valid)}")
    missing = [k for k in required if given.get(k) is None]
    if missing:
        raise ValueError(f"{model} model: missing config keys {missing} ({where})")
    return {**fixed, **{k: v for k, v in given.items() if v is not None and k != "name"}}
