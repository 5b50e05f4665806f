"""Build the generic Python sandbox component with componentize-py, cached by its inputs.

`python -m plugins.sandbox.build` builds plugins/sandbox/build/sandbox-<key>.wasm when it
is missing, where <key> hashes the WIT world, the guest sources and the componentize-py
version; an up-to-date build returns at once. The build takes about 7 s and 400 MB of RSS
on a CI machine (minutes on a Pi), so it prints progress while it runs.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path

from plugins.errors import SandboxUnavailable

PLUGINS_DIR = Path(__file__).resolve().parent.parent
WIT_FILE = PLUGINS_DIR / "harvester.wit"
GUEST_DIR = PLUGINS_DIR / "guest"
BUILD_DIR = Path(__file__).resolve().parent / "build"
WORLD = "sandbox"
APP_MODULE = "app"
ENV_BUILD_DIR = "HARVESTER_SANDBOX_BUILD"


def build_dir() -> Path:
    """Where built components and compiled artifacts go ($HARVESTER_SANDBOX_BUILD overrides)."""
    return Path(os.environ.get(ENV_BUILD_DIR) or BUILD_DIR)


def guest_sources() -> list[Path]:
    """The files the sandbox is built from (part of the cache key)."""
    return [WIT_FILE, *sorted(GUEST_DIR.glob("*.py"))]


def build_key() -> str:
    """Hash of the WIT, the guest sources and the componentize-py version."""
    h = hashlib.sha256()
    try:
        h.update(metadata.version("componentize-py").encode())
    except metadata.PackageNotFoundError:
        h.update(b"componentize-py:absent")
    for path in guest_sources():
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def sandbox_path() -> Path:
    """Path of the component for the current sources (it may not exist yet)."""
    return build_dir() / f"sandbox-{build_key()}.wasm"


def _progress(stop: threading.Event, started: float, out: object) -> None:
    while not stop.wait(2.0):
        print(f"  ... building the sandbox component, {time.monotonic() - started:.0f} s", file=out, flush=True)


def ensure_built(quiet: bool = False) -> Path:
    """Return the sandbox component, building it first if the sources changed."""
    target = sandbox_path()
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    out = sys.stderr
    if not quiet:
        print(f"building the plugin sandbox {target.name} with componentize-py (about 7 s, 400 MB)",
              file=out, flush=True)
    started = time.monotonic()
    stop = threading.Event()
    ticker = threading.Thread(target=_progress, args=(stop, started, out), daemon=True)
    if not quiet:
        ticker.start()
    # Build into a temporary name and rename: a reader never sees half a component.
    fd, tmp_name = tempfile.mkstemp(suffix=".wasm.tmp", dir=target.parent)
    os.close(fd)
    cmd = [sys.executable, "-c", "import sys; from componentize_py import script; sys.exit(script())",
           "-q", "-d", str(WIT_FILE), "-w", WORLD, "componentize", "-p", str(GUEST_DIR), APP_MODULE,
           "--stub-wasi", "-o", tmp_name]
    # componentize-py bundles any site-packages named by VIRTUAL_ENV; the guest needs none.
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=GUEST_DIR)
    finally:
        stop.set()
    if proc.returncode != 0:
        Path(tmp_name).unlink(missing_ok=True)
        detail = (proc.stderr or proc.stdout).strip()
        if "No module named 'componentize_py'" in detail:
            detail = "componentize-py is not installed; install the 'wasm' extra (pip install 'wasi-harvester[wasm]')"
        raise SandboxUnavailable(f"building the plugin sandbox failed: {detail[-2000:]}")
    os.chmod(tmp_name, 0o644)  # mkstemp makes it private; the component is no secret
    os.replace(tmp_name, target)
    for old in target.parent.glob("sandbox-*.wasm"):
        if old != target:
            old.unlink(missing_ok=True)  # superseded builds: 19 MB each
    if not quiet:
        print(f"built {target} ({target.stat().st_size / 1e6:.1f} MB) in {time.monotonic() - started:.1f} s",
              file=out, flush=True)
    return target


def main(argv: list[str] | None = None) -> int:
    """Command line: build the sandbox when missing; print its path."""
    p = argparse.ArgumentParser(prog="python -m plugins.sandbox.build", description=__doc__.splitlines()[0])
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--print-key", action="store_true", help="print the cache key and exit")
    args = p.parse_args(argv)
    if args.print_key:
        print(build_key())
        return 0
    try:
        path = ensure_built(quiet=args.quiet)
    except SandboxUnavailable as exc:
        print(exc, file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
