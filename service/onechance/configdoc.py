"""The configuration reference, ``docs/configuration.md``, generated from the settings model (:mod:`onechance.config`).

Every setting's TOML key, environment variable, type, default, constraints and description come from the
pydantic model itself (``Field(description=...)``), so the reference cannot say something the code does not::

    python -m onechance.configdoc                                   # print the reference
    python -m onechance.configdoc --output docs/configuration.md    # (re)write it
    python -m onechance.configdoc --check docs/configuration.md     # exit 1 when the file is out of date

``tests/test_config_reference.py`` fails when ``docs/configuration.md`` differs from what this prints.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path, PurePath
from typing import Any, Literal

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from .config import CONFIG_ENV, Settings

__all__ = ["Entry", "Table", "main", "render", "tables", "undescribed_fields"]

ENV_PREFIX = "ONECHANCE_"
GENERATED_BY = "python -m onechance.configdoc --output docs/configuration.md"


class ConfigDocError(Exception):
    """The model holds something the generator does not know how to describe (extend the generator)."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One setting: a row of the reference."""

    key: str  # the dotted TOML key: ami.port, queues.<name>.mute, alerts.channels[].url
    env: str  # the environment variable, or "" when the setting is only given inside a JSON list
    type: str
    default: str
    constraints: str
    description: str


@dataclass(slots=True)
class Table:
    """One TOML table (section) of the reference."""

    heading: str  # Top level, [ami], [[pbx]], [queues.<name>]...
    description: str
    env_note: str = ""
    entries: list[Entry] = field(default_factory=list)
    same_as: str = ""  # a list of tables with the keys of another table ([[pbx]]: those of [ami])


# ---- walking the model ---------------------------------------------------------------------------------------
def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    """``X | None`` -> ``(X, True)``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _model_of(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _kind(annotation: Any) -> tuple[str, type[BaseModel] | None]:
    """``("section" | "table_of" | "list_of" | "leaf", model)`` of a field's annotation."""
    inner, _optional = _strip_optional(annotation)
    model = _model_of(inner)
    if model is not None:
        return "section", model
    origin, args = typing.get_origin(inner), typing.get_args(inner)
    if origin is dict and len(args) == 2 and _model_of(args[1]) is not None:
        return "table_of", _model_of(args[1])
    if origin is list and len(args) == 1 and _model_of(args[0]) is not None:
        return "list_of", _model_of(args[0])
    return "leaf", None


def _described(fld: FieldInfo, where: str) -> str:
    text = (fld.description or "").strip()
    if not text:
        raise ConfigDocError(f"{where}: no description (give it Field(description=...) in onechance/config.py)")
    return text


def tables(model: type[BaseModel] = Settings) -> list[Table]:
    """The reference's tables, in the model's order: the top level first, then each section."""
    top = Table("Top level", "Settings outside any table, at the top of the file.")
    out = [top]
    rendered: dict[type[BaseModel], str] = {}
    _walk(model, [], ENV_PREFIX, top, out, rendered, in_list="")
    return out


def _walk(model: type[BaseModel], path: list[str], env_prefix: str, table: Table, out: list[Table],
          rendered: dict[type[BaseModel], str], in_list: str) -> None:
    """Add ``model``'s leaves to ``table`` and a table of its own for each of its sections."""
    subsections: list[tuple[str, FieldInfo, str, type[BaseModel]]] = []
    for name, fld in model.model_fields.items():
        where = ".".join([*path, name])
        kind, sub = _kind(fld.annotation)
        if kind == "leaf":
            table.entries.append(_entry(fld, where, "" if in_list else f"{env_prefix}{name.upper()}"))
        else:
            assert sub is not None
            subsections.append((name, fld, kind, sub))
    for name, fld, kind, sub in subsections:
        where = ".".join([*path, name])
        text = _described(fld, where)
        if kind == "section":
            section = Table(f"[{where}]", text)
            out.append(section)
            rendered.setdefault(sub, section.heading)
            _walk(sub, [*path, name], f"{env_prefix}{name.upper()}__", section, out, rendered, in_list)
        elif kind == "table_of":
            heading = f"[{where}.<name>]"
            note = "" if in_list else (
                f"From the environment: `{env_prefix}{name.upper()}__<NAME>__<KEY>`; names come lowercased "
                "from the environment (name tables with capitals in the TOML file).")
            section = Table(heading, text, env_note=note)
            out.append(section)
            rendered.setdefault(sub, heading)
            _walk(sub, [*path, f"{name}.<name>"], f"{env_prefix}{name.upper()}__<NAME>__", section, out, rendered,
                  in_list)
        else:  # a list of tables
            heading = f"[[{where}]]"
            env = f"{env_prefix}{name.upper()}"
            note = "" if in_list else (
                f"From the environment: the whole list as JSON in `{env}`, e.g. "
                f"`{env}='[{{\"name\": \"a\", ...}}, {{...}}]'`.")
            section = Table(heading, text, env_note=note)
            out.append(section)
            if sub in rendered:
                section.same_as = rendered[sub]
                continue
            rendered[sub] = heading
            _walk(sub, [*path, f"{name}[]"], "", section, out, rendered, in_list=in_list or env)


