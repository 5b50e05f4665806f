"""Install a shipped sandbox component into this release and precompile it for this CPU.

`python -m plugins.sandbox.install DIR` takes DIR/sandbox.wasm and DIR/sandbox.json as the
release bundle carries them (`python -m plugins.sandbox.build --export`, run where the
release is made), checks the component's sha256 and that it was built from this package's
WIT world and guest sources, copies both into <venv>/share/harvester/sandbox and compiles
the component with wasmtime for this machine into compiled/ there, the cache the WASM
backend reads. deploy/node-release.sh runs it as a release is installed, so a board's first
plugin loads machine code (a fraction of a second) and the board never needs componentize-py.
Running it again is cheap: a current install is left alone.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from plugins.errors import PluginError, SandboxUnavailable
from plugins.sandbox.build import COMPONENT, MANIFEST, file_sha256, sources_key

ENV_INSTALL_DIR = "HARVESTER_SANDBOX_INSTALL"
NO_SANDBOX = ("this release has no plugin sandbox component and cannot build one: deploy it with "
              "deploy/update-host.sh or update-all-nodes.sh (the release bundle ships one, precompiled for "
              "this board at install), or install the 'wasm-build' extra (pip install "
              "'wasi-harvester[wasm-build]', which brings componentize-py) and run `harvester plugins build`")


def installed_dir() -> Path:
    """Where a release keeps its shipped sandbox: <venv>/share/harvester/sandbox ($HARVESTER_SANDBOX_INSTALL overrides)."""
    override = os.environ.get(ENV_INSTALL_DIR)
    return Path(override) if override else Path(sys.prefix).resolve() / "share" / "harvester" / "sandbox"


@dataclass(frozen=True)
class Shipped:
    """A shipped component and what its manifest says about it."""

    dir: Path
    manifest: dict[str, Any]

    @property
    def component(self) -> Path:
        return self.dir / COMPONENT

    @property
    def compiled_dir(self) -> Path:
        return self.dir / "compiled"


def read_shipped(directory: Path) -> Shipped | None:
    """The component in `directory`, or None when there is none; a bad manifest is an error."""
    if not (directory / COMPONENT).is_file():
        return None
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
        if not isinstance(manifest, dict) or not {"sha256", "sources"} <= manifest.keys():
            raise ValueError("it lacks sha256 or sources")
    except (OSError, ValueError) as exc:
        raise SandboxUnavailable(f"{directory / MANIFEST} is unreadable ({exc}): ship the sandbox again") from None
    return Shipped(directory, manifest)


def find_shipped() -> Shipped | None:
    """This release's installed sandbox, if it has one."""
    try:
        return read_shipped(installed_dir())
    except SandboxUnavailable:
        return Shipped(installed_dir(), {})  # mismatch() names the problem when it is used


def mismatch(shipped: Shipped, digest: str | None = None) -> str | None:
    """Why this component must not run with this package (None: it may). `digest`: its sha256, if known."""
    m = shipped.manifest
    if not m:
        return f"{shipped.dir / MANIFEST} is missing or unreadable: ship the sandbox again"
    ours = sources_key()
    if m.get("sources") != ours:
        return (f"the plugin sandbox in {shipped.dir} was built from other guest sources ({m.get('sources')}) "
                f"than this release's ({ours}): ship the component built with this release")
    digest = digest or file_sha256(shipped.component)
    if digest != m.get("sha256"):
        return (f"{shipped.component} has sha256 {digest[:16]}..., its manifest says "
                f"{str(m.get('sha256'))[:16]}...: the copy is damaged; ship it again")
    return None


def _copy(src: Shipped, dest_dir: Path) -> None:
    dest_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(dest_dir, 0o755)  # the service user reads it; the installer may run with umask 077
    for name in (COMPONENT, MANIFEST):
        tmp = dest_dir / f".{name}.tmp"
        shutil.copyfile(src.dir / name, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest_dir / name)


