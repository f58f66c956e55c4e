"""Separate virtualenvs with a real litellm proxy, for ``tests/test_litellm_proxy.py``.

The proxy's extras cannot live in our venv, and ``litellm[proxy]==1.110.2`` (our pin) does not
resolve from the index: it needs ``litellm-proxy==1.110.2``, ``litellm-proxy-extras==0.4.114.post1``
and ``litellm-enterprise==0.1.83.post1``, none published there. So the proxy is tested twice:

- ``1.108.7``: ``pip install "litellm[proxy]==1.108.7"``, the newest proxy a team can install from the
  index as litellm documents it (1.108.8+ need unpublished ``litellm-enterprise``/``-proxy-extras``);
- ``1.110.2``: our pin, with the ``proxy`` extra's dependencies (read from the pinned litellm's own
  metadata) installed by name minus the three unpublished packages, which ``litellm --config``
  does not need without a database.

Each venv also gets opentracy's other runtime dependencies and this working tree ``--no-deps -e``, so
the proxy runs the code under test. Installs use ``uv pip`` (installed into the venv from the index;
pip is the fallback): cold, both venvs take ~1.5 min with uv against ~4.5 min with pip. Built once
and cached in ``.cache/litellm-proxy-venv/<version>`` (``$OPENTRACY_PROXY_VENV`` moves the parent);
rebuilt when the requirements, the repo path or the Python version change. Pre-build both with::

    python -m tests.proxy_venv

A failed build raises :class:`ProxyVenvError` with pip's output: the test fails, it does not skip.
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable

from packaging.markers import default_environment
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DIR = REPO / ".cache" / "litellm-proxy-venv"
DIR_ENV = "OPENTRACY_PROXY_VENV"
INSTALLABLE_PROXY = "1.108.7"  # newest `litellm[proxy]` that resolves from the index (measured)
UNPUBLISHED = {"litellm-proxy", "litellm-proxy-extras", "litellm-enterprise"}
PIP_TIMEOUT = 1200  # s per install step


class ProxyVenvError(RuntimeError):
    """A proxy venv could not be built (pip output included)."""


@dataclass(frozen=True)
class ProxyVenv:
    path: Path
    litellm_version: str

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def litellm(self) -> Path:
        return self.path / "bin" / "litellm"


def _project() -> dict[str, object]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def pinned_litellm() -> str:
    for dep in _project()["dependencies"]:  # type: ignore[union-attr]
        req = Requirement(dep)
        if req.name == "litellm":
            return str(req.specifier).removeprefix("==")
    raise ProxyVenvError("pyproject.toml does not pin litellm")


def versions() -> list[str]:
    """The litellm versions the proxy test runs on: the installable proxy and our pin."""
    return list(dict.fromkeys([INSTALLABLE_PROXY, pinned_litellm()]))


def requirements(version: str) -> list[str]:
    ours = [dep for dep in _project()["dependencies"] if Requirement(dep).name != "litellm"]  # type: ignore[union-attr]
    if version == INSTALLABLE_PROXY:
        return [f"litellm[proxy]=={version}", *ours]
    return [f"litellm=={version}", *_proxy_extra(version), *ours]


def _proxy_extra(version: str) -> list[str]:
    """The ``proxy`` extra of the litellm installed here (our pin), minus what the index lacks."""
    installed = importlib.metadata.version("litellm")
    if installed != version:
        raise ProxyVenvError(f"litellm {installed} is installed here, not the pinned {version}: "
                             "pip install -e '.[test]' first (the proxy venv copies the pin's proxy extra)")
    env = default_environment()
    found = []
    for text in importlib.metadata.requires("litellm") or []:
        req = Requirement(text)
        if req.marker is None or req.name in UNPUBLISHED:
            continue
        if req.marker.evaluate({**env, "extra": "proxy"}) and not req.marker.evaluate({**env, "extra": ""}):
            req.marker = None
            found.append(str(req))
    return sorted(set(found))


def venv_dir(version: str) -> Path:
    return Path(os.environ.get(DIR_ENV) or DEFAULT_DIR).resolve() / version


def _stamp(version: str) -> dict[str, object]:
    return {"requirements": requirements(version), "repo": str(REPO), "python": list(sys.version_info[:2])}


def ensure_proxy_venv(version: str = INSTALLABLE_PROXY, log: Callable[[str], None] = print) -> ProxyVenv:
    """The cached proxy venv for ``version``, built first if missing or stale. Safe in parallel runs."""
    path = venv_dir(version)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second run waits for the first build
        venv = ProxyVenv(path, version)
        stamp_file = path / "opentracy-stamp.json"
        try:
            if json.loads(stamp_file.read_text()) == _stamp(version) and venv.litellm.exists():
                return venv
        except (OSError, ValueError):
            pass
        started = time.monotonic()
        log(f"building the litellm {version} proxy venv in {path} (minutes the first time)")
        shutil.rmtree(path, ignore_errors=True)
        log_file = path.parent / f"{path.name}-build.log"
        with open(log_file, "w") as out:
            _run([sys.executable, "-m", "venv", str(path)], out, log_file)
            pip = [str(venv.python), "-m", "pip", "install", "--disable-pip-version-check"]
            install = _uv(venv, pip, out) or pip
            try:
                _run([*install, *requirements(version)], out, log_file)
            except ProxyVenvError:
                if install is pip:
                    raise
                out.write("(uv failed: trying pip)\n")
                install = pip
                _run([*install, *requirements(version)], out, log_file)
            _run([*install, "--no-deps", "-e", str(REPO)], out, log_file)
            _run([str(venv.python), "-c", "import importlib.metadata as m, sys, opentracy.tracing.proxy; "
                  "v = m.version('litellm'); print('litellm', v); sys.exit(v != sys.argv[1])", version], out, log_file)
        stamp_file.write_text(json.dumps(_stamp(version)))
        log(f"litellm {version} proxy venv ready in {time.monotonic() - started:.0f}s")
        return venv


def _uv(venv: ProxyVenv, pip: list[str], out: IO[str]) -> list[str] | None:
    """``uv pip install`` into the venv: both venvs cold in ~1 min instead of ~4.5 min with pip."""
    try:
        _run([*pip, "uv"], out, None)
    except ProxyVenvError:
        out.write("(uv not installable: using pip)\n")
        return None
    return [str(venv.path / "bin" / "uv"), "pip", "install", "--python", str(venv.python)]


def _run(step: list[str], out: IO[str], log_file: Path | None) -> None:
    out.write(f"$ {' '.join(step)}\n")
    out.flush()
    env = {**os.environ, "PIP_NO_INPUT": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    try:
        result = subprocess.run(step, stdout=out, stderr=subprocess.STDOUT, timeout=PIP_TIMEOUT, env=env)
    except subprocess.TimeoutExpired:
        raise ProxyVenvError(_failure(step, f"timed out after {PIP_TIMEOUT}s", log_file)) from None
    if result.returncode != 0:
        raise ProxyVenvError(_failure(step, f"exit code {result.returncode}", log_file))


def _failure(step: list[str], why: str, log_file: Path | None) -> str:
    if log_file is None:
        return why
    lines = [line for line in log_file.read_text(errors="replace").splitlines()
             if "is ignored: it is neither" not in line]  # pip's noise about this machine's extra indexes
    tail = "\n".join(lines[-40:])
    return (f"could not build the litellm proxy venv: `{' '.join(step)}` failed ({why}).\n"
            f"Full log: {log_file}\n--- last lines ---\n{tail}")


if __name__ == "__main__":
    for wanted in versions():
        try:
            built = ensure_proxy_venv(wanted)
        except ProxyVenvError as exc:
            print(exc, file=sys.stderr)
            sys.exit(1)
        print(built.path)