def _entry(fld: FieldInfo, key: str, env: str) -> Entry:
    return Entry(key=key, env=env, type=type_text(fld.annotation), default=default_text(fld),
                 constraints=constraints_text(fld), description=_described(fld, key))


def undescribed_fields(model: type[BaseModel] = Settings) -> list[str]:
    """Every field of the model and its sections (at any depth) without a description, as dotted keys."""
    out: list[str] = []
    seen: set[type[BaseModel]] = set()

    def visit(m: type[BaseModel], path: str) -> None:
        if m in seen:
            return
        seen.add(m)
        for name, fld in m.model_fields.items():
            where = f"{path}{name}"
            if not (fld.description or "").strip():
                out.append(where)
            _kind_name, sub = _kind(fld.annotation)
            if sub is not None:
                visit(sub, where + ".")

    visit(model, "")
    return out


# ---- one setting's cells ---------------------------------------------------------------------------------------
_SCALARS: dict[Any, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    Path: "path",
    date: "date (`YYYY-MM-DD`)",
    SecretStr: "string (secret)",
}


def type_text(annotation: Any) -> str:
    """A setting's type, in words (``X | None`` is X: its default says ``unset``)."""
    inner, _optional = _strip_optional(annotation)
    if inner in _SCALARS:
        return _SCALARS[inner]
    origin, args = typing.get_origin(inner), typing.get_args(inner)
    if origin is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin is list and len(args) == 1:
        item, _ = _strip_optional(args[0])
        if typing.get_origin(item) is Literal:
            return "list of " + ", ".join(f"`{a}`" for a in typing.get_args(item))
        if item in _SCALARS:
            return f"list of {_SCALARS[item].split(' ')[0]}s" + (" (`YYYY-MM-DD`)" if item is date else "")
    raise ConfigDocError(f"no words for the type {annotation!r}: extend onechance.configdoc.type_text")


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, PurePath):
        text = value.as_posix()
        return json.dumps(text if value.is_absolute() or text.startswith(".") else f"./{text}")
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, date):
        return value.isoformat()
    raise ConfigDocError(f"no TOML for the default {value!r}: extend onechance.configdoc")


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600)):
        if seconds >= size and seconds % size == 0:
            return f" ({seconds / size:g} {unit})"
    return ""


def default_text(fld: FieldInfo) -> str:
    if fld.default_factory is not None:
        value = fld.default_factory()  # type: ignore[call-arg]
    elif fld.default is PydanticUndefined:
        return "(required)"
    else:
        value = fld.default
    if value is None:
        return "unset"
    if isinstance(value, SecretStr):
        raise ConfigDocError("a secret must not have a default")
    text = f"`{_toml(value)}`"
    inner, _ = _strip_optional(fld.annotation)
    if inner is float and isinstance(value, float):
        text += _duration(value)
    return text


_BOUNDS = ((annotated_types.Ge, "ge", "≥"), (annotated_types.Gt, "gt", ">"), (annotated_types.Le, "le", "≤"),
           (annotated_types.Lt, "lt", "<"))


def constraints_text(fld: FieldInfo) -> str:
    """The bounds pydantic checks (``ge``, ``gt``, ``le``, ``lt``); other rules are in the description."""
    parts = []
    for item in fld.metadata:
        for cls, attr, sign in _BOUNDS:
            if isinstance(item, cls):
                parts.append(f"{sign} {getattr(item, attr)}")
                break
        else:
            raise ConfigDocError(f"no words for the constraint {item!r}: extend onechance.configdoc")
    return ", ".join(parts)


# ---- the page ---------------------------------------------------------------------------------------------------
def _cell(text: str) -> str:
    return _linked(text).replace("|", "\\|")


def _linked(text: str) -> str:
    """``(docs/alerts.md)`` in a description -> a link to the page next to this one."""
    return re.sub(r"\bdocs/([a-z_]+\.md)\b", r"[\1](\1)", text)


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lowercase, punctuation dropped, spaces to hyphens."""
    kept = "".join(c for c in heading.lower() if c.isalnum() or c in " -_")
    return kept.replace(" ", "-")


def _heading(table: Table) -> str:
    return table.heading if table.heading == "Top level" else f"`{table.heading}`"


INTRO = f"""\
# Configuration reference