def _reuse(shipped: Shipped, artifact_name: str, releases: Path) -> str | None:
    """Link in another release's artifact of the same component, wasmtime and flags (the name says
    all three): most releases leave the guest alone, and compiling it takes a Pi 4 far longer
    than the 5-10 s of an x86-64 machine.
    The runtime checks its checksum and wasmtime its version and CPU before it is used.
    Returns the name of the release it came from."""
    target = shipped.compiled_dir / artifact_name
    for other in sorted(releases.glob(f"*/share/harvester/sandbox/compiled/{artifact_name}")):
        checksum = other.with_name(other.name + ".sha256")
        if other.resolve() == target.resolve() or not checksum.is_file():
            continue
        shipped.compiled_dir.mkdir(parents=True, exist_ok=True)
        for src, dst in ((other, target), (checksum, target.with_name(checksum.name))):
            tmp = dst.with_name(f".{dst.name}.tmp")
            tmp.unlink(missing_ok=True)
            try:
                os.link(src, tmp)  # releases share one copy on the SD card
            except OSError:
                shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
        return other.relative_to(releases).parts[0]
    return None


def precompile(shipped: Shipped, releases: Path | None = None) -> tuple[Path, str, float]:
    """Leave machine code for this CPU in the component's compiled/ folder: the valid artifact already
    there, another release's (`releases`/*/...), or one compiled now. Returns (artifact, how, seconds).
    Needs wasmtime (the 'wasm' extra)."""
    from plugins.backends.wasm import WasmRuntime

    started = time.monotonic()
    rt = WasmRuntime.get()
    artifact = shipped.compiled_dir / rt.artifact_key(rt.file_hash(shipped.component))
    reused = None if artifact.exists() or releases is None else _reuse(shipped, artifact.name, releases)
    artifact, compiled = rt.precompile(shipped.component, shipped.compiled_dir)
    os.chmod(shipped.compiled_dir, 0o755)
    seconds = time.monotonic() - started
    if compiled:
        how = f"precompiled for this CPU in {seconds:.1f} s"
    elif reused is not None:
        how = f"machine code shared with release {reused}"
    else:
        how = "its precompiled machine code is current"
    return artifact, how, seconds


def install(src_dir: Path, dest_dir: Path | None = None, releases: Path | None = None) -> str:
    """Check, copy and precompile the component in `src_dir`; returns one line saying what was done.
    `releases`: a folder of other releases whose artifact may be shared (see _reuse)."""
    dest_dir = dest_dir or installed_dir()
    src = read_shipped(src_dir)
    if src is None:
        raise SandboxUnavailable(f"{src_dir} holds no {COMPONENT}")
    problem = mismatch(src)
    if problem is not None:
        raise SandboxUnavailable(problem)
    try:
        dest = read_shipped(dest_dir)
    except SandboxUnavailable:
        dest = None
    copied = dest is None or dest.manifest != src.manifest or mismatch(dest) is not None
    if copied:
        _copy(src, dest_dir)
    dest = Shipped(dest_dir, src.manifest)
    size = f"{dest.component.stat().st_size / 1e6:.1f} MB"
    try:
        wasmtime_version = metadata.version("wasmtime")
    except metadata.PackageNotFoundError:
        return (f"plugin sandbox {src.manifest['sha256'][:16]} ({size}) {'installed' if copied else 'present'} "
                f"in {dest_dir}, NOT precompiled: wasmtime is not installed in this release "
                f"(the node's extras lack 'wasm')")
    artifact, how, _ = precompile(dest, releases)
    return (f"plugin sandbox {src.manifest['sha256'][:16]} ({size}) {'installed' if copied else 'present'} "
            f"in {dest_dir}; {how} (wasmtime {wasmtime_version}: {artifact.name})")


def main(argv: list[str] | None = None) -> int:
    """Command line: install DIR's sandbox into this release; print what was done."""
    p = argparse.ArgumentParser(prog="python -m plugins.sandbox.install", description=__doc__.splitlines()[0])
    p.add_argument("bundle", type=Path, help="a folder with sandbox.wasm and sandbox.json")
    p.add_argument("--dest", type=Path, help="install here instead of <venv>/share/harvester/sandbox")
    p.add_argument("--releases", type=Path, metavar="DIR",
                   help="other releases (DIR/*/) whose machine code for the same component may be shared")
    args = p.parse_args(argv)
    try:
        print(install(args.bundle, args.dest, args.releases))
    except (PluginError, OSError) as exc:  # PluginLoadError: wasmtime refused the component
        print(f"cannot install the plugin sandbox: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
