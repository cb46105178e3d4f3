"""HTML building blocks of the report: number formatting, escaped tables, figures, the page.

Everything is inline (CSS in a ``<style>`` element, figures as ``data:`` URIs), so the page is
one file that opens anywhere without a server or network access.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Iterable, Sequence
from numbers import Integral, Real

import numpy as np
import pandas as pd

MISSING = "—"

CSS = """
:root { --ink: #1f2933; --muted: #616e7c; --line: #d9e2ec; --accent: #1f5f99; --bg: #f7f9fb; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       color: var(--ink); background: var(--bg); }
main { max-width: 1180px; margin: 0 auto; padding: 24px 32px 64px; background: #fff;
       box-shadow: 0 0 0 1px var(--line); }
h1 { font-size: 26px; margin: 8px 0 4px; }
h2 { font-size: 20px; margin: 40px 0 8px; padding-top: 12px; border-top: 2px solid var(--line); }
h3 { font-size: 16px; margin: 20px 0 6px; }
p.lead, p.note { color: var(--muted); margin: 4px 0 12px; }
nav { position: sticky; top: 0; z-index: 10; margin: 12px -32px 8px; padding: 8px 32px; font-size: 14px;
      background: #fff; border-bottom: 1px solid var(--line); }
nav a { color: var(--accent); text-decoration: none; margin-right: 14px; white-space: nowrap; }
section { scroll-margin-top: 52px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(165px, 1fr)); gap: 12px; margin: 16px 0; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 10px 14px; }
.card .value { font-size: 22px; font-weight: 600; overflow-wrap: anywhere; }
.card .label { font-size: 12px; color: var(--muted); text-transform: uppercase; letter-spacing: .03em; }
.verdict { border-left: 5px solid var(--muted); background: #f0f4f8; padding: 10px 14px; margin: 12px 0; }
.verdict.bad { border-color: #c0392b; background: #fdf0ee; }
.verdict.good { border-color: #2e8540; background: #eef7f0; }
.missing { color: var(--muted); font-style: italic; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 13px; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
td:first-child { white-space: nowrap; }
caption { text-align: left; color: var(--muted); padding-bottom: 4px; }
th { background: #eef2f6; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.highlight td { background: #fff8e1; }
figure { margin: 12px 0 20px; }
figure img { max-width: 100%; height: auto; display: block; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; }
details { margin: 8px 0 16px; }
summary { cursor: pointer; color: var(--accent); }
code { font-size: 13px; }
.two { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
.two > * { flex: 1 1 420px; min-width: 0; }
"""


def format_number(value: object) -> str:
    """A number for a table: integers whole, other values to 3 significant digits, NaN as a dash.

    Values of 1,000 or more are rounded to whole numbers with thousands separators (3 digits
    would turn an IWELBO of −12,345 into ``-1.23e+04``).
    """
    if value is None or isinstance(value, bool | np.bool_):
        return MISSING if value is None else ("yes" if value else "no")
    if isinstance(value, Integral):
        return f"{int(value):,}"
    if not isinstance(value, Real):
        return str(value)
    x = float(value)
    if math.isnan(x):
        return MISSING
    if math.isinf(x):
        return "∞" if x > 0 else "-∞"
    if abs(x) >= 1000 or (x == round(x) and abs(x) >= 1):
        return f"{x:,.0f}"
    text = f"{x:.3g}"
    return "0" if text in ("0", "-0") else text


def escape(value: object) -> str:
    """``html.escape`` of the cell text (numbers formatted by :func:`format_number`)."""
    text = format_number(value) if isinstance(value, Real | np.bool_) or value is None else str(value)
    return html.escape(text)


def html_table(
    frame: pd.DataFrame,
    headers: Sequence[str] | None = None,
    highlight: Iterable[bool] | None = None,
    caption: str | None = None,
) -> str:
    """An escaped HTML table of ``frame`` (index dropped); numeric columns right-aligned.

    ``headers`` replaces the column names (same length); ``highlight`` marks rows.
    """
    names = list(frame.columns) if headers is None else list(headers)
    if len(names) != frame.shape[1]:
        raise ValueError(f"{len(names)} headers for {frame.shape[1]} columns")
    numeric = [pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns]
    marks = [False] * len(frame) if highlight is None else list(highlight)
    head = "".join(
        f'<th class="num">{html.escape(str(n))}</th>' if num else f"<th>{html.escape(str(n))}</th>"
        for n, num in zip(names, numeric, strict=True)
    )
    rows = []
    for values, mark in zip(frame.itertuples(index=False), marks, strict=True):
        cells = "".join(
            f'<td class="num">{escape(v)}</td>' if num else f"<td>{escape(v)}</td>"
            for v, num in zip(values, numeric, strict=True)
        )
        rows.append(f'<tr class="highlight">{cells}</tr>' if mark else f"<tr>{cells}</tr>")
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` of PNG bytes."""
    if not png.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError("not PNG data")
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure_html(png: bytes, alt: str, caption: str | None = None) -> str:
    """An inline ``<figure>`` holding the PNG, with escaped alt text and caption."""
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{png_data_uri(png)}" alt="{html.escape(alt)}">{cap}</figure>'


def not_computed(what: str, files: Sequence[str]) -> str:
    """The placeholder of a section whose tables are absent."""
    names = ", ".join(f"<code>{html.escape(f)}</code>" for f in files)
    return (
        f'<p class="missing">{html.escape(what)}: not computed (no {names} in the evaluation directory).</p>'
    )


_EMPTY_SECTION = re.compile(
    r'^<section id="[^"]*"><h2>.*?</h2>(?:<p class="lead">.*?</p>)?((?:<p class="missing">.*?</p>)+)</section>$',
    re.S,
)


def missing_only(section_html: str) -> list[str] | None:
    """The "not computed" notes of a section that holds nothing else (None when it shows
    something): such a section is left out of the page and its notes listed once instead."""
    found = _EMPTY_SECTION.match(section_html)
    if found is None:
        return None
    return re.findall(r'<p class="missing">(.*?)</p>', found.group(1), re.S)


def section(anchor: str, title: str, body: str, lead: str | None = None) -> str:
    """A titled ``<section>`` with an anchor for the table of contents."""
    intro = f'<p class="lead">{html.escape(lead)}</p>' if lead else ""
    return f'<section id="{html.escape(anchor)}"><h2>{html.escape(title)}</h2>{intro}{body}</section>'


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str, str]]) -> str:
    """The whole document: ``sections`` are ``(anchor, nav label, section HTML)``."""
    nav = "".join(f'<a href="#{html.escape(a)}">{html.escape(label)}</a>' for a, label, _ in sections)
    body = "\n".join(s for _, _, s in sections)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n"
        f'<body><main><h1>{html.escape(title)}</h1><p class="lead">{html.escape(subtitle)}</p>'
        f"<nav>{nav}</nav>\n{body}\n</main></body></html>\n"
    )
