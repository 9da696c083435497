"""One loader for every job's configuration.

A job declares its configuration once, as nested dataclasses (the schema); the values live in YAML
under conf/. Loading merges, in order: conf/cluster.yaml (as the `cluster` section), the case file,
the chosen preset from the case file's `presets:` section, then `--set a.b=value` overrides (`!include
file.yaml` in a case file stands for that file's mapping, e.g. land cover's placement plans). The
result is type-checked against the dataclasses: an unknown key or a missing one is an error that
names the valid keys, never a warning. A number's range is declared with its type
(`Annotated[int, Range(1)]`, or an alias below) and checked here, the key named in the error.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml

CONF_DIR = Path(__file__).resolve().parent


class ConfigError(ValueError):
    """A configuration that does not match its schema."""


@dataclasses.dataclass(frozen=True)
class Range:
    """Bounds of a numeric value (None: unbounded on that side); NaN is never in range."""
    min: float | None = None
    max: float | None = None
    min_open: bool = False  # the bound itself is excluded
    max_open: bool = False

    def contains(self, x) -> bool:
        return ((self.min is None or (x > self.min if self.min_open else x >= self.min))
                and (self.max is None or (x < self.max if self.max_open else x <= self.max)) and x == x)

    def __str__(self) -> str:
        low = None if self.min is None else f"{'>' if self.min_open else '>='} {self.min:g}"
        high = None if self.max is None else f"{'<' if self.max_open else '<='} {self.max:g}"
        return " and ".join(b for b in (low, high) if b) or "a number"


# The ranges the schemas use most; a field states its own Range where these do not fit.
Count = Annotated[int, Range(1)]                     # how many: at least one
NonNegative = Annotated[int, Range(0)]               # 0 has a meaning (off, none)
Seed = Annotated[int, Range(0, 2**31 - 1)]           # numpy's range, with room for per-worker offsets
Port = Annotated[int, Range(0, 65535)]               # 0: a free port
Seconds = Annotated[float, Range(0, 1e9, min_open=True)]
Positive = Annotated[float, Range(0, 1e9, min_open=True)]
Rate = Annotated[float, Range(0, 1, max_open=True)]  # a dropout rate: [0, 1)


@dataclasses.dataclass
class ClusterConfig:
    """The Spark standalone cluster; mirrors conf/cluster.yaml key for key."""
    host: str
    master_port: Port
    master_ui_port: Port
    worker_ui_port: Port
    workers: Count
    worker_cores: Count
    worker_memory: str
    executor_memory: str
    default_fs: str
    run_dir: str
    start_timeout_s: Seconds
    reservation_timeout_s: Seconds
    shutdown_timeout_s: Seconds
    jvm_options: str
    hdfs: Literal["none", "embedded"]
    python_archive: str
    host_sample_interval_s: Seconds


def _include_loader(folder: Path) -> type:
    """A safe YAML loader where `!include name.yaml` is that file's content (a path relative to `folder`),
    so a section kept in its own file is still part of the one typed config (and of config.yaml)."""
    class Loader(yaml.SafeLoader):
        pass

    def include(loader, node):
        return read_yaml(folder / loader.construct_scalar(node))
    Loader.add_constructor("!include", include)
    return Loader


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = yaml.load(path.read_text(), Loader=_include_loader(path.parent)) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b=value` -> (['a', 'b'], value parsed as YAML, so 3 is an int and [1, 2] a list)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value, got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def merge(base: dict, update: dict) -> dict:
    """Deep merge: mappings merge key by key, anything else replaces."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def set_path(tree: dict, path: list[str], value: Any) -> None:
    node = tree
    for i, key in enumerate(path[:-1]):
        child = node.get(key)
        if not isinstance(child, dict):
            raise ConfigError(f"--set {'.'.join(path)}: '{'.'.join(path[:i + 1])}' is not a section")
        node = child
    node[path[-1]] = value


@dataclasses.dataclass
class TrainLoop:
    """The training loop's settings that land cover and Dom-ST share (a study adds its own in a subclass)."""
    epochs: Count
    batch_size: Count
    seed: Seed
    tf_threads: NonNegative  # TensorFlow's thread pools per role (0: TensorFlow's choice)
    timeout_s: Seconds
    tensorboard: bool
    checkpoint_every: NonNegative


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is Annotated:
        base, *extras = typing.get_args(hint)
        value = _coerce(value, base, where)
        for bounds in (e for e in extras if isinstance(e, Range)):
            if not bounds.contains(value):
                raise ConfigError(f"{where}: {value!r} is out of range; it must be {bounds}")
        return value
    if dataclasses.is_dataclass(hint):
        return build(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError("; ".join(errors))
    if origin is typing.Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, choices))}")
        return value
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        _, item = typing.get_args(hint) or (str, Any)
        return {str(k): _coerce(v, item, f"{where}.{k}") for k, v in value.items()}
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if hint in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(hint, type) and not isinstance(value, hint):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value


def build(schema: type, data: Any, where: str = "config") -> Any:
    """Turn a nested mapping into the dataclass `schema`, rejecting unknown and missing keys."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a section (mapping), got {data!r}")
    hints = typing.get_type_hints(schema, include_extras=True)
    fields = [f.name for f in dataclasses.fields(schema)]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; "
                          f"valid keys: {', '.join(fields)}")
    values = {}
    for f in dataclasses.fields(schema):
        if f.name in data:
            values[f.name] = _coerce(data[f.name], hints[f.name], f"{where}.{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}: missing key '{f.name}'")
    obj = schema(**values)
    check = getattr(obj, "validate", None)
    if check is not None:
        check()
    return obj


def load(schema: type, case_file: str | Path, preset: str | None = None,
         overrides: list[str] = (), cluster_file: str | Path = CONF_DIR / "cluster.yaml") -> Any:
    """Build the typed config of one job run; see the module docstring for the order."""
    case = read_yaml(case_file)
    presets = case.pop("presets", {}) or {}
    tree = merge({"cluster": read_yaml(cluster_file)}, case)
    if preset is not None:
        if preset not in presets:
            raise ConfigError(f"{case_file}: no preset {preset!r}; presets: {', '.join(presets) or 'none'}")
        tree = merge(tree, presets[preset])
    for text in overrides:
        path, value = parse_override(text)
        set_path(tree, path, value)
    return build(schema, tree)


def load_cluster(overrides: list[str] = (), cluster_file: str | Path = CONF_DIR / "cluster.yaml") -> ClusterConfig:
    """conf/cluster.yaml alone, with `key=value` overrides; used by the mini-cluster command."""
    tree = read_yaml(cluster_file)
    for text in overrides:
        path, value = parse_override(text)
        set_path(tree, path, value)
    return build(ClusterConfig, tree, "cluster")


def dump(cfg: Any, **extra: Any) -> str:
    """The resolved config as YAML (written beside every run's outputs); `extra` keys go first."""
    return yaml.safe_dump({**extra, **dataclasses.asdict(cfg)}, sort_keys=False)


def to_json(spec: Any) -> str:
    """A typed spec (a dataclass of config sections) as JSON: what a driver sends its roles, never a pickle."""
    return json.dumps(dataclasses.asdict(spec))


def from_json(schema: type, text: str) -> Any:
    """The spec from to_json's text, its types, ranges and validate() checked again where it is read."""
    try:
        data = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{schema.__name__}: not a JSON object: {exc}") from None
    return build(schema, data, schema.__name__)
