"""Command lines of the jobs: `--config FILE.yaml` plus `key=value` overrides (OmegaConf dot-list)."""
from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Optional, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ValidationError


class ConfigError(Exception):
    """A configuration a job cannot run with; the job prints it and exits before doing any work."""


def load_config(path: str, overrides: Sequence[str] = (), schema: Optional[type] = None) -> DictConfig:
    """The YAML at `path` with `key=value` overrides applied.

    With a `schema` (a job's typed config dataclass) the file and overrides are merged over it: every
    unknown key and every value of the wrong type, in the file or the overrides, is reported at once in a
    ConfigError. Without one (the demo's own config), the file's keys are the schema. A file with
    `base: OTHER.yaml` is merged over that file (path relative to it).
    """
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"overrides must be key=value, got {' '.join(bad)}")
    if schema is None:
        return _load_untyped(path, overrides)
    return _typed(schema, OmegaConf.to_container(_load_with_base(path, struct=False)), path, overrides)


def settings_from_values(schema: type, values: dict, origin: str, overrides: Sequence[str] = ()):
    """Typed settings from a mapping (a config recorded in a dataset, say) with `key=value` overrides, checked
    as a file's would be; `origin` names the mapping in the problems."""
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"overrides must be key=value, got {' '.join(bad)}")
    return to_settings(_typed(schema, values, origin, overrides))


def _typed(schema: type, values: dict, origin: str, overrides: Sequence[str]) -> DictConfig:
    cfg = OmegaConf.structured(schema)
    _thaw(cfg)  # frozen dataclasses make read-only nodes; the values are merged in, then frozen again by to_object
    problems = _merge_each(cfg, values, "", origin)
    for override in overrides:
        try:
            values = OmegaConf.to_container(OmegaConf.from_dotlist([override]))
        except Exception as e:
            problems.append(f"{override}: {_first_line(e)}")
            continue
        problems += _merge_each(cfg, values, "", "override")
    if problems:
        raise ConfigError("\n".join(problems))
    return cfg


def to_settings(cfg: DictConfig):
    """The typed config object (frozen dataclasses) of a config loaded with a schema; a ConfigError names
    every required setting still unset."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"missing required setting(s): {', '.join(missing)} (give them as key=value)")
    return OmegaConf.to_object(cfg)


def load_settings(schema: type, path: str, overrides: Sequence[str] = ()):
    """`to_settings(load_config(path, overrides, schema))`: the config a job runs with."""
    return to_settings(load_config(path, overrides, schema))


def _thaw(node) -> None:
    node._set_flag("readonly", None)
    if isinstance(node, DictConfig):
        for key in node.keys():
            child = node._get_node(key)
            if isinstance(child, (DictConfig, ListConfig)):
                _thaw(child)


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _merge_each(cfg: DictConfig, values: dict, prefix: str, origin: str) -> list[str]:
    """Merge `values` into `cfg` one setting at a time, so that every bad key or value is reported (a whole
    merge stops at the first). Typed sections are entered; a setting holding a mapping or list is merged whole."""
    problems = []
    for key, value in values.items():
        setting = f"{prefix}{key}"
        node = cfg._get_node(key) if isinstance(key, str) and key in cfg else None
        if isinstance(value, dict) and isinstance(node, DictConfig) and dataclasses.is_dataclass(
                OmegaConf.get_type(node)):
            problems += _merge_each(node, value, f"{setting}.", origin)
            continue
        try:
            cfg.merge_with({key: value})
        except Exception as e:  # OmegaConf raises several error types for bad keys and values
            if node is None and not isinstance(e, (ValidationError, TypeError)):
                problems.append(f"{setting}: unknown setting ({origin})")
            elif (kind := _TYPE_NAMES.get(getattr(getattr(node, "_metadata", None), "ref_type", None))):
                problems.append(f"{setting}={value!r} must be {kind} ({origin})")
            else:
                problems.append(f"{setting}={value!r}: {_first_line(e)} ({origin})")
    return problems


_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _load_untyped(path: str, overrides: Sequence[str]) -> DictConfig:
    base = _load_with_base(path)
    OmegaConf.set_struct(base, True)  # a typo in an override is an error, not a new key
    try:
        merged = OmegaConf.merge(base, OmegaConf.from_dotlist(list(overrides)))
    except Exception as e:  # OmegaConf raises several error types for bad keys and values
        raise ConfigError(f"bad override: {e}") from None
    problems = [p for o in overrides if (p := override_type_problem(base, merged, o.split("=", 1)[0]))]
    if problems:
        raise ConfigError("\n".join(problems))
    return merged


def _kind(value) -> str | None:
    """The type a setting's value has, in the config file's terms (None: unset, any value goes)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if OmegaConf.is_list(value) or isinstance(value, list) else "a mapping"


def override_type_problem(base: DictConfig, merged: DictConfig, key: str) -> str | None:
    """A key=value override must have the type the config file gives the key (an integer stays an integer:
    `shards.target_bytes=abc` is an error here, not a traceback after the job has started)."""
    expected = _kind(OmegaConf.select(base, key, throw_on_missing=False))
    got = _kind(OmegaConf.select(merged, key, throw_on_missing=False))
    if expected is None or got is None or expected == got or {expected, got} == {"a number", "an integer"}:
        return None  # numbers are numbers (0.4 minutes where the file says 60); ranges are the validators' job
    if expected == "a string" and got in ("an integer", "a number", "true or false"):
        return None  # a model name or language code that looks like a number is still a name
    return f"{key}={OmegaConf.select(merged, key)!r} must be {expected}"


def _load_with_base(path: str, struct: bool = True) -> DictConfig:
    """The file merged over its `base:` chain; `struct`: the child may only set keys its base defines (for
    untyped configs; a typed one checks every key against its schema instead, all at once)."""
    try:
        cfg = OmegaConf.load(path)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    if "base" not in cfg:
        return cfg
    parent = _load_with_base(os.path.join(os.path.dirname(path), cfg.pop("base")), struct)
    OmegaConf.set_struct(parent, struct)
    try:
        return OmegaConf.merge(parent, cfg)
    except Exception as e:
        raise ConfigError(f"{path}: {e}") from None


def parse_job_args(description: str, schema: Optional[type] = None, argv: Optional[Sequence[str]] = None,
                   name: Optional[str] = None, parents: Sequence[argparse.ArgumentParser] = ()):
    """A job's config from its command line: the typed settings when `schema` is given, else a DictConfig.
    Any problem is printed as `NAME: error: ...`, one line each, and the process exits 2. `parents`: a job's
    own flags, parsed by the caller, listed in --help."""
    parser = argparse.ArgumentParser(prog=name, description=description, parents=list(parents))
    parser.add_argument("--config", required=True, help="YAML config file")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. output=/data/out")
    args = parser.parse_args(argv)
    try:
        if schema is None:
            return load_config(args.config, args.overrides)
        return load_settings(schema, args.config, args.overrides)
    except ConfigError as e:
        parser.exit(2, "".join(f"{parser.prog}: error: {line}\n" for line in str(e).splitlines()))

