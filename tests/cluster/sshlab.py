"""Test hosts reachable over ssh (root only): a network-namespace Lab with one sshd per host.

Each host runs Debian's sshd on its namespace address with a host key made here; the operator
side (the root namespace) gets a key pair, a known_hosts file with those host keys, and an ssh
client config that uses them with StrictHostKeyChecking. Nothing listens outside the lab.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.cluster.netns import Lab, wait_tcp

SSHD = "/usr/sbin/sshd"
TOOLS = ("ip", "ssh", "ssh-keygen", "rsync", "flock", "setsid", SSHD)


def missing_tools() -> list[str]:
    """The tools the ssh lab and the deploy scripts need that are not installed."""
    return [t for t in TOOLS if not (os.path.isabs(t) and os.access(t, os.X_OK)) and not shutil.which(t)]


def keygen(path: Path, comment: str) -> str:
    """A new ed25519 key pair at `path`; returns the public key without its comment."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, capture_output=True)
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


class SshLab(Lab):
    """A Lab whose hosts each run an sshd that trusts one operator key."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root
        self.sshd: dict[str, subprocess.Popen] = {}
        self.host_keys: dict[str, str] = {}

    def start(self) -> SshLab:
        """The bridge, plus the operator's key pair."""
        self.root.mkdir(parents=True, exist_ok=True)
        super().start()
        keygen(self.root / "operator_key", "harvester-deploy-test")
        return self

    def add_ssh_host(self, name: str) -> str:
        """A namespace with an sshd listening on its address; returns the address."""
        address = self.add_host(name)
        d = self.root / name / "sshd"
        d.mkdir(parents=True)
        self.host_keys[address] = keygen(d / "host_key", f"test-host-{name}")
        shutil.copy(self.root / "operator_key.pub", d / "authorized_keys")
        (d / "sshd_config").write_text("\n".join([
            f"ListenAddress {address}", "Port 22", f"HostKey {d / 'host_key'}", f"PidFile {d / 'sshd.pid'}",
            f"AuthorizedKeysFile {d / 'authorized_keys'}", "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "UsePAM no", "StrictModes no", "PrintMotd no", "LogLevel VERBOSE", "",
        ]))
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        with open(d / "sshd.log", "ab") as log:
            self.sshd[name] = subprocess.Popen(
                ["ip", "netns", "exec", self.ns(name), SSHD, "-D", "-e", "-f", str(d / "sshd_config")],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_tcp(address, 22)
        return address

    def ssh_config(self) -> Path:
        """An ssh client config reaching every lab host as root with the operator key, host keys checked."""
        assert self.subnet is not None
        known = self.root / "known_hosts"
        known.write_text("".join(f"{addr} {key}\n" for addr, key in self.host_keys.items()))
        path = self.root / "ssh_config"
        prefix = str(self.subnet.network_address).rsplit(".", 1)[0]
        path.write_text("\n".join([
            f"Host {prefix}.*", "  User root", f"  IdentityFile {self.root / 'operator_key'}",
            "  IdentitiesOnly yes", f"  UserKnownHostsFile {known}", "  GlobalKnownHostsFile /dev/null",
            "  StrictHostKeyChecking yes", "  LogLevel ERROR", "",
        ]))
        return path

    def close(self) -> None:
        """Kill every process in the namespaces (sshd, sessions, agents), then remove the network."""
        super().close()
        for proc in self.sshd.values():
            proc.wait(timeout=10)  # already killed with its namespace; reap it
        self.sshd.clear()
