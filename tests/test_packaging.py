"""Packaged as users install it: the sdist and the wheel built from this tree, their metadata, and
the wheel installed into a fresh virtualenv that then imports signout and runs its console script.

The build is `python -m build` without isolation (the dev extra holds the backend, so nothing is
downloaded for it): the sdist from a copy of this tree, then the wheel from that sdist, as pip
builds it from an sdist. The copy keeps the working tree free of `build/` and `*.egg-info`, and the
build free of their leftovers (a stale `build/lib` would ship modules deleted since).
"""

from __future__ import annotations

import ast
import configparser
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import trove_classifiers
from packaging.metadata import Metadata
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

import signout

# Building takes seconds; the fresh venv downloads PyJWT and cryptography from PyPI (pip's cache
# makes the next run quick). Bounded generously all the same.
pytestmark = pytest.mark.timeout(600)

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "signout"
VERSION = signout.__version__
DIST_INFO = f"signout-{VERSION}.dist-info"

# Not sources: skipped anywhere in the tree, or (the second set) at its top only.
_CACHES = {".git", ".venv", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", "node_modules"}
_TOP_ONLY = {"build", "dist", "tmp"}


def _not_sources(directory: str, names: list[str]) -> set[str]:
    top = Path(directory) == ROOT
    return {
        name for name in names if name in _CACHES or name.endswith((".egg-info", ".pyc")) or (top and name in _TOP_ONLY)
    }


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``args``, failing the test with their output when they exit non-zero."""
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        output = f"--- stdout\n{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-4000:]}"
        pytest.fail(f"{args} exited {done.returncode}\n{output}")
    return done


def modules() -> set[str]:
    """Every file of the package as it should be installed: its modules and py.typed."""
    found = {path.relative_to(PACKAGE.parent).as_posix() for path in PACKAGE.rglob("*.py")}
    found = {name for name in found if "/__pycache__/" not in name}
    return found | {"signout/py.typed"}


@dataclass(frozen=True)
class Dists:
    sdist: Path
    wheel: Path

    def wheel_names(self) -> list[str]:
        with zipfile.ZipFile(self.wheel) as archive:
            return archive.namelist()

    def wheel_text(self, name: str) -> str:
        with zipfile.ZipFile(self.wheel) as archive:
            return archive.read(name).decode()

    def sdist_names(self) -> list[str]:
        with tarfile.open(self.sdist) as archive:
            return archive.getnames()

    def sdist_text(self, name: str) -> str:
        with tarfile.open(self.sdist) as archive:
            member = archive.extractfile(name)
            assert member is not None, name
            return member.read().decode()


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Dists:
    work = tmp_path_factory.mktemp("packaging")
    tree = work / "tree"
    shutil.copytree(ROOT, tree, ignore=_not_sources)
    out = work / "dist"
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(tree)], cwd=work)
    sdists, wheels = sorted(out.glob("*.tar.gz")), sorted(out.glob("*.whl"))
    assert [p.name for p in sdists] == [f"signout-{VERSION}.tar.gz"]
    assert [p.name for p in wheels] == [f"signout-{VERSION}-py3-none-any.whl"]
    return Dists(sdists[0], wheels[0])


@pytest.fixture(scope="module")
def metadata(dists: Dists) -> Metadata:
    # validate=True: every field as the core metadata spec (and PyPI) reads it, License-Expression included
    return Metadata.from_email(dists.wheel_text(f"{DIST_INFO}/METADATA"), validate=True)


def test_the_version_is_one_literal_setuptools_reads_without_importing_signout() -> None:
    # pyproject.toml takes it from here ([tool.setuptools.dynamic]); as a plain string literal
    # setuptools reads it from the source, so building never imports signout or needs PyJWT.
    tree = ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    values = [
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets)
    ]
    assert len(values) == 1
    assert isinstance(values[0], ast.Constant)
    assert values[0].value == VERSION
    assert str(Version(VERSION)) == VERSION  # PEP 440, in its normal form (what the metadata will say)


def test_the_changelog_has_a_section_for_this_version() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert "## [Unreleased]" in changelog
    assert f"## [{VERSION}]" in changelog


def test_the_wheel_metadata_says_what_users_and_pypi_read(metadata: Metadata) -> None:
    assert metadata.name == "signout"
    assert metadata.version == Version(VERSION)
    assert metadata.requires_python == SpecifierSet(">=3.10")
    assert metadata.license_expression == "MIT"
    assert metadata.license_files == ["LICENSE"]
    # the README is the project page
    assert metadata.description_content_type is not None
    assert metadata.description_content_type.startswith("text/markdown")
    assert metadata.description is not None
    assert metadata.description.strip() == (ROOT / "README.md").read_text(encoding="utf-8").strip()
    assert metadata.summary and metadata.keywords and "jwt" in metadata.keywords
    urls = metadata.project_urls or {}
    assert set(urls) == {"Homepage", "Documentation", "Source", "Issues", "Changelog"}
    assert all(url.startswith("https://") for url in urls.values())
    assert urls["Changelog"].endswith("/CHANGELOG.md")


def test_installing_signout_pulls_pyjwt_itsdangerous_and_nothing_else(metadata: Metadata) -> None:
    required = {canonicalize_name(r.name): r for r in metadata.requires_dist or [] if r.marker is None}
    assert sorted(required) == ["itsdangerous", "pyjwt"]  # itsdangerous: RP-Initiated Logout's state
    assert required[canonicalize_name("pyjwt")].extras == {"crypto"}  # RS256/ES256 keys need cryptography
    assert "redis" in (metadata.provides_extra or [])
    redis_extra = {r.name for r in metadata.requires_dist or [] if r.marker and r.marker.evaluate({"extra": "redis"})}
    assert "redis" in {canonicalize_name(name) for name in redis_extra}


def test_the_classifiers_are_real_and_agree_with_requires_python(metadata: Metadata) -> None:
    classifiers = metadata.classifiers or []
    assert len(classifiers) == len(set(classifiers))
    unknown = [c for c in classifiers if c not in trove_classifiers.classifiers]
    assert unknown == []  # PyPI refuses an upload with any of these
    assert [c for c in classifiers if c in trove_classifiers.deprecated_classifiers] == []
    assert "Typing :: Typed" in classifiers
    # PEP 639: the SPDX License-Expression replaces License classifiers; both at once is an error
    assert [c for c in classifiers if c.startswith("License ::")] == []
    assert metadata.requires_python is not None
    prefix = "Programming Language :: Python :: 3."
    versions = [c.removeprefix("Programming Language :: Python :: ") for c in classifiers if c.startswith(prefix)]
    assert "3.10" in versions
    assert all(metadata.requires_python.contains(v) for v in versions)


def test_the_wheel_holds_every_module_py_typed_the_license_and_the_console_script(dists: Dists) -> None:
    names = dists.wheel_names()
    assert {name for name in names if name.startswith("signout/")} == modules()
    assert {name.split("/")[0] for name in names} == {"signout", DIST_INFO}
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
    assert dists.wheel_text(f"{DIST_INFO}/licenses/LICENSE") == (ROOT / "LICENSE").read_text(encoding="utf-8")
    entry_points = configparser.ConfigParser()
    entry_points.read_string(dists.wheel_text(f"{DIST_INFO}/entry_points.txt"))
    assert dict(entry_points["console_scripts"]) == {"signout": "signout.cli:main"}
    wheel = dists.wheel_text(f"{DIST_INFO}/WHEEL")
    assert "Root-Is-Purelib: true" in wheel
    assert "Tag: py3-none-any" in wheel


def test_the_sdist_holds_what_builds_the_wheel(dists: Dists, metadata: Metadata) -> None:
    # the wheel above was built from this sdist, so it builds; these are what it was built from
    top = f"signout-{VERSION}"
    names = set(dists.sdist_names())
    assert {f"{top}/{name}" for name in ("PKG-INFO", "pyproject.toml", "README.md", "LICENSE")} <= names
    assert {f"{top}/src/{name}" for name in modules()} <= names
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
    pkg_info = Metadata.from_email(dists.sdist_text(f"{top}/PKG-INFO"), validate=True)
    assert (pkg_info.name, pkg_info.version) == (metadata.name, metadata.version)
    assert pkg_info.classifiers == metadata.classifiers
    assert dists.sdist_text(f"{top}/LICENSE") == (ROOT / "LICENSE").read_text(encoding="utf-8")


PROBE = """
import importlib.metadata, importlib.util, json, pathlib, sys
import signout
print(json.dumps({
    "version": signout.__version__,
    "metadata_version": importlib.metadata.version("signout"),
    "file": signout.__file__,
    "prefix": sys.prefix,
    "py_typed": (pathlib.Path(signout.__file__).parent / "py.typed").is_file(),
    "jwt": importlib.util.find_spec("jwt") is not None,
    "redis": importlib.util.find_spec("redis") is not None,
}))
"""


def test_the_wheel_installs_into_a_fresh_venv_imports_and_runs_its_console_script(dists: Dists, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    # no --system-site-packages: a dependency missing from the metadata must fail here
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    python, script = venv / "bin" / "python", venv / "bin" / "signout"
    env = {name: value for name, value in os.environ.items() if name not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    # this venv's pip installs into the new one (pip --python): no pip bootstrapped there
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-input", str(dists.wheel)]
    run(install, cwd=tmp_path, env=env)

    found = json.loads(run([str(python), "-I", "-c", PROBE], cwd=tmp_path, env=env).stdout)
    assert found["version"] == found["metadata_version"] == VERSION
    assert Path(found["prefix"]).resolve() == venv.resolve()
    assert Path(found["file"]).resolve().is_relative_to(venv.resolve())  # not this tree's src/
    assert found["py_typed"]
    assert found["jwt"]
    assert not found["redis"]  # the bare install: signout imports without the redis extra

    helped = run([str(script), "--help"], cwd=tmp_path, env=env)
    assert "revoke-user" in helped.stdout
