"""A listener that accepts TCP and never answers: every client path gives up within its timeout."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from Pyro5 import errors as pyro_errors

from actors.client import connect

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose listener accepts every connection and never sends a byte."""
    server = socket.create_server((HOST, 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(timeout=5)
    for s in [server, *held]:
        s.close()


def test_silent_name_server_cli_call_gives_up_with_one_clear_message(silent_port):
    out = subprocess.run([sys.executable, "-m", "actors.cli", "call", "--ns", f"{HOST}:{silent_port}",
                          "--timeout", "1", "harvester.pi4.dht22", "read"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 3, out
    assert f"the name server at {HOST}:{silent_port} did not answer within 1 s" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_silent_name_server_repl_handles_give_up(silent_port):
    fleet = connect(HOST, silent_port, timeout=1.0)
    with pytest.raises(pyro_errors.CommunicationError):
        fleet.names()
    with pytest.raises(pyro_errors.NamingError) as info:
        fleet.actor("harvester.pi4.dht22").read()
    assert isinstance(info.value.__cause__, pyro_errors.TimeoutError)
