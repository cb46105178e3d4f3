"""The README fits on a screen, the docs site builds without a warning, and every command the
README and the docs print names a real entry point, option, script or make target (the short
ones are run as printed)."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MAX_README_LINES = 150
#: Tools a page may run, all from the environment `make` builds.
VENV = ".venv/bin/"


def _shell_blocks(text: str) -> list[str]:
    """The bodies of fenced ``bash``/``sh`` blocks (fences may be indented, as in a list)."""
    blocks, body, language = [], None, None
    for line in text.splitlines():
        fence = re.match(r"^\s*```(\w*)\s*$", line)
        if fence and body is None:
            body, language = [], fence.group(1)
        elif fence:
            if language in ("bash", "sh"):
                blocks.append("\n".join(body))
            body = None
        elif body is not None:
            body.append(line)
    return blocks


def _commands(text: str) -> list[str]:
    """Command lines of shell blocks (continuations joined) and inline `.venv/bin/…` spans."""
    found = []
    for block in _shell_blocks(text):
        joined = re.sub(r"\\\n\s*", " ", block)
        found += [line.split(" #")[0].strip() for line in joined.splitlines()]
    found += re.findall(r"`(\.venv/bin/[^`]+)`", text)
    return [line for line in found if line and not line.startswith("#")]


def _all_commands() -> list[tuple[str, str]]:
    return [(path.name, line) for path in PAGES for line in _commands(path.read_text())]


def _entry_points() -> dict[str, inspect.Signature]:
    sys.path.insert(0, str(ROOT))
    import workflow

    return {
        name: inspect.signature(getattr(getattr(workflow, name), "func", getattr(workflow, name)))
        for name in ("main", "sweep", "inspect", "evaluate")
    }


def _options(words: list[str]) -> list[str]:
    return [w.split("=")[0][2:] for w in words if w.startswith("--")]


def test_the_readme_fits_on_a_screen_and_names_no_missing_file():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= MAX_README_LINES
    for name in re.findall(r"`((?:docs|configs|benchmarks)/[\w./-]+\.\w+)`", readme):
        assert (ROOT / name).exists(), name


def test_every_printed_command_names_what_exists():
    entry_points = _entry_points()
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"(?m)^([\w-]+):", makefile))
    shared = (ROOT / "benchmarks" / "_pool.py").read_text()
    checked = 0
    for page, line in _all_commands():
        words = shlex.split(line)
        first = words[0]
        assert first.split("/")[-1] not in ("redun", "python", "pytest", "pip") or first.startswith(VENV), (
            f"{page}: {line!r} runs a tool that is not on PATH after the Quickstart; write {VENV}{first}"
        )
        if first == "make":
            for word in words[1:]:
                if "=" not in word and not word.startswith("-"):
                    assert word in targets, f"{page}: make target {word!r} not in the Makefile"
            checked += 1
        elif first == f"{VENV}redun":
            rest = words[words.index("run") + 1 :] if "run" in words else []
            if not rest or rest[0] != "workflow.py":
                continue  # redun's own commands (db upgrade, console)
            entry = rest[1]
            assert entry in entry_points, f"{page}: no entry point {entry!r} ({line!r})"
            parameters = entry_points[entry].parameters
            for option in _options(rest[2:]):
                assert option.replace("-", "_") in parameters, f"{page}: {entry} has no --{option} ({line!r})"
            checked += 1
        elif first == f"{VENV}python" and len(words) > 1 and words[1].startswith("benchmarks/"):
            script = ROOT / words[1]
            assert script.is_file(), f"{page}: no {words[1]}"
            text = script.read_text()
            for option in _options(words[2:]):
                assert f"--{option}" in text or f'"{option}"' in text or f"--{option}" in shared, (
                    f"{page}: {words[1]} has no --{option}"
                )
            checked += 1
    assert checked >= 10, f"only {checked} commands found: the extraction is broken"


def test_the_readme_python_example_calls_the_api_as_it_is():
    """Every call of the README's example binds to the signature of what it calls."""
    from gpo_vae import GPOVAEModel, pp

    readme = (ROOT / "README.md").read_text()
    block = re.findall(r"```python\n(.*?)```", readme, flags=re.S)[0]
    targets = {
        "pp.prepare": pp.prepare,
        "GPOVAEModel.train": GPOVAEModel.train,
        "model.predict_shift": GPOVAEModel.predict_shift,
        "model.grn": GPOVAEModel.grn,
    }
    seen = set()
    for node in ast.walk(ast.parse(block)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name = f"{ast.unparse(node.func.value)}.{node.func.attr}"
            if name in targets:
                signature = inspect.signature(targets[name])
                arguments = [None] * len(node.args)
                keywords = {k.arg: None for k in node.keywords}
                if name.startswith("model."):
                    arguments = [None, *arguments]  # self
                signature.bind(*arguments, **keywords)
                seen.add(name)
    assert seen == set(targets)


def test_the_short_commands_run_as_printed():
    done = subprocess.run(
        [str(ROOT / VENV / "redun"), "run", "workflow.py", "main", "help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--split" in done.stdout + done.stderr


def test_the_docs_site_builds_without_a_warning(tmp_path: Path):
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    cli = (tmp_path / "site" / "cli.html").read_text()
    assert "--compare-sams-vae" in cli and "--sweep" in cli, "the CLI page is generated from the code"
    assert "Quickstart" in (tmp_path / "site" / "index.html").read_text()
