"""The configuration reference, docs/configuration.md, generated from the typed schema.

Walks the pydantic models under `configs.schema.Config` through their fields and annotations (not
the source), so it follows the schema wherever its classes live. Every key gets its type with its
bounds, its default and its description; a section's class docstring heads its table.

    python -m configs.reference --out docs/configuration.md   # make config-reference
    python -m configs.reference --check                       # exit 1 when the page is stale
"""

import argparse
import inspect
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import yaml
from pydantic.fields import FieldInfo

from configs import schema

PAGE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
COMMAND = "python -m configs.reference --out docs/configuration.md"

# How a config is put together; the tables below say what each key is.
INTRO = """\
One typed schema (`configs.schema`, pydantic) defines every key with its default, bounds and a
description; `imgclf config show` with no `--config` prints all defaults. Resolution order is fixed:
defaults → YAML file → `${ENV}` references → `--set` overrides.

- YAML values may reference environment variables: `${RUNS_DIR}` (must be set) or
  `${RUNS_DIR:-runs}` (with a default). A value that is only a reference takes the YAML type of what
  it expands to (`epochs: ${EPOCHS:-5}` is the integer 5).
- `--set` values are parsed as YAML: `--set data.image_size=[64,64]`, `--set model.weights=null`.
- Validation happens before any work starts. An unknown key names its path and the closest valid
  key (`train.epocs: unknown key (did you mean train.epochs?)`); a bad value names the key path,
  what is accepted and what was received (`data.batch_size: Input should be greater than 0
  (received -4)`); a missing variable names the variable and the key.
- The resolved config is saved as `config.yaml` in every run and inside every exported model.

```bash
imgclf config show --config configs/digits.yaml --set train.epochs=5   # the resolved config
imgclf config show                                                      # every default
```

See [`configs/digits.yaml`](../configs/digits.yaml) for a complete example and
[`configs/examples/`](../configs/examples/) for one per backbone family. Rules that join several
keys (an image size a backbone can take, early stopping's monitor among the run's metrics, ...)
are checked when the config loads and are described with the keys they concern in the other
pages."""

# Lists of one-key mappings (`- conv: {filters: 32}`) whose items are validated against a registry
# of spec models rather than through the field's annotation.
LAYER_SPECS = {"model.cnn": schema.CNN_LAYER_SPECS}

# Constraint objects (annotated_types' Gt, Ge, ...) by the attribute that holds their bound.
BOUNDS = {"gt": ">", "ge": "≥", "lt": "<", "le": "≤"}
UNIONS = (typing.Union, types.UnionType)


@dataclass
class Row:
    key: str
    type: str
    default: str
    description: str


@dataclass
class Table:
    key: str  # the key path the rows sit under; "" for the top level
    doc: str
    rows: list[Row] = field(default_factory=list)
    title: str = ""  # the heading, when it is not the key path itself


def render() -> str:
    """The whole page."""
    lines = [
        "# Configuration reference",
        "",
        f"Generated from `configs.schema.Config` by `{COMMAND}` (`make config-reference`): "
        "change the schema's descriptions, not this page. `tests/configs/test_reference.py` "
        "fails when the page is stale.",
        "",
        INTRO,
        "",
    ]
    top = Table("", "Keys at the root of the file.")
    sections = [top]
    for name, info in schema.Config.model_fields.items():
        if (model := section_model(info)) is None:
            top.rows.append(row(name, info))
        else:
            sections.extend(tables(model, f"{name}."))
    for table in sections:
        lines += table_lines(table)
    return "\n".join(lines).rstrip() + "\n"


def tables(model: type[pydantic.BaseModel], prefix: str) -> list[Table]:
    """`model`'s table (keys under `prefix`) followed by those of the models it holds."""
    table, nested = Table(prefix.rstrip("."), docstring(model)), []
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        sub_model = section_model(info)
        if sub_model is not None:
            nested.extend(tables(sub_model, f"{key}."))
            continue
        table.rows.append(row(key, info))
        for held, inner_prefix in held_models(info.annotation, key):
            nested.extend(tables(held, inner_prefix))
        if key in LAYER_SPECS:
            nested.append(layer_table(key, LAYER_SPECS[key]))
    return [table, *nested]


def layer_table(key: str, specs: dict[str, type[pydantic.BaseModel]]) -> Table:
    table = Table(
        key,
        f"Each item of `{key}` is a one-key mapping, `- <layer>: {{<argument>: <value>}}`.",
        title=f"`{key}` layers",
    )
    for layer, spec in specs.items():
        doc = docstring(spec)
        if not spec.model_fields:
            table.rows.append(Row(f"`{layer}`", "mapping", "`{}`", doc))
        for name, info in spec.model_fields.items():
            table.rows.append(row(f"{layer}.{name}", info, fallback=doc))
    return table


def section_model(info: FieldInfo) -> type[pydantic.BaseModel] | None:
    """The model of a field that is a plain sub-section (`data.split`), else None."""
    annotation = info.annotation
    is_model = isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel)
    return annotation if is_model else None


def held_models(annotation, key: str) -> list[tuple[type[pydantic.BaseModel], str]]:
    """Models inside a union, list or mapping annotation, with the key prefix their keys take."""
    found: list[tuple[type[pydantic.BaseModel], str]] = []

    def visit(node, prefix: str) -> None:
        node = unwrap(node)
        origin, args = typing.get_origin(node), typing.get_args(node)
        if isinstance(node, type) and issubclass(node, pydantic.BaseModel):
            if all(model is not node for model, _ in found):
                found.append((node, prefix))
        elif origin in UNIONS or origin is list:
            for arg in args:
                visit(arg, prefix)
        elif origin is dict:
            visit(args[1], f"{prefix}<name>.")

    visit(annotation, f"{key}.")
    return found


