"""``srkd config list|show|schema``: the shipped recipes and what every key of a config means.

    srkd config list [--json FILE|-]               the recipes srkd ships (srkd train NAME runs one)
    srkd config show NAME|FILE [--set KEY=VALUE]   the resolved config, every default explicit, each key described
    srkd config schema [OUT]                       JSON schema of a config file (stdout without OUT)

The descriptions are the ``Field(description=...)`` of the config models themselves, so ``show``, the schema and
validation can never disagree. Editors that read JSON schemas (VS Code's YAML extension, PyCharm, Neovim's
yaml-language-server) complete and check keys with ``# yaml-language-server: $schema=srkd-config.schema.json`` at
the top of a config.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from srkd.cli.output import add_json_option

    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="the recipes srkd ships (run one with: srkd train NAME)")
    add_json_option(ls, "[{name, path, about}]")
    show = sub.add_parser("show", help="a recipe or config file, resolved, with every key's description")
    show.add_argument("config", metavar="NAME|FILE")
    show.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a value first, as srkd train --set does (repeatable)")
    schema = sub.add_parser("schema", help="write a JSON schema of srkd's config files for editors")
    schema.add_argument("out", nargs="?", default=None, metavar="OUT", help="output file (default: stdout)")


def run(args: argparse.Namespace) -> int:
    return {"list": _list, "show": _show, "schema": _schema}[args.action](args)


def _about(path: Path) -> str:
    """A recipe's first header-comment line: what it is, in the words of whoever wrote it."""
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("#"):
                return line.lstrip("# ").strip()
            if line.strip():
                break
    except OSError:
        pass
    return ""


def _list(args: argparse.Namespace) -> int:
    from srkd.cli.output import emit_json, to_stdout
    from srkd.recipes import recipe_names, recipes_dir

    rows = [{"name": n, "path": str(recipes_dir() / f"{n}.yaml"), "about": _about(recipes_dir() / f"{n}.yaml")}
            for n in recipe_names()]
    emit_json(args, rows)
    if not to_stdout(args):
        width = max(len(r["name"]) for r in rows)
        for r in rows:
            print(f"{r['name']:<{width}}  {r['about'][:100]}")
        print(f"\n{len(rows)} recipes in {recipes_dir()}; run one with `srkd train NAME`, explain it with "
              "`srkd config show NAME`")
    return 0


def _flow(value: Any) -> str:
    """One value as inline YAML (``{n_feats: 64}``, ``[T91, BSD200]``, ``null``), as a recipe writes it."""
    import yaml

    return str(yaml.safe_dump([value], default_flow_style=True, width=1 << 20, sort_keys=False)).strip()[1:-1]


def annotated_yaml(model: Any, indent: int = 0) -> list[str]:
    """``model`` (a validated config section) as YAML lines, each key followed by its description as a comment."""
    from pydantic import BaseModel

    pairs: list[tuple[str, str]] = []
    dumped = model.model_dump(mode="json")
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        pad = "  " * indent
        about = info.description or ""
        if isinstance(value, BaseModel):
            pairs.append((f"{pad}{name}:", about))
            pairs.extend(("\0" + line, "") for line in annotated_yaml(value, indent + 1))
        else:
            pairs.append((f"{pad}{name}: {_flow(dumped[name])}", about))
    width = min(48, max((len(k) for k, _ in pairs if not k.startswith("\0")), default=0))
    return [k[1:] if k.startswith("\0") else (f"{k:<{width}}  # {c}" if c else k) for k, c in pairs]


def _show(args: argparse.Namespace) -> int:
    from srkd.config_base import load_config
    from srkd.engine.config import TrainConfig
    from srkd.recipes import resolve_recipe

    path = resolve_recipe(args.config)
    cfg = load_config(TrainConfig, path, args.overrides)
    header = [line for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("#")]
    lines = [f"# {path}", *header[:12], *annotated_yaml(cfg)]
    print("\n".join(lines))
    return 0


def config_schema() -> dict[str, Any]:
    """JSON schema (draft 2020-12) of a config file: TrainConfig, with ``method`` as any one of the methods'
    own configs (each requiring its ``name``) or a bare method name."""
    from srkd.distill import METHODS, get_method
    from srkd.engine.config import TrainConfig

    schema = TrainConfig.model_json_schema()
    defs = schema.setdefault("$defs", {})
    variants: list[dict[str, Any]] = [{"type": "string", "enum": list(METHODS),
                                       "description": "a method with all its defaults"}]
    for name in METHODS:
        sub = get_method(name).Config.model_json_schema(ref_template="#/$defs/{model}")
        for key, value in sub.pop("$defs", {}).items():
            defs.setdefault(key, value)
        sub["title"] = f"method: {name}"
        sub["required"] = sorted({*sub.get("required", []), "name"})
        defs[f"method_{name}"] = sub
        variants.append({"$ref": f"#/$defs/method_{name}"})
    about = schema["properties"]["method"].get("description", "")
    schema["properties"]["method"] = {"description": about, "anyOf": variants}
    defs.pop("MethodConfig", None)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema, "title": "srkd training config"}


def _schema(args: argparse.Namespace) -> int:
    from srkd.io import write_json

    schema = config_schema()
    if args.out in (None, "-"):
        sys.stdout.write(json.dumps(schema, indent=2) + "\n")
    else:
        write_json(args.out, schema)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0
