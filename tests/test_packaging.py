"""Ready to publish: the wheel and the sdist build, pass ``twine check``, and the wheel works
on its own in a fresh virtual environment (the README's first command, from a release).

Building and installing take about half a minute, so these run where ``HTEVENTS_SLOW_TESTS=1``
(tox sets it for py311, so CI runs them on every commit).
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
from helpers import REPO

pytestmark = pytest.mark.skipif(
    os.environ.get("HTEVENTS_SLOW_TESTS") != "1", reason="slow: set HTEVENTS_SLOW_TESTS=1"
)


def _run(*args: str, cwd: Path = REPO, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        args, capture_output=True, text=True, cwd=cwd, timeout=timeout, check=False
    )
    assert result.returncode == 0, f"{args}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel and the sdist, built from the repository as ``python -m build`` builds them."""
    pytest.importorskip("build")
    out = tmp_path_factory.mktemp("dist")
    _run(sys.executable, "-m", "build", "--outdir", str(out), str(REPO))
    return out


def _one(dist: Path, pattern: str) -> Path:
    [path] = dist.glob(pattern)
    return path


def test_twine_accepts_the_wheel_and_the_sdist(dist: Path) -> None:
    pytest.importorskip("twine")
    result = _run(sys.executable, "-m", "twine", "check", "--strict", *map(str, dist.iterdir()))
    assert result.stdout.count("PASSED") == 2


def test_the_wheel_holds_the_package_only(dist: Path) -> None:
    names = zipfile.ZipFile(_one(dist, "*.whl")).namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {"htevents_logging", "htevents_logging-0.1.0.dist-info"}
    assert "htevents_logging/py.typed" in names
    assert "htevents_logging/pytest_plugin.py" in names
    assert any(name.endswith("dist-info/licenses/LICENSE") for name in names) or any(
        name.endswith("dist-info/LICENSE") for name in names
    )
    metadata = zipfile.ZipFile(_one(dist, "*.whl")).read(
        "htevents_logging-0.1.0.dist-info/METADATA"
    )
    requires = [
        line.split(":", 1)[1].strip()
        for line in metadata.decode().splitlines()
        if line.startswith("Requires-Dist:")
    ]
    unconditional = sorted(r.split(">")[0].split("=")[0] for r in requires if ";" not in r)
    assert unconditional == ["requests", "typing-extensions"]  # the extras stay optional
    entry_points = zipfile.ZipFile(_one(dist, "*.whl")).read(
        "htevents_logging-0.1.0.dist-info/entry_points.txt"
    )
    assert b"[pytest11]" in entry_points


def test_the_sdist_holds_what_a_packager_needs(dist: Path) -> None:
    import tarfile

    with tarfile.open(_one(dist, "*.tar.gz")) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    for needed in ("LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml"):
        assert needed in names, needed
    assert any(name.startswith("tests/") for name in names)


def test_the_wheel_runs_the_demo_in_a_fresh_virtual_environment(dist: Path, tmp_path: Path) -> None:
    # The demo sends one of each message type to a collector on 127.0.0.1 that it starts
    # itself; pip may fetch requests and typing-extensions, nothing else.
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    _run(str(python), "-m", "pip", "install", "--quiet", str(_one(dist, "*.whl")))
    listed = _run(str(python), "-m", "pip", "list", "--format=freeze").stdout
    installed = {line.split("==")[0].lower() for line in listed.splitlines()}
    assert {"structlog", "pytest", "loguru", "celery", "django"}.isdisjoint(installed)
    result = _run(str(env_dir / "bin" / "htevents-logging"), "demo", cwd=tmp_path, timeout=120)
    for kind in ("identify", "track", "page", "screen", "group", "alias"):
        assert kind in result.stdout, result.stdout
