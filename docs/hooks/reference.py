"""MkDocs hook: the pages the code knows the answer to, generated at every build.

- ``reference/configuration.md``: every config group, its options and each option's keys, defaults and
  comments, read from ``configs/`` (:func:`read_configs`).
- In any page, a line ``<!-- stage: module:NAME -->`` becomes the table of that ``Stage`` declaration (its
  parents, the settings that define its runs' identity, the execution-only ones and its headline metric);
  ``<!-- evaluate-stages -->`` becomes one such table per ``eval`` option, from the evaluate stage's
  declaration factory.

The comment of a key is the comment lines directly above it and its trailing comment (with the comment lines
that continue it in the same column); an option's comment is its file's leading comment block; a group's is
the comment of the defaults-list entry that selects it. ``tests/test_docs.py`` requires all three.
"""

from __future__ import annotations

import html
import importlib
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
REFERENCE_PAGE = "reference/configuration.md"
#: The entry points' root configs, in pipeline order.
ROOT_CONFIGS = ("extract", "curate", "train", "evaluate")

_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w@.-]*):(?:\s|$)")
_ENTRY = re.compile(r"^\s*-\s+(?:override\s+|optional\s+)*(?P<name>[^:#\s]+)(?::\s*(?P<value>[^#\s]+))?")
_STAGE_MARK = re.compile(r"^<!-- stage: (?P<path>[\w.]+):(?P<name>\w+) -->$", re.M)
_EVALUATE_MARK = "<!-- evaluate-stages -->"


@dataclass
class Key:
    """One key of a config file: its dotted override path, its default as written, its comment."""

    path: str
    default: str
    doc: str


@dataclass
class Option:
    """One config file: a group's option (or a root config, group ``""``)."""

    group: str
    name: str
    file: Path
    package: str
    doc: str
    target: str | None
    extends: list[str]
    keys: list[Key]


@dataclass
class Group:
    """A config group (a directory of options), its comment and its default where one is selected."""

    name: str
    doc: str = ""
    default: str | None = None
    options: list[Option] = field(default_factory=list)


def _split_comment(line: str) -> tuple[str, str | None, int]:
    """``line`` without its trailing comment, the comment's text (or None) and its column."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i + 1 :].strip(), i
    return line.rstrip(), None, -1


def _brackets(text: str) -> int:
    """Brackets ``text`` opens and does not close (a flow value continued on the next line)."""
    code = _split_comment(text)[0]
    return sum(code.count(c) for c in "[{") - sum(code.count(c) for c in "]}")


def _is_comment(line: str) -> bool:
    return line.lstrip().startswith("#")


def _header(lines: list[str]) -> tuple[str, int]:
    """The file's leading comment block (without ``# @package``) and the index of the line after it."""
    text, i = [], 0
    while i < len(lines) and _is_comment(lines[i]):
        body = lines[i].strip()[1:].strip()
        if not body.startswith("@package"):
            text.append(body)
        i += 1
    return " ".join(text), i


