"""Docs that run: every docstring example, every Python block and command of the README and docs/, every link."""

import doctest
import importlib
import os
import pkgutil
import re
import shlex
import subprocess
import sys

import pytest

import c2am_tf
from c2am_tf.cli import COMMANDS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md")).read()
PAGES = ["README.md"] + sorted(os.path.relpath(os.path.join(d, f), ROOT) for d, _, files in os.walk(os.path.join(ROOT, "docs"))
                               for f in files if f.endswith(".md"))
MODULES = sorted(m.name for m in pkgutil.walk_packages(c2am_tf.__path__, "c2am_tf."))


def _text(page):
    return open(os.path.join(ROOT, page)).read()


def _blocks(language, pages=PAGES):
    """(page, block) of every fenced block in that language."""
    return [(page, block) for page in pages for block in re.findall(rf"```{language}\n(.*?)```", _text(page), re.S)]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in doctest.DocTestFinder().find(module, name):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


def test_the_docstring_examples_are_many():
    """Not vacuous: the modules above do carry examples."""
    count = sum(len(t.examples) for name in MODULES
                for t in doctest.DocTestFinder().find(importlib.import_module(name), name))
    assert count >= 40


def test_python_blocks_run_as_written(tmp_path, monkeypatch):
    """Each block of the README and docs/ on its own, in an empty folder, with nothing defined beforehand: what
    a reader pastes."""
    import c2am_tf.backbones

    # a block that registers a backbone (docs/backbones.md) must not leave it in the registry of later tests
    monkeypatch.setattr(c2am_tf.backbones, "REGISTRY", dict(c2am_tf.backbones.REGISTRY))
    blocks = _blocks("python")
    assert len(blocks) >= 5 and any(page == "README.md" for page, _ in blocks)
    spaces = []
    for k, (page, block) in enumerate(blocks):
        folder = tmp_path / str(k)
        folder.mkdir()
        monkeypatch.chdir(folder)
        namespace = {}
        exec(compile(block, page, "exec"), namespace)  # noqa: S102 (our own docs)
        spaces.append(namespace)
    first = next(n for n in spaces if "boxes" in n)
    assert first["maps"].shape == (1, 28, 28, 1) and len(first["boxes"]) == 1
    x0, y0, x1, y1 = first["boxes"][0]
    assert 0 <= x0 < x1 <= 448 and 0 <= y0 < y1 <= 448
    device = next(n for n in spaces if "result" in n)
    x0, y0, x1, y1 = device["result"]["box"]
    assert 0 <= x0 < x1 <= 400 and 0 <= y0 < y1 <= 300 and device["result"]["mask"].shape == (300, 400)
    assert next(n for n in spaces if "fg" in n)["fg"].shape == (2, 14, 14, 1)


def _commands(pages=PAGES):
    """(command name, argv) of every shell line in ``pages`` that runs one of our commands."""
    found = []
    for _, block in _blocks("bash", pages):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#", 1)[0].split(" > ", 1)[0].strip()
            for part in line.split("&&"):
                words = shlex.split(part)
                if words[:1] == ["c2am-tf"] and len(words) > 1 and not words[1].startswith("-"):
                    found.append((words[1], words[2:]))
                elif len(words) >= 2 and words[0] == "python" and words[1].startswith(("train/", "export/")):
                    script = open(os.path.join(ROOT, words[1])).read()
                    found.append((re.search(r'run_command\("([\w-]+)"', script).group(1), words[2:]))
    return found


def test_commands_exist_and_their_flags_parse():
    commands = _commands()
    assert len(commands) >= 40 and len(_commands(["README.md"])) >= 8
    for name, argv in commands:
        assert name in COMMANDS, f"the docs run unknown command {name!r}"
        parser = importlib.import_module(f"c2am_tf.cli.{COMMANDS[name][0]}").build_parser(f"c2am-tf {name}")
        if "--help" in argv:
            continue  # prints and exits by design; test_every_command_has_help covers it
        try:
            if name == "extract-boxes" and "--runner" in argv:
                parser.parse_known_args(argv)  # the flags it does not know go to Apache Beam
            else:
                parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"docs: c2am-tf {name} {' '.join(argv)} does not parse")


def test_every_command_has_help_with_its_defaults():
    out = subprocess.run([sys.executable, "-m", "c2am_tf", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and all(name in out.stdout for name in COMMANDS)
    for name, (module, _) in COMMANDS.items():
        text = importlib.import_module(f"c2am_tf.cli.{module}").build_parser(f"c2am-tf {name}").format_help()
        assert "BENCHMARK.md" not in text and "(default: None)" not in text, name
    fit_help = importlib.import_module("c2am_tf.cli.fit").build_parser().format_help()
    assert "--lr LR" in fit_help and "default 1e-4 when starting from a preset, else 1e-3" in " ".join(fit_help.split())
    assert "(default: auto)" in fit_help and "(default: 0.9)" in fit_help  # --init-preset, --momentum


def _anchor(heading):
    """GitHub's anchor of a markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_between_the_pages_resolves():
    """A relative link names a file or folder that exists, and its #anchor a heading of that page."""
    checked = 0
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", _text(page)):
            if re.match(r"[a-z]+:", target):
                continue  # a web address
            path, _, anchor = target.partition("#")
            resolved = os.path.normpath(os.path.join(ROOT, os.path.dirname(page), path)) if path else \
                os.path.join(ROOT, page)
            assert os.path.exists(resolved), f"{page}: link to {target}: no such file"
            if anchor:
                headings = re.findall(r"^#+ (.*)$", open(resolved).read(), re.M)
                assert anchor in {_anchor(h) for h in headings}, f"{page}: link to {target}: no such heading"
            checked += 1
    assert checked >= 30


def test_the_readme_is_a_first_hour_and_the_results_live_in_docs():
    assert len(README.splitlines()) <= 300
    results = [p for p in PAGES if p.startswith(os.path.join("docs", "results"))]
    assert len(results) >= 8
    for page in results:  # each results page says how to reproduce it and on which machine
        text = _text(page)
        assert "Reproduce:" in text and "Machine:" in text, page
