"""Docs that run: every docstring example, every README Python block, every README command's flags."""

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
MODULES = sorted(m.name for m in pkgutil.walk_packages(c2am_tf.__path__, "c2am_tf."))


def _blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README, re.S)


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


def test_readme_python_blocks_run_as_written(tmp_path, monkeypatch):
    """Each block on its own, in an empty folder, with nothing defined beforehand: what a reader pastes."""
    blocks = _blocks("python")
    assert len(blocks) >= 4
    monkeypatch.chdir(tmp_path)
    spaces = []
    for block in blocks:
        namespace = {}
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 (our own README)
        spaces.append(namespace)
    first = next(n for n in spaces if "boxes" in n)
    assert first["maps"].shape == (1, 28, 28, 1) and len(first["boxes"]) == 1
    x0, y0, x1, y1 = first["boxes"][0]
    assert 0 <= x0 < x1 <= 448 and 0 <= y0 < y1 <= 448
    device = next(n for n in spaces if "result" in n)
    x0, y0, x1, y1 = device["result"]["box"]
    assert 0 <= x0 < x1 <= 400 and 0 <= y0 < y1 <= 300 and device["result"]["mask"].shape == (300, 400)
    assert next(n for n in spaces if "fg" in n)["fg"].shape == (2, 14, 14, 1)


def _readme_commands():
    """(command name, argv) of every README shell line that runs one of our commands."""
    found = []
    for block in _blocks("bash"):
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


def test_readme_commands_exist_and_their_flags_parse():
    commands = _readme_commands()
    assert len(commands) >= 15
    for name, argv in commands:
        assert name in COMMANDS, f"README runs unknown command {name!r}"
        parser = importlib.import_module(f"c2am_tf.cli.{COMMANDS[name][0]}").build_parser(f"c2am-tf {name}")
        if "--help" in argv:
            continue  # prints and exits by design; test_every_command_has_help covers it
        try:
            if name == "extract-boxes" and "--runner" in argv:
                parser.parse_known_args(argv)  # the flags it does not know go to Apache Beam
            else:
                parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"README: c2am-tf {name} {' '.join(argv)} does not parse")


def test_every_command_has_help_with_its_defaults():
    out = subprocess.run([sys.executable, "-m", "c2am_tf", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and all(name in out.stdout for name in COMMANDS)
    for name, (module, _) in COMMANDS.items():
        text = importlib.import_module(f"c2am_tf.cli.{module}").build_parser(f"c2am-tf {name}").format_help()
        assert "BENCHMARK.md" not in text and "(default: None)" not in text, name
    fit_help = importlib.import_module("c2am_tf.cli.fit").build_parser().format_help()
    assert "--lr LR" in fit_help and "(default: 0.001)" in fit_help