def _leaves(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, child in value.items():
            out.update(_leaves(child, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: value} if prefix else {}


def _at(loaded: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        loaded = loaded[part]
    return loaded


def _prefixes(path: str) -> list[str]:
    parts = path.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _exempt(path: str) -> bool:
    """Hydra's own keys (``_target_`` ...) and the defaults list explain themselves."""
    last = path.rsplit(".", 1)[-1]
    return path == "defaults" or (last.startswith("_") and last.endswith("_"))


def read_option(file: Path, group: str) -> Option:
    """Parse one config file: its comment, package, defaults list and every leaf key with its comment.

    Raises
    ------
    ValueError
        The lines found as keys are not the file's leaf keys (a layout this reader does not know).
    """
    lines = file.read_text().splitlines()
    doc, start = _header(lines)
    package_line = next((ln for ln in lines if ln.startswith("# @package")), None)
    package = package_line.split()[-1] if package_line else (group.replace("/", ".") or "_global_")
    loaded = yaml.safe_load(file.read_text()) or {}
    leaves = {p: v for p, v in _leaves(loaded).items() if not p.startswith("defaults")}

    keys: dict[str, Key] = {}
    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing mappings
    above: list[str] = []
    # The key whose trailing comment later lines may continue, and the comment's column.
    last: tuple[str, int] | None = None
    depth = 0  # open brackets of a flow value that continues on the next lines
    for line in lines[start:]:
        if depth:
            depth += _brackets(line)
            continue
        if not line.strip():
            above, last = [], None
            continue
        if _is_comment(line):
            column = line.index("#")
            text = line.strip()[1:].strip()
            if last and column == last[1]:
                keys[last[0]].doc += " " + text
            else:
                above.append(text)
                last = None
            continue
        match = _KEY.match(line)
        if not match:  # a defaults-list entry
            above, last = [], None
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([*(k for _, k in stack), match["key"]])
        value, comment, column = _split_comment(line[match.end() :])
        stack.append((indent, match["key"]))
        depth = _brackets(value)
        if value.strip() or path in leaves:  # a value on the line (a flow mapping too), or a leaf
            docs = [*above, *([comment] if comment else [])]
            written = value.strip() if value.strip() and not depth else None
            keys[path] = Key(path, written or _flow(_at(loaded, path)), " ".join(docs))
            last = (path, match.end() + column) if comment else None
        else:
            last = None
        above = []
    covered = {leaf for leaf in leaves if any(leaf == k or leaf.startswith(k + ".") for k in keys)}
    if covered != set(leaves) or not set(keys) <= {p for leaf in leaves for p in _prefixes(leaf)}:
        raise ValueError(f"{file}: keys read {sorted(keys)} are not the file's leaf keys {sorted(leaves)}")

    extends = [
        m["name"] + (f": {m['value']}" if m["value"] else "")
        for m in map(_ENTRY.match, _defaults(lines))
        if m
    ]
    target = loaded.get("_target_") if isinstance(loaded, dict) else None
    prefix = "" if package == "_global_" else package + "."
    for key in keys.values():
        key.path = prefix + key.path
    return Option(group, file.stem, file, package, doc, target, extends, list(keys.values()))


def _defaults(lines: list[str]) -> list[str]:
    """The entries of the file's top-level defaults list (not ``_self_``)."""
    try:
        i = lines.index("defaults:")
    except ValueError:
        return []
    entries = []
    for line in lines[i + 1 :]:
        if line and not line.startswith(" "):
            break
        if line.strip().startswith("-") and "_self_" not in line:
            entries.append(line)
    return entries


def _flow(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10_000)
    return text.removesuffix("...\n").strip()


def read_configs(configs: Path = CONFIGS) -> tuple[list[Option], list[Group]]:
    """The root configs and every group of ``configs`` with its options, defaults and comments."""
    roots = [read_option(configs / f"{name}.yaml", "") for name in ROOT_CONFIGS]
    groups: dict[str, Group] = {}
    for file in sorted(configs.rglob("*.yaml")):
        if file.parent == configs or "local" in file.relative_to(configs).parts:
            continue
        name = file.parent.relative_to(configs).as_posix()
        groups.setdefault(name, Group(name)).options.append(read_option(file, name))
    # A group's comment and default: the defaults-list entry that selects it (the root configs and
    # pipeline/groups.yaml first), else one that overrides Hydra's own default (hydra/launcher); an
    # experiment's overrides are its recipe, not the group's default.
    first = [configs / f"{name}.yaml" for name in ROOT_CONFIGS] + [configs / "pipeline" / "groups.yaml"]
    files = [*first, *(f for f in sorted(configs.rglob("*.yaml")) if f not in first)]
    for overrides in (False, True):
        for file, name, value, comment in _selections(configs, files):
            group = groups.get(name)
            if group is None or ("override" in comment[0]) != overrides or "experiment" in file.parts:
                continue
            if comment[1] and not group.doc:
                group.doc = comment[1]
            if value != "null" and group.default is None:
                group.default = value
    return roots, sorted(groups.values(), key=lambda g: g.name)


def _selections(configs: Path, files: list[Path]) -> Iterator[tuple[Path, str, str, tuple[str, str | None]]]:
    """Each group-selecting defaults-list entry of ``files``: the file, the group, the option and (the
    entry's text, its comment)."""
    for file in files:
        own = "" if file.parent == configs else file.parent.relative_to(configs).as_posix()
        for line in _defaults(file.read_text().splitlines()):
            match = _ENTRY.match(line)
            name, value = (match["name"], match["value"]) if match else ("@", None)
            if "@" in name:  # a group's option placed elsewhere (dataset@monitor.dataset) is not the group
                continue
            if value is None:  # a config by path (pipeline/groups), or one of the file's own group
                if "/" not in name:
                    continue
                name, value = name.rsplit("/", 1)
            name = name[1:] if name.startswith("/") else "/".join(p for p in (own, name) if p)
            text, comment, _ = _split_comment(line)
            yield file, name, value, (text, comment or _comment_above(file, line))


def _comment_above(file: Path, line: str) -> str | None:
    lines = file.read_text().splitlines()
    i = lines.index(line)
    above = []
    while i > 0 and _is_comment(lines[i - 1]):
        i -= 1
        above.insert(0, lines[i].strip()[1:].strip())
    return " ".join(above) or None


def missing_comments(configs: Path = CONFIGS) -> list[str]:
    """Every group, option and key of ``configs`` that has no comment (Hydra's own keys are exempt)."""
    roots, groups = read_configs(configs)
    missing = [f"group {g.name}" for g in groups if not g.doc]
    for option in [*roots, *(o for g in groups for o in g.options)]:
        where = option.file.relative_to(configs)
        if not option.doc:
            missing.append(f"{where}: the file's leading comment")
        missing += [f"{where}: key {k.path}" for k in option.keys if not k.doc and not _exempt(k.path)]
    return missing


# Markdown ------------------------------------------------------------------------------------------------


def _text(text: str) -> str:
    """Comment text for a table cell: code spans kept, HTML and Markdown markup escaped elsewhere."""
    parts = re.split(r"(`[^`]*`)", text)
    for i in range(0, len(parts), 2):
        part = html.escape(parts[i], quote=False)
        parts[i] = re.sub(r"([\\*_\[\]|])", r"\\\1", part)
    return "".join(parts)


def _code(value: str) -> str:
    return f"`` {value} ``" if "`" in value else f"`{value}`"


def _anchor(group: str) -> str:
    return "group-" + group.replace("/", "-")


def _keys_table(keys: list[Key]) -> list[str]:
    rows = [k for k in keys if not _exempt(k.path)]
    if not rows:
        return []
    return [
        "| key | default | |",
        "| --- | --- | --- |",
        *(f"| {_code(k.path)} | {_code(k.default)} | {_text(k.doc)} |" for k in rows),
        "",
    ]


def _option_section(option: Option, level: str) -> list[str]:
    title = f"{option.group}={option.name}" if option.group else f"{option.name}.py"
    out = [f"{level} `{title}`", "", _text(option.doc), ""]
    facts = []
    if option.target:
        facts.append(f"class {_code(option.target)}")
    if option.extends:
        facts.append("defaults list: " + ", ".join(_code(e) for e in option.extends))
    if option.group and option.package != option.group.replace("/", "."):
        facts.append(f"package {_code(option.package)}")
    if facts:
        out += ["; ".join(facts), ""]
    return out + _keys_table(option.keys)


def configuration_reference(configs: Path = CONFIGS) -> str:
    """The configuration reference page, in Markdown."""
    roots, groups = read_configs(configs)
    out = [
        "# Configuration reference",
        "",
        "Generated from `configs/` at every build of this site: the comments are the config files' own.",
        "Each key is shown as its command-line override path (`survey.mosaics=8`); a default is shown as",
        "written, `${…}` being an interpolation of another key. Keys of Hydra's own (`_target_` …) are left out.",
        "",
        "## Groups",
        "",
        "| group | default | options | what it sets |",
        "| --- | --- | --- | --- |",
    ]
    for group in groups:
        options = ", ".join(f"[`{o.name}`](#{_anchor(group.name)}-{o.name})" for o in group.options)
        default = _code(group.default) if group.default else "none"
        out.append(
            f"| [`{group.name}`](#{_anchor(group.name)}) | {default} | {options} | {_text(group.doc)} |"
        )
    out += ["", "## Entry points", ""]
    out.append("Keys of the root configs: the stage's own settings, beside the groups.")
    out.append("")
    for option in roots:
        out += _option_section(option, "###")
    for group in groups:
        out += [f"## `{group.name}` {{ #{_anchor(group.name)} }}", "", _text(group.doc), ""]
        for option in group.options:
            section = _option_section(option, "###")
            section[0] += f" {{ #{_anchor(group.name)}-{option.name} }}"
            out += section
    return "\n".join(out) + "\n"


def stage_table(stage: Any, page: str) -> str:
    """A ``Stage`` declaration as a Markdown table, for the page at ``page`` (its path in docs/)."""

    def keys(values: Any) -> str:
        return ", ".join(_setting(v, page) for v in values) or "none"

    rows = [
        ("run IDs", f"`{stage.name}-<hash>`, under `runs/{stage.name}/`"),
        (
            "parents",
            ", ".join(f"`{k}` ({v} run)" for k, v in stage.parents.items()) or "none: the first stage",
        ),
        ("identity settings", keys(stage.settings)),
        ("execution-only settings", keys(stage.execution)),
        ("headline metric", f"`{stage.headline}`"),
    ]
    if stage.derived:
        rows.append(("derived identity", ", ".join(f"`{k}`" for k in stage.derived)))
    if stage.derive_parents:
        rows.append(
            (
                "parent when not given",
                ", ".join(f"`{k}`: the {v.name} run of this config" for k, v in stage.derive_parents.items()),
            )
        )
    if stage.resumable:
        rows.append(("resumes from", ", ".join(f"`{p}`" for p in stage.resumable)))
    if stage.distributed:
        rows.append(("DDP", "every rank runs it; rank 0 owns the run"))
    return "\n".join(["| | |", "| --- | --- |", *(f"| {a} | {b} |" for a, b in rows)]) + "\n"


def _setting(key: str, page: str) -> str:
    """A setting, linked to its group's reference when it lies in a group."""
    group = key.split(".")[0]
    if (CONFIGS / group).is_dir():
        link = posixpath.relpath(REFERENCE_PAGE, posixpath.dirname(page) or ".")
        return f"[`{key}`]({link}#{_anchor(group)})"
    return f"`{key}`"


def evaluate_tables(page: str, configs: Path = CONFIGS) -> str:
    """One stage table per ``eval`` option, from the evaluate stage's declaration factory."""
    from omegaconf import OmegaConf

    from radio_curation.tasks.evaluate import declaration

    out = []
    for file in sorted((configs / "eval").glob("*.yaml")):
        target = yaml.safe_load(file.read_text())["_target_"]
        stage = declaration(OmegaConf.create({"eval": {"_target_": target}}))
        out += [f"### `eval={file.stem}`", "", stage_table(stage, page)]
    return "\n".join(out)


# MkDocs events -------------------------------------------------------------------------------------------


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    files.append(File.generated(config, REFERENCE_PAGE, content=configuration_reference()))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    where = page.file.src_uri
    markdown = _STAGE_MARK.sub(
        lambda m: stage_table(getattr(importlib.import_module(m["path"]), m["name"]), where), markdown
    )
    if _EVALUATE_MARK in markdown:
        markdown = markdown.replace(_EVALUATE_MARK, evaluate_tables(where))
    return markdown
