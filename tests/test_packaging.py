"""Ready to publish: the wheel and the sdist build, pass ``twine check --strict``, hold what they
should, and the wheel works on its own in a fresh virtual environment.

Building takes about 10 s and the fresh environment about 5 s more, so these run where
``HTEVENTS_SLOW_TESTS=1`` (tox sets it for py311, so CI runs them on every commit); they are
also marked ``slow``. Building fetches setuptools from the package index into an isolated
environment, and installing the wheel fetches requests and typing-extensions: where the index
cannot be reached, the tests are skipped with pip's reason.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Sequence
from email.message import EmailMessage
from pathlib import Path

import pytest
from helpers import REPO, SETTINGS_ENV

import htevents_logging
from htevents_logging.collector import MESSAGE_TYPES

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("HTEVENTS_SLOW_TESTS") != "1", reason="slow: set HTEVENTS_SLOW_TESTS=1"
    ),
]

VERSION = htevents_logging.__version__
DIST_INFO = f"htevents_logging-{VERSION}.dist-info"
REPOSITORY = "https://github.com/htevents-logging/htevents-logging"

#: What pip says when the package index cannot be reached (then the test is skipped).
OFFLINE = (
    "No matching distribution found",
    "Could not find a version that satisfies",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "Failed to establish a new connection",
)

#: Tracked files that stay out of the sdist on purpose: CI and local tool settings.
NOT_IN_THE_SDIST = {".ci/run", ".gitignore", ".python-version"}

#: What a build or a local run leaves in the tree, never to be shipped.
LEFTOVERS = re.compile(
    r"(^|/)(__pycache__|\.mypy_cache|\.pytest_cache|\.hypothesis|build|dist)/"
    r"|\.py[cod]$|\.sqlite3$|\.jsonl$|results-quick\."
)


def _run(
    args: Sequence[str], cwd: Path = REPO, timeout: float = 300, offline_skips: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run ``args`` with the HT_* settings cleared; assert it succeeded, or skip when it failed
    because the package index could not be reached and ``offline_skips`` says that may be."""
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS_ENV}
    result = subprocess.run(
        args, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout, check=False
    )
    output = result.stdout + result.stderr
    if result.returncode != 0 and offline_skips and any(s in output for s in OFFLINE):
        reason = next(line for line in output.splitlines() if any(s in line for s in OFFLINE))
        pytest.skip(f"the package index cannot be reached: {reason.strip()}")
    assert result.returncode == 0, f"{list(args)} exited {result.returncode}:\n{output}"
    return result


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist, and the wheel built from it, as ``python -m build`` makes them for PyPI."""
    pytest.importorskip("build")
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--outdir", str(out), str(REPO)], offline_skips=True)
    return out


@pytest.fixture(scope="module")
def wheel(dist: Path) -> zipfile.ZipFile:
    [path] = dist.glob("*.whl")
    return zipfile.ZipFile(path)


@pytest.fixture(scope="module")
def metadata(wheel: zipfile.ZipFile) -> EmailMessage:
    """The wheel's METADATA (what PyPI shows and what pip resolves)."""
    parser = email.parser.BytesParser(policy=email.policy.compat32, _class=EmailMessage)
    return parser.parsebytes(wheel.read(f"{DIST_INFO}/METADATA"))


def test_twine_check_strict_passes_the_wheel_and_the_sdist(dist: Path) -> None:
    pytest.importorskip("twine")
    files = sorted(str(path) for path in dist.iterdir())
    result = _run([sys.executable, "-m", "twine", "check", "--strict", *files])
    assert result.stdout.count("PASSED") == 2, result.stdout
    assert "WARNING" not in result.stdout + result.stderr


