"""A self-contained HTML page (tables + PNGs embedded as data URIs) that can be mailed or archived as is."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path


@dataclass
class Table:
    """A captioned table; cells are formatted with ``format(value, fmt)`` when they are floats."""

    caption: str
    header: Sequence[str]
    rows: Sequence[Sequence[object]]
    fmt: str = ".4g"


@dataclass
class Section:
    """A heading with optional text, tables and images (PNG paths)."""

    heading: str
    text: str = ""
    tables: list[Table] = field(default_factory=list)
    images: list[Path] = field(default_factory=list)


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
caption { text-align: left; font-weight: bold; margin-bottom: 0.3em; }
img { max-width: 100%; display: block; margin: 0.5em 0 1.5em; }
.meta { color: #666; font-size: 0.9em; }
"""


def _cell(value: object, fmt: str) -> str:
    if isinstance(value, float):
        return escape(format(value, fmt))
    return escape(str(value))


def _table(table: Table) -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in table.header)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(v, table.fmt)}</td>" for v in row) + "</tr>" for row in table.rows
    )
    return f"<table><caption>{escape(table.caption)}</caption><tr>{head}</tr>{body}</table>"


def _image(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{escape(Path(path).stem)}" src="data:image/png;base64,{data}">'


def render_html(title: str, sections: Sequence[Section], meta: str = "") -> str:
    """Render the page.

    Parameters
    ----------
    title : str
        Page title and top heading.
    sections : sequence of Section
        Body, in order.
    meta : str
        A line under the title (run ID, parents, date).

    Returns
    -------
    str
        The HTML document; every image is inlined, so the file stands alone.
    """
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>',
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
    ]
    if meta:
        parts.append(f'<p class="meta">{escape(meta)}</p>')
    for section in sections:
        parts.append(f"<h2>{escape(section.heading)}</h2>")
        if section.text:
            parts.append(f"<p>{escape(section.text)}</p>")
        parts.extend(_table(t) for t in section.tables)
        parts.extend(_image(p) for p in section.images)
    parts.append("</body></html>")
    return "\n".join(parts)