def row(key: str, info: FieldInfo, fallback: str = "") -> Row:
    description = info.description or held_doc(info.annotation) or fallback
    return Row(
        f"`{key}`", type_text(info.annotation, info.metadata), default_text(info), description
    )


def held_doc(annotation) -> str:
    models = held_models(annotation, "")
    return docstring(models[0][0]) if len(models) == 1 else ""


def docstring(model: type) -> str:
    """The model's docstring, else the nearest base's below the base every section shares."""
    for cls in model.__mro__:
        if cls is pydantic.BaseModel or pydantic.BaseModel in cls.__bases__:
            break
        if cls.__dict__.get("__doc__"):
            return " ".join(inspect.cleandoc(cls.__doc__).split())
    return ""


def unwrap(annotation):
    """The annotation without Annotated[...] wrappers."""
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def type_text(annotation, metadata: list | tuple = ()) -> str:
    """`float, > 0, ≤ 10`, `` `crop` or `stretch` ``, `list of (int, ≥ 2)`, `str or null`, ..."""
    constraints = list(metadata)
    while typing.get_origin(annotation) is Annotated:
        annotation, *extra = typing.get_args(annotation)
        for item in extra:
            constraints += item.metadata if isinstance(item, FieldInfo) else [item]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in UNIONS:
        # Optional[...] renders as "... or null" whatever order the union lists it in.
        parts = [grouped(type_text(arg), ", ") for arg in args if arg is not type(None)]
        text = " or ".join(parts + (["null"] if type(None) in args else []))
    elif origin is Literal:
        text = " or ".join(f"`{value_text(value)}`" for value in args)
    elif origin is tuple:
        text = f"[{', '.join(type_text(arg) for arg in args)}]"
    elif origin is list:
        text = f"list of {grouped(type_text(args[0]))}"
    elif origin is dict:
        text = "mapping" if args[1] is Any else f"mapping of name to {grouped(type_text(args[1]))}"
    elif isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        text = "mapping (below)"
    elif annotation is Any:
        text = "any"
    else:
        text = annotation.__name__
    return ", ".join([text, *bounds_text(constraints)])


def grouped(text: str, *joints: str) -> str:
    """`text` in parentheses when it has parts, so `list of (str or mapping)` reads one way."""
    return f"({text})" if any(joint in text for joint in joints or (" or ", ", ")) else text


def bounds_text(constraints: list) -> list[str]:
    texts = []
    for constraint in constraints:
        for attribute, sign in BOUNDS.items():
            if getattr(constraint, attribute, None) is not None:
                texts.append(f"{sign} {value_text(getattr(constraint, attribute))}")
        if getattr(constraint, "min_length", None) is not None:
            texts.append(f"at least {constraint.min_length} character(s)")
        if getattr(constraint, "pattern", None):
            texts.append(f"matching `{constraint.pattern}`")
    return texts


def default_text(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    return f"`{value_text(info.get_default(call_default_factory=True))}`"


def value_text(value) -> str:
    """A value as YAML would take it: null, true, [32, 32], {conv: {filters: 32}}."""
    plain = value.model_dump() if isinstance(value, pydantic.BaseModel) else value
    plain = list(plain) if isinstance(plain, tuple) else plain
    text = yaml.safe_dump(plain, default_flow_style=True, width=10_000, sort_keys=False)
    return text.removesuffix("\n").removesuffix("\n...")


def table_lines(table: Table) -> list[str]:
    title = table.title or (f"`{table.key}`" if table.key else "Top level")
    level = "##" if "." not in table.key else "###"
    lines = [f"{level} {title}", ""]
    if table.doc:
        lines += [cell(table.doc), ""]
    if table.rows:
        lines += ["| key | type | default | description |", "|---|---|---|---|"]
        lines += [
            f"| {r.key} | {cell(r.type)} | {cell(r.default)} | {cell(r.description)} |"
            for r in table.rows
        ]
        lines.append("")
    return lines


def cell(text: str) -> str:
    """Markdown for a table cell: `|` escaped everywhere; outside code spans `*`, and `<` where
    it would open an HTML tag (`<model>`), which would hide the text."""
    parts = text.replace("|", "\\|").split("`")
    for index in range(0, len(parts), 2):
        parts[index] = re.sub(r"\*|<(?=[A-Za-z/!?])", lambda m: "\\" + m[0], parts[index])
    return "`".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m configs.reference", description=__doc__)
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--out", type=Path, help="write the page here (default: stdout)")
    action.add_argument(
        "--check",
        nargs="?",
        type=Path,
        const=PAGE,
        help=f"exit 1 when this page (default {PAGE.name}) differs from the schema's",
    )
    args = parser.parse_args(argv)
    page = render()
    if args.check:
        if not args.check.is_file() or args.check.read_text(encoding="utf-8") != page:
            print(f"{args.check} is stale: regenerate it with `{COMMAND}`", file=sys.stderr)
            return 1
        print(f"{args.check} matches the schema")
    elif args.out:
        args.out.write_text(page, encoding="utf-8")
        print(f"configuration reference -> {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