def test_the_wheel_holds_the_package_and_nothing_else(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    assert {name.split("/")[0] for name in names} == {"htevents_logging", DIST_INFO}
    shipped = {name for name in names if name.startswith("htevents_logging/")}
    # Every module of the source tree, and no other: a stale build/lib cannot add one.
    source = {
        path.relative_to(REPO).as_posix()
        for path in (REPO / "htevents_logging").rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert {name for name in shipped if name.endswith(".py")} == source
    assert {name for name in shipped if not name.endswith(".py")} == {"htevents_logging/py.typed"}
    assert f"{DIST_INFO}/licenses/LICENSE" in names
    assert wheel.read(f"{DIST_INFO}/licenses/LICENSE") == (REPO / "LICENSE").read_bytes()


def test_the_wheel_requires_only_requests_and_typing_extensions(metadata: EmailMessage) -> None:
    requires = metadata.get_all("Requires-Dist") or []
    unconditional = {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0] for r in requires if ";" not in r}
    assert unconditional == {"requests", "typing-extensions"}
    # Everything else is behind an extra: structlog and otel for users, the rest for developers.
    assert all("extra ==" in r for r in requires if ";" in r)
    assert {"structlog", "otel"} <= set(metadata.get_all("Provides-Extra") or [])


def test_the_metadata_says_what_pypi_shows(metadata: EmailMessage) -> None:
    assert metadata["Name"] == "htevents-logging"
    assert metadata["Version"] == VERSION
    assert metadata["License-Expression"] == "MIT"
    assert metadata["Requires-Python"] == ">=3.9"
    assert metadata["Description-Content-Type"] == "text/markdown"
    urls = dict(url.split(", ", 1) for url in metadata.get_all("Project-URL") or [])
    assert set(urls) == {"Homepage", "Documentation", "Changelog", "Issues"}
    assert all(url.startswith(REPOSITORY) for url in urls.values()), urls
    classifiers = set(metadata.get_all("Classifier") or [])
    # One classifier per Python that tox tests, and no other.
    tested = re.findall(r"\bpy3(\d+)\b", (REPO / "tox.ini").read_text(encoding="utf-8"))
    pythons = {c.rsplit(" ", 1)[1] for c in classifiers if re.fullmatch(r".*:: 3\.\d+", c)}
    assert pythons == {f"3.{minor}" for minor in tested} == {f"3.{m}" for m in range(9, 14)}
    for framework in ("Django", "Celery", "FastAPI", "Pytest"):
        assert f"Framework :: {framework}" in classifiers
    assert "Operating System :: OS Independent" in classifiers
    assert any(c.startswith("Development Status :: ") for c in classifiers)


def test_the_readme_on_pypi_links_only_absolute_addresses(metadata: EmailMessage) -> None:
    # PyPI shows the README with no repository around it: a link to docs/design.md leads to a
    # 404 there. Links point at the repository on GitHub instead.
    description = metadata.get_payload()
    assert isinstance(description, str) and "## Install" in description
    inline = re.findall(r"\]\((?!https?://|#|mailto:)([^)\s]+)\)", description)
    defined = re.findall(r"(?m)^ {0,3}\[[^\]]+\]:\s*(?!https?://|#|mailto:)(\S+)", description)
    relative = inline + defined
    assert relative == [], f"relative links in README.md, broken on PyPI: {sorted(set(relative))}"


def test_the_entry_points_are_the_command_and_the_pytest_plugin(wheel: zipfile.ZipFile) -> None:
    text = wheel.read(f"{DIST_INFO}/entry_points.txt").decode()
    assert "htevents-logging = htevents_logging.cli:main" in text
    assert "htevents_logging.pytest_plugin = htevents_logging.pytest_plugin" in text


def _git_files(*args: str) -> set[str] | None:
    """``git ls-files ARGS`` in the repository, or None where it is not a git checkout."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        return None
    result = subprocess.run(
        ["git", "ls-files", *args], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    return set(result.stdout.splitlines()) if result.returncode == 0 else None


def test_the_sdist_holds_the_source_tests_examples_and_docs(dist: Path) -> None:
    [path] = dist.glob("*.tar.gz")
    with tarfile.open(path) as sdist:
        names = {m.name.split("/", 1)[1] for m in sdist.getmembers() if m.isfile()}
    for needed in ("LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml", "tox.ini", "PKG-INFO"):
        assert needed in names, needed
    for folder in ("htevents_logging/", "tests/", "examples/", "docs/", "benchmarks/"):
        assert any(name.startswith(folder) for name in names), folder
    assert [name for name in names if LEFTOVERS.search(name)] == []
    tracked, deleted = _git_files(), _git_files("--deleted")
    if tracked is not None and deleted is not None:
        # A file added to the repository is shipped, or MANIFEST.in says otherwise.
        missing = sorted(tracked - deleted - names - NOT_IN_THE_SDIST)
        assert missing == [], f"not in the sdist (MANIFEST.in): {missing}"


#: Run by the fresh environment's interpreter: the distributions installed there, and the
#: unconditional requirements of htevents-logging, followed through (no extras).
INSTALLED = """
import json, re
from importlib import metadata

def name(text):
    return re.split(r"[<>=!~;\\[ ]", text, maxsplit=1)[0].lower().replace("_", "-")

installed = {name(d.metadata["Name"]) for d in metadata.distributions()}
needed, todo = set(), ["htevents-logging"]
while todo:
    dist = todo.pop()
    if dist in needed:
        continue
    needed.add(dist)
    for req in metadata.requires(dist) or []:
        if "extra ==" not in req:
            todo.append(name(req))
print(json.dumps({
    "installed": sorted(installed),
    "needed": sorted(needed),
    "requires": metadata.requires("htevents-logging"),
}))
"""


def test_the_wheel_runs_the_demo_in_a_fresh_virtual_environment(dist: Path, tmp_path: Path) -> None:
    [wheel_path] = dist.glob("*.whl")
    env_dir = tmp_path / "venv"
    # A venv with no pip of its own: this interpreter's pip installs into it (--python), so
    # what is installed there is the wheel and what it pulls, nothing else.
    _run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], timeout=120)
    bin_dir = env_dir / ("Scripts" if os.name == "nt" else "bin")
    python = bin_dir / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    _run([*pip, "install", "--quiet", str(wheel_path)], offline_skips=True)

    found = json.loads(_run([str(python), "-c", INSTALLED], cwd=tmp_path).stdout)
    direct = {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0] for r in found["requires"] if ";" not in r}
    assert direct == {"requests", "typing-extensions"}
    # Only the package and what requests and typing-extensions need: no extra came along.
    assert set(found["installed"]) - {"pip", "setuptools", "wheel"} == set(found["needed"])
    assert {"structlog", "opentelemetry-api", "pytest", "loguru", "django"}.isdisjoint(
        found["installed"]
    )

    # The demo starts a collector on 127.0.0.1 and sends one message of each type to it.
    result = _run([str(bin_dir / "htevents-logging"), "demo"], cwd=tmp_path, timeout=120)
    received = result.stdout.split("the collector received:", 1)
    assert len(received) == 2, result.stdout
    arrived = [line.split()[0] for line in received[1].splitlines() if line.startswith("  ")]
    assert sorted(arrived) == sorted(MESSAGE_TYPES), result.stdout
    count = len(MESSAGE_TYPES)
    assert f"{count} of {count} events arrived" in result.stdout, result.stdout
