"""Build the generic Python sandbox component with componentize-py, cached by its inputs.

`python -m plugins.sandbox.build` builds plugins/sandbox/build/sandbox-<key>.wasm when it
is missing, where <key> hashes the WIT world, the guest sources and the componentize-py
version; an up-to-date build returns at once. The build takes about 7 s and 400 MB of RSS
on an x86-64 machine (minutes on a Pi), so it prints progress while it runs.

Boards never build it: the deploy scripts run `--sources DIR --export OUT` where the release
is made (DIR holds the release's harvester.wit and guest/), which writes OUT/sandbox.wasm and
OUT/sandbox.json (its sha256 and the hash of the sources it was built from); the board's
install step (plugins.sandbox.install) checks and precompiles it.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
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
MANIFEST = "sandbox.json"
COMPONENT = "sandbox.wasm"


def build_dir() -> Path:
    """Where built components and compiled artifacts go ($HARVESTER_SANDBOX_BUILD overrides)."""
    return Path(os.environ.get(ENV_BUILD_DIR) or BUILD_DIR)


def _inputs(plugins_dir: Path | None) -> tuple[Path, Path]:
    """The WIT file and the guest folder: this package's, or those of another tree's plugins/."""
    if plugins_dir is None:
        return WIT_FILE, GUEST_DIR
    return plugins_dir / WIT_FILE.name, plugins_dir / GUEST_DIR.name


def guest_sources(plugins_dir: Path | None = None) -> list[Path]:
    """The files the sandbox is built from (part of the cache key)."""
    wit, guest = _inputs(plugins_dir)
    return [wit, *sorted(guest.glob("*.py"))]


def sources_key(plugins_dir: Path | None = None) -> str:
    """Hash of the WIT and the guest sources alone: what a shipped component must match."""
    h = hashlib.sha256()
    for path in guest_sources(plugins_dir):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def componentize_py_version() -> str | None:
    """The installed componentize-py's version, or None (a board has none)."""
    try:
        return metadata.version("componentize-py")
    except metadata.PackageNotFoundError:
        return None


def can_build() -> bool:
    """Whether componentize-py is importable here (developer machines; never a board)."""
    return importlib.util.find_spec("componentize_py") is not None


def build_key(plugins_dir: Path | None = None) -> str:
    """Hash of the WIT, the guest sources and the componentize-py version."""
    h = hashlib.sha256()
    h.update((componentize_py_version() or "componentize-py:absent").encode())
    for path in guest_sources(plugins_dir):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def sandbox_path(plugins_dir: Path | None = None) -> Path:
    """Path of the component for the current sources (it may not exist yet)."""
    return build_dir() / f"sandbox-{build_key(plugins_dir)}.wasm"


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in chunks (components are tens of MB)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _progress(stop: threading.Event, started: float, out: object) -> None:
    while not stop.wait(2.0):
        print(f"  ... building the sandbox component, {time.monotonic() - started:.0f} s", file=out, flush=True)


def ensure_built(quiet: bool = False, plugins_dir: Path | None = None) -> Path:
    """Return the sandbox component, building it first if the sources changed.

    `plugins_dir`: build from that tree's harvester.wit and guest/ instead of this package's."""
    wit, guest = _inputs(plugins_dir)
    if not wit.is_file() or not guest.is_dir():
        raise SandboxUnavailable(f"{plugins_dir} has no {WIT_FILE.name} and guest/ to build the sandbox from")
    target = sandbox_path(plugins_dir)
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
           "-q", "-d", str(wit), "-w", WORLD, "componentize", "-p", str(guest), APP_MODULE,
           "--stub-wasi", "-o", tmp_name]
    # componentize-py bundles any site-packages named by VIRTUAL_ENV; the guest needs none.
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=guest)
    finally:
        stop.set()
    if proc.returncode != 0:
        Path(tmp_name).unlink(missing_ok=True)
        detail = (proc.stderr or proc.stdout).strip()
        if "No module named 'componentize_py'" in detail:
            detail = ("componentize-py is not installed; install the 'wasm-build' extra "
                      "(pip install 'wasi-harvester[wasm-build]')")
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


def export(component: Path, out_dir: Path, plugins_dir: Path | None = None) -> Path:
    """Copy a built component into `out_dir` as the release bundle carries it, with its manifest."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / COMPONENT
    shutil.copyfile(component, target)
    manifest = {"sha256": file_sha256(target), "size": target.stat().st_size,
                "sources": sources_key(plugins_dir), "componentize_py": componentize_py_version(),
                "world": WORLD}
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return target


def main(argv: list[str] | None = None) -> int:
    """Command line: build the sandbox when missing; print its path."""
    p = argparse.ArgumentParser(prog="python -m plugins.sandbox.build", description=__doc__.splitlines()[0])
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--print-key", action="store_true", help="print the cache key and exit")
    p.add_argument("--sources", type=Path, metavar="DIR",
                   help="build from DIR/harvester.wit and DIR/guest/ (a release's plugins/ folder)")
    p.add_argument("--export", type=Path, metavar="OUT",
                   help="also write OUT/sandbox.wasm and OUT/sandbox.json for a release bundle")
    args = p.parse_args(argv)
    if args.print_key:
        print(build_key(args.sources))
        return 0
    try:
        path = ensure_built(quiet=args.quiet, plugins_dir=args.sources)
        if args.export is not None:
            path = export(path, args.export, args.sources)
            m = json.loads((args.export / MANIFEST).read_text(encoding="utf-8"))
            print(f"{path} (sha256 {m['sha256'][:16]}..., {m['size'] / 1e6:.1f} MB, "
                  f"componentize-py {m['componentize_py']})")
            return 0
    except (SandboxUnavailable, OSError) as exc:
        print(exc, file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