<!-- Generated from the settings model (service/onechance/config.py) by `{GENERATED_BY}`.
     Do not edit by hand: change the model's Field(description=...) and regenerate;
     tests/test_config_reference.py fails while this file differs from the model. -->

Every setting onechance reads, generated from its settings model (`onechance.config.Settings`). A sample file:
[asterisk-conf/onechance.toml](../asterisk-conf/onechance.toml); the daemon itself: [daemon.md](daemon.md).

## Where settings come from

Highest precedence first:

1. **Environment variables** `ONECHANCE_<SECTION>__<KEY>`: the table and the key joined by two underscores,
   e.g. `ONECHANCE_AMI__HOST`, `ONECHANCE_HTTP__TOKEN`, `ONECHANCE_DATABASE__URL`; top-level keys have one
   underscore after the prefix (`ONECHANCE_LOG_LEVEL`). Names are case-insensitive. A list is given as JSON
   (`ONECHANCE_JOURNEY__ALERT_KINDS='["abandoned", "timeout"]'`), and so is a list of tables (`ONECHANCE_PBX`,
   `ONECHANCE_ALERTS__CHANNELS`). Environment variables are merged into the file's tables key by key.
2. **The TOML file** named by `--config FILE` or `{CONFIG_ENV}`.
3. **The defaults** below.

A key the model does not know is a configuration error, in the file as in the environment
(`ONECHANCE_AMI__PROT`): the command stops with exit code 2 and one line per problem (`invalid configuration in
FILE:` then `ami.prot: Extra inputs are not permitted`). Any `ONECHANCE_*` variable no setting reads (a typo such
as `ONECHANCE_AMI_HOST`, with one underscore, would otherwise go unnoticed) makes `run`, `demo` and
`check-config` warn on standard error, with the closest name: `onechance run: warning: unknown environment
variable ONECHANCE_AMI_HOST (did you mean ONECHANCE_AMI__HOST?): no setting reads it`.

`onechance check-config [--config FILE]` validates everything and prints the effective settings as JSON, with
`secret`, `token`, channel URLs and the database password masked. Keep secrets out of the file: the
`*_file` settings (`ami.secret_file`, `alerts.channels[].url_file`, `alerts.channels[].secret_file`) name a file
holding one, or give them as environment variables (an environment file of systemd or docker-compose:
[install.md](install.md)).

Durations are in seconds unless the key says otherwise (`session_hours`). "unset" means the key is absent (the
setting is off, or takes the value its description gives).

## Sections
"""


def render(model: type[BaseModel] = Settings) -> str:
    """The whole reference, as Markdown."""
    parts = [INTRO]
    all_tables = tables(model)
    for table in all_tables:
        parts.append(f"* [{_heading(table)}](#{_anchor(_heading(table))}): {_linked(table.description)}")
    for table in all_tables:
        parts.append("")
        parts.append(f"## {_heading(table)}")
        parts.append("")
        text = _linked(table.description)
        parts.append(text if text.endswith(".") else text + ".")
        if table.env_note:
            parts.append(table.env_note)
        if table.same_as:
            parts.append(f"Each table takes the keys of [`{table.same_as}`](#{_anchor(f'`{table.same_as}`')}).")
            continue
        if not table.entries:
            continue
        parts.append("")
        parts.append("| key | environment variable | type | default | constraints | description |")
        parts.append("|---|---|---|---|---|---|")
        for e in table.entries:
            env = f"`{e.env}`" if e.env else "(in the JSON list)"
            parts.append(f"| `{e.key}` | {env} | {_cell(e.type)} | {_cell(e.default)} | {_cell(e.constraints)} | "
                         f"{_cell(e.description)} |")
    return "\n".join(parts).rstrip("\n") + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m onechance.configdoc",
                                     description="Print, write or check the configuration reference "
                                                 "(docs/configuration.md), generated from the settings model.")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--output", metavar="FILE", help="write the reference to FILE")
    group.add_argument("--check", metavar="FILE", help="exit 1 when FILE differs from the reference")
    args = parser.parse_args(argv)
    try:
        text = render()
    except ConfigDocError as exc:
        print(f"onechance.configdoc: {exc}", file=sys.stderr)
        return 2
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        return 0
    if args.check:
        try:
            current = Path(args.check).read_text(encoding="utf-8")
        except OSError as exc:
            print(f"onechance.configdoc: {args.check}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        if current != text:
            print(f"onechance.configdoc: {args.check} is out of date with the settings model: regenerate it with "
                  f"`python -m onechance.configdoc --output {args.check}`", file=sys.stderr)
            return 1
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
