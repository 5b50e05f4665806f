"""Reading sysfs and procfs through one small port, so a fake tree can stand in for the kernel.

Devices never open `/sys` or `/proc` themselves: they ask `HalContext.sysfs()` for a root
and pass it absolute kernel paths. `SysfsRoot("/")` is the machine itself; `SysfsRoot(tmp)`
reads a tree a test built in a directory; `hal.emulated.sysfs.EmulatedSysfs` computes the
dynamic files from the room simulator. OSErrors propagate with their errno untouched,
because the errno is the message (EIO / ETIMEDOUT from the dht11 driver mean "try again").
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable
from pathlib import Path, PurePosixPath


def kernel_path(path: str) -> PurePosixPath:
    """Validate an absolute kernel path ("/sys/...") and return it normalised."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(f"sysfs paths are absolute, like '/sys/class/thermal', got {path!r}")
    pure = PurePosixPath(path)
    # '..' would let a path escape the root a test or the emulation placed it under.
    if ".." in pure.parts:
        raise ValueError(f"sysfs paths may not contain '..', got {path!r}")
    return pure


def glob_paths(pattern: str, listdir: Callable[[str], list[str]],
               is_dir: Callable[[str], bool], exists: Callable[[str], bool]) -> list[str]:
    """Expand a shell pattern one path component at a time over any tree with listdir/is_dir.

    Shared by the real and the emulated root so both match exactly the same way; like the
    shell, a wildcard does not match names starting with '.' unless the pattern does.
    """
    parts = kernel_path(pattern).parts[1:]
    found = ["/"]
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        nxt: list[str] = []
        for parent in found:
            if not _has_magic(part):
                candidate = _join(parent, part)
                if exists(candidate) and (last or is_dir(candidate)):
                    nxt.append(candidate)
                continue
            if not is_dir(parent):
                continue
            try:
                names = listdir(parent)
            except OSError:
                # A directory that vanished between listing and reading (a device unbound)
                # simply matches nothing, as in glob.glob.
                continue
            for name in names:
                if name.startswith(".") and not part.startswith("."):
                    continue
                if fnmatch.fnmatchcase(name, part):
                    candidate = _join(parent, name)
                    if last or is_dir(candidate):
                        nxt.append(candidate)
        found = nxt
        if not found:
            break
    return sorted(found) if parts else []


def _has_magic(part: str) -> bool:
    return any(c in part for c in "*?[")


def _join(parent: str, name: str) -> str:
    return parent.rstrip("/") + "/" + name


MAX_KEPT_PATHS = 512


class SysfsRoot:
    """sysfs/procfs as files under a base directory: '/' for the machine, a tmp dir for tests."""

    def __init__(self, base: str | Path = "/") -> None:
        self.base = Path(base)
        # kernel path -> host path, for the files a node reads every poll: building a Path
        # interns each of its parts, and parts dropped with the Path churn the interpreter's
        # table of interned strings (which grows by half a megabyte when churn first fills it)
        self._paths: dict[str, Path] = {}

    def __repr__(self) -> str:
        return f"SysfsRoot({str(self.base)!r})"

    def host_path(self, path: str) -> Path:
        """The file on this machine that the kernel path maps to."""
        found = self._paths.get(path)
        if found is None:
            rel = kernel_path(path).relative_to("/")
            found = self.base / rel if rel.parts else self.base
            if len(self._paths) < MAX_KEPT_PATHS:  # a glob over a big tree must not grow it for ever
                self._paths[path] = found
        return found

    def read_text(self, path: str) -> str:
        """Read a whole attribute file; OSError (EIO, ETIMEDOUT, ENOENT...) propagates."""
        # kernfs renders an attribute once per open, so reading to EOF cannot trigger a
        # second measurement; procfs files (/proc/stat) can exceed one page.
        return self.host_path(path).read_bytes().decode("utf-8", errors="replace")

    def listdir(self, path: str) -> list[str]:
        """Names in a directory, sorted."""
        return sorted(os.listdir(self.host_path(path)))

    def exists(self, path: str) -> bool:
        """True when the path exists (file or directory)."""
        return self.host_path(path).exists()

    def is_dir(self, path: str) -> bool:
        """True when the path is a directory (following symlinks, as sysfs device links need)."""
        return self.host_path(path).is_dir()

    def glob(self, pattern: str) -> list[str]:
        """Absolute kernel paths matching a shell pattern, sorted."""
        return glob_paths(pattern, self.listdir, self.is_dir, self.exists)
