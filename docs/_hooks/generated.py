"""MkDocs hook: the pages generated from the code, so that they cannot drift from it.

- ``cli.md``: ``{{ cli }}`` becomes the options of every workflow entry point, read from the
  docstrings of ``workflow.main``, ``sweep``, ``inspect`` and ``evaluate`` (what ``redun run
  workflow.py main help`` prints);
- ``index.md``: ``{{ readme }}`` becomes the README, so the site's first page is the README;
- ``python.md`` is written in the repository already; the tutorial notebook is its code
  (``tests/test_tutorial.py``);
- every page: the Sphinx roles of the docstrings (``:func:`~gpo_vae.pp.prepare```), which
  mkdocstrings leaves as text, become plain code (``prepare``; the full path without ``~``).
"""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENTRY_POINTS = ("main", "sweep", "inspect", "evaluate")


def cli_reference() -> str:
    """Markdown of every entry point's docstring (its summary and its options block)."""
    sys.path.insert(0, str(ROOT))
    import workflow

    parts = []
    for name in ENTRY_POINTS:
        task = getattr(workflow, name)
        func = getattr(task, "func", task)
        doc = inspect.cleandoc(func.__doc__ or "")
        summary, _, rest = doc.partition("\n")
        parts.append(
            f"## `{name}`\n\n{summary}\n\n```text\n.venv/bin/redun run workflow.py {name} [options]\n{rest.strip()}\n```\n"
        )
    return "\n".join(parts)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if page.file.src_uri == "cli.md":
        return markdown.replace("{{ cli }}", cli_reference())
    if page.file.src_uri == "index.md":
        return markdown.replace("{{ readme }}", (ROOT / "README.md").read_text())
    return markdown


#: A Sphinx cross-reference role as mkdocstrings renders it: the role as text, the target as code.
SPHINX_ROLE = re.compile(
    r":(?:py:)?(?:func|class|meth|mod|attr|data|exc|obj|const):<code>(~?)([\w.]+)</code>"
)


def on_page_content(html: str, page, config, files) -> str:
    """Sphinx roles in rendered docstrings as plain code (``~`` keeps the last name, as Sphinx does)."""
    return SPHINX_ROLE.sub(
        lambda m: f"<code>{m.group(2).rsplit('.', 1)[-1] if m.group(1) else m.group(2)}</code>", html
    )
