"""pyproject.toml: the main install and the test install resolve to one set of versions."""

import importlib.metadata as metadata
import os

import pytest
import tomllib
from conftest import ROOT
from packaging.requirements import Requirement
from packaging.version import Version

PROJECT = tomllib.load(open(os.path.join(ROOT, "pyproject.toml"), "rb"))["project"]


def _name(text):
    return Requirement(text).name.lower().replace("_", "-")


def _closure(requirements):
    """Names of the installed distributions ``requirements`` pull in (extras' requirements left out)."""
    seen, todo = set(), [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = req.name.lower().replace("_", "-")
        if name in seen or (req.marker and not req.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        try:
            todo += [Requirement(r) for r in metadata.requires(name) or ()]
        except metadata.PackageNotFoundError:
            continue
    return seen


def _upper_bounds(requirement):
    """The release numbers (padded tuples) of a requirement's upper bounds: '<7.0.0.dev0' and '<7' both (7, 0, 0)."""
    return [(Version(spec.version).release + (0, 0, 0))[:3] for spec in requirement.specifier
            if spec.operator in ("<", "<=")]


# the packages both installs pull in whose newest release the tested extras' caps exclude: found by comparing
# `pip install --dry-run --report` of requirements.txt and requirements-dev.txt (2026-12-06: protobuf 7.36.2
# vs 6.33.6, pyarrow 26.0.1 vs 25.0.1, setuptools 84.2.1 vs 80.10.2)
DIVERGED = ("protobuf", "pyarrow", "setuptools")


def test_the_main_install_carries_every_cap_of_the_tested_extras_that_bites():
    """The beam extra (installed by requirements-dev.txt) caps packages the main install also pulls in; where a
    cap excludes their newest release, the main install must carry it too, else users get newer versions than
    the tests ran with."""
    try:
        capping = [Requirement(r) for r in metadata.requires("apache-beam") + metadata.requires("tensorflow-hub")]
    except (metadata.PackageNotFoundError, TypeError):
        pytest.skip("the beam extra is not installed")
    capping += [Requirement(r) for r in PROJECT["optional-dependencies"]["beam"]]
    base = {_name(r): Requirement(r) for r in PROJECT["dependencies"]}
    pulled = _closure(PROJECT["dependencies"])
    for name in DIVERGED:
        assert name in pulled, f"{name} is no longer pulled in by the main install: drop it from DIVERGED"
        caps = [b for req in capping if _name(str(req)) == name for b in _upper_bounds(req)]
        assert caps, f"the tested extras no longer cap {name}: drop its cap from pyproject.toml"
        ours = _upper_bounds(base[name]) if name in base else []
        assert ours and max(ours) <= min(caps), f"{name}: the extras cap it below {min(caps)}, the main install " \
                                                 f"allows {base.get(name) or 'any version'}"
        installed = metadata.version(name)
        assert base[name].specifier.contains(installed, prereleases=True), (name, installed)
