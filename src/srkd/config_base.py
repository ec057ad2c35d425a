"""Typed configuration: pydantic models that reject unknown keys, loaded from YAML with ``--set`` overrides.

Every config section derives from :class:`StrictModel`. Validation problems surface as one
:class:`~srkd.errors.ConfigError` line that names the file, the dotted key and the accepted keys, e.g.::

    error: runs/x.yaml: unknown key 'train.lrr' (allowed: batch_size, ema, iterations, lr, ...)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from srkd.errors import ConfigError
from srkd.io import atomic_write_text

M = TypeVar("M", bound=BaseModel)

# What a config file may ask of the YAML parser. Aliases let 450 bytes stand for a structure of 10^9 nodes (the
# "billion laughs"), which validation and error messages then walk or print; real configs have a few hundred
# nodes, a depth under 6 and a size in kilobytes.
MAX_YAML_BYTES = 1 << 20
MAX_YAML_NODES = 100_000
MAX_YAML_DEPTH = 32
MAX_ECHO = 80  # characters of a value a message quotes


def clip(text: str, limit: int = MAX_ECHO) -> str:
    """``text`` cut to ``limit`` characters, marked: a message quotes a value, never a pasted megabyte."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class _TooComplex(yaml.YAMLError):
    pass


class BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses documents nested deeper than ``MAX_YAML_DEPTH`` (before Python's
    recursion limit turns them into a traceback) or that expand, through aliases, to more than
    ``MAX_YAML_NODES`` nodes (counted on the composed graph, before anything is constructed)."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _TooComplex(f"nested more than {MAX_YAML_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_document(self, node: Any) -> Any:
        sizes: dict[int, int] = {}

        def size(n: Any) -> int:
            if id(n) not in sizes:
                sizes[id(n)] = 0  # a recursive alias (a node inside itself) counts once
                if isinstance(n, yaml.MappingNode):
                    total = 1 + sum(size(k) + size(v) for k, v in n.value)
                elif isinstance(n, yaml.SequenceNode):
                    total = 1 + sum(size(v) for v in n.value)
                else:
                    total = 1
                sizes[id(n)] = min(total, MAX_YAML_NODES + 1)
            return sizes[id(n)]

        if size(node) > MAX_YAML_NODES:
            raise _TooComplex(f"expands (through aliases) to more than {MAX_YAML_NODES} values")
        return super().construct_document(node)


def parse_yaml(text: str) -> Any:
    """YAML text -> Python values through :class:`BoundedLoader`; yaml.YAMLError on bad or hostile input."""
    return yaml.load(text, Loader=BoundedLoader)  # noqa: S506 - a SafeLoader subclass


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def _increasing(milestones: list[int]) -> list[int]:
    # MultiStepLR counts a repeated milestone twice (the rate decays by gamma^2 there), and an unsorted list
    # is almost always a typo; neither is what a user writing a schedule means.
    if any(m < 1 for m in milestones) or any(b <= a for a, b in zip(milestones, milestones[1:])):
        raise ValueError("milestones must be strictly increasing iteration numbers >= 1 (each decays the rate once)")
    return milestones


Milestones = Annotated[list[int], AfterValidator(_increasing)]
"""Step-decay milestones (iterations): validated strictly increasing and positive."""


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names accepted at ``loc`` (the parent of the offending key), following nested models."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            # discriminated unions put the tag in loc; try it as a class-name step
            return []
        ann = fields[part].annotation
        current = _first_model(ann)
    fields = getattr(current, "model_fields", None)
    return sorted(fields) if fields else []


def _first_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _first_model(arg)
        if found is not None:
            return found
    return None


def format_validation_error(exc: ValidationError, model: type[BaseModel], source: str) -> str:
    """Turn pydantic's multi-line report into one line per problem, naming keys as users write them."""
    lines = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"])
        key = ".".join(str(p) for p in loc) or "<root>"
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc[:-1])
            hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
            lines.append(f"{source}: unknown key '{key}'{hint}")
        elif not loc:  # a check across sections (a model validator of the whole config): its message says it all
            lines.append(f"{source}: {err['msg']}")
        elif err["type"] == "missing":
            lines.append(f"{source}: missing required key '{key}'")
        else:
            got = err.get("input")
            got_s = "" if isinstance(got, dict) else f" (got {clip(repr(got))})"
            lines.append(f"{source}: '{key}': {err['msg']}{got_s}")
    return "; ".join(lines)


def validate(model: type[M], data: Any, source: str = "config") -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, model, source)) from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        if path.is_file() and path.stat().st_size > MAX_YAML_BYTES:
            raise ConfigError(f"{path}: {path.stat().st_size} bytes is not a config (at most {MAX_YAML_BYTES})")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config ({exc})") from None
    try:
        data = parse_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {clip(str(getattr(exc, 'problem', exc)), 200)}") from None
    except RecursionError:  # nesting PyYAML's scanner cannot follow, below our own depth check
        raise ConfigError(f"{path}: invalid YAML: nested too deeply") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level of a config must be a mapping, got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings (values parsed as YAML scalars/lists) to a nested dict, in order.

    ``section=false`` turns an optional section off; ``section=true`` on a section the file configures keeps it
    as configured (the ablation switch ``--set method.progressive=true`` means "grow, as the recipe says")."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {clip(repr(item))}: expected KEY=VALUE, e.g. --set train.lr=2e-4")
        key, raw = item.split("=", 1)
        if len(raw) > MAX_YAML_BYTES:
            raise ConfigError(f"--set {clip(key)}: a {len(raw)}-character value is not a setting")
        try:
            value = parse_yaml(raw) if raw != "" else ""
        except _TooComplex as exc:
            raise ConfigError(f"--set {clip(key)}: {exc}") from None
        except (yaml.YAMLError, RecursionError):
            value = raw
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {clip(key)}: '{clip(part)}' is a value, not a section")
            node = child
        if value is True and isinstance(node.get(parts[-1]), dict):
            continue  # an optional section a file configures (method.progressive) turned on: as configured
        node[parts[-1]] = value
    return data


def load_config(model: type[M], path: str | Path, overrides: list[str] | None = None) -> M:
    data = apply_overrides(read_yaml(path), overrides or [])
    return validate(model, data, str(path))


def dump_config(cfg: BaseModel, path: str | Path) -> None:
    """Write the resolved config (every default made explicit) next to a run's outputs."""
    atomic_write_text(path, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
