"""Documentation of a config dataclass tree, read from the classes themselves.

Each config dataclass documents its keys in its docstring's ``Attributes:`` section (Google
style: ``name: text``, continuation lines indented further; one entry may name several keys,
``lr_lora / lr_heads: ...`` or ``lora_rank, lora_alpha: ...``). ``entries`` walks the tree and
gives every key its dotted path, type, default, current value and text; ``markdown`` renders
the reference page (``docs/CONFIG.md``) and ``text`` the listing of ``rehearse config show``.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

from core.configlib import to_dict

_HEAD = re.compile(r"^(\s*)([A-Za-z_][\w]*(?:\s*(?:,|/)\s*[A-Za-z_][\w]*)*)\s*:\s+(.*)$")


@dataclass(frozen=True)
class Entry:
    """One config key: dotted ``key``, ``type`` (readable), ``default`` and ``value`` (YAML-able),
    ``doc`` (its docstring text, "" if it has none)."""

    key: str
    type: str
    default: Any
    value: Any
    doc: str


def field_docs(cls: type) -> dict[str, str]:
    """{field name: text} from the ``Attributes:`` section of ``cls``'s docstring."""
    lines = (cls.__doc__ or "").expandtabs().splitlines()
    try:
        start = next(i for i, ln in enumerate(lines) if ln.strip() == "Attributes:")
    except StopIteration:
        return {}
    names = {f.name for f in dataclasses.fields(cls)}
    docs: dict[str, str] = {}
    current: list[str] = []
    indent = None
    for ln in lines[start + 1 :]:
        if not ln.strip():
            continue
        m = _HEAD.match(ln)
        depth = len(ln) - len(ln.lstrip())
        if indent is None:
            indent = depth
        if depth < indent:
            break  # the section ended
        keys = re.split(r"\s*[,/]\s*", m.group(2)) if m and depth == indent else []
        if keys and all(k in names for k in keys):
            current = keys
            for k in keys:
                docs[k] = m.group(3).strip()
        elif current:
            for k in current:
                docs[k] += " " + ln.strip()
    return docs


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin is typing.Union or type(tp).__name__ == "UnionType":
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin in (list, tuple, dict):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in get_args(tp))}]"
    if tp is type(None):
        return "null"
    if tp is Ellipsis:
        return "..."
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def entries(cfg: Any, prefix: str = "") -> list[Entry]:
    """Every leaf key of the dataclass instance ``cfg``, depth first in field order."""
    cls = type(cfg)
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    defaults = cls()
    out: list[Entry] = []
    for f in dataclasses.fields(cls):
        value = getattr(cfg, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out += entries(value, prefix=key + ".")
            continue
        out.append(
            Entry(
                key=key,
                type=_type_name(hints[f.name]),
                default=to_dict(getattr(defaults, f.name)),
                value=to_dict(value),
                doc=docs.get(f.name, ""),
            )
        )
    return out


def sections(cfg: Any) -> dict[str, str]:
    """{section key: its text} for the top-level dataclass sections of ``cfg``."""
    docs = field_docs(type(cfg))
    return {
        f.name: docs.get(f.name, "")
        for f in dataclasses.fields(cfg)
        if dataclasses.is_dataclass(getattr(cfg, f.name))
    }


def _yaml(v: Any) -> str:
    import yaml

    return (
        yaml.safe_dump(v, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()
    )


def markdown(cfg: Any, *, title: str, intro: str) -> str:
    """The reference page: one table per section (key, type, default, meaning)."""
    heads = sections(cfg)
    rows: dict[str, list[Entry]] = {}
    for e in entries(cfg):
        rows.setdefault(e.key.split(".")[0] if "." in e.key else "", []).append(e)
    out = [f"# {title}", "", intro, ""]
    for section, es in rows.items():
        out += [f"## `{section}`" if section else "## Top level", ""]
        if heads.get(section):
            out += [heads[section][:1].upper() + heads[section][1:], ""]
        out += ["| key | type | default | meaning |", "|---|---|---|---|"]
        for e in es:
            typ, doc = (x.replace("|", "\\|") for x in (e.type, e.doc))
            out.append(f"| `{e.key}` | {typ} | `{_yaml(e.default)}` | {doc} |")
        out.append("")
    return "\n".join(out)


def text(cfg: Any) -> str:
    """``key: value`` lines of the resolved config, each with its text, and the default where
    the value differs from it."""
    out = []
    for e in entries(cfg):
        line = f"{e.key}: {_yaml(e.value)}"
        if e.value != e.default:
            line += f"    (default {_yaml(e.default)})"
        out.append(line)
        if e.doc:
            out.append(f"    # {e.doc}")
    return "\n".join(out)
