"""A real Mosquitto (Debian's package) on a loopback port, and a recording subscriber, for the
Home Assistant tests."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from tests.helpers import HOST, free_port, wait_for

BINARY = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
SKIP_REASON = ("mosquitto is not installed (Debian package mosquitto; `make test` installs it when run as "
               "root, or `sudo tests/install-debs.sh`)")


def have_mosquitto() -> bool:
    return Path(BINARY).exists()


class Mosquitto:
    """One broker process on a fixed loopback port; stop() and start() keep the port.

    Persistence is off: a stopped broker forgets every retained message, as a broker whose
    disk was wiped (or one that never saved) does."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def conf(self) -> Path:
        return self.root / "mosquitto.conf"

    def start(self) -> Mosquitto:
        self.root.mkdir(parents=True, exist_ok=True)
        # Run as root, mosquitto drops to its own user after reading this file; logs go to our file.
        self.conf.write_text(f"listener {self.port} {HOST}\nallow_anonymous true\npersistence false\n"
                             "log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n")
        log = open(self.root / "mosquitto.log", "ab")  # noqa: SIM115 (the child owns it)
        self.proc = subprocess.Popen([BINARY, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        log.close()
        self.starts += 1
        wait_for(self.accepts, timeout=20, what=f"mosquitto to accept connections on {HOST}:{self.port} "
                                                f"(log: {self.root / 'mosquitto.log'})")
        return self

    def accepts(self) -> bool:
        """The broker answers an MQTT CONNECT with a CONNACK (not only a TCP accept)."""
        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(f"mosquitto exited with {self.proc and self.proc.returncode}: "
                                 f"{(self.root / 'mosquitto.log').read_text(errors='replace')[-2000:]}")
        connect = bytes([0x10, 12, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 10, 0, 0])  # v3.1.1, clean, empty id
        try:
            with socket.create_connection((HOST, self.port), timeout=1.0) as s:
                s.sendall(connect)
                return s.recv(4)[:1] == b"\x20"
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> Mosquitto:
        self.stop()
        return self.start()

    def subscriber(self, *topics: str) -> Subscriber:
        return Subscriber(HOST, self.port, topics or ("#",)).start()


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    retain: bool

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8", "replace")


class Subscriber:
    """A paho client that records every message it gets (retained and live), by topic.

    It reconnects and subscribes again after a broker restart (`connects` counts the
    acknowledged subscriptions). `clear()` forgets what it saw, so a test can wait for a
    topic to come back."""

    def __init__(self, host: str, port: int, topics: tuple[str, ...] = ("#",)) -> None:
        self.host, self.port, self.topics = host, port, topics
        self._lock = threading.Lock()
        self._seen: dict[str, list[Message]] = {}
        self.connects = 0
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

    def start(self) -> Subscriber:
        self.client.connect_async(self.host, self.port, keepalive=10)
        self.client.loop_start()
        wait_for(lambda: self.connects > 0, timeout=20, what="the test's subscriber connected and subscribed")
        return self

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            return
        client.subscribe([(t, 1) for t in self.topics])

    def _on_subscribe(self, client: Any, userdata: Any, mid: Any, reasons: Any, properties: Any) -> None:
        with self._lock:  # counted once the broker acknowledged: from here on nothing is missed
            self.connects += 1

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self._lock:
            self._seen.setdefault(message.topic, []).append(
                Message(message.topic, bytes(message.payload), bool(message.retain)))

    # -- what was seen ------------------------------------------------------------------------
    def clear(self) -> None:
        with self._lock:
            self._seen.clear()

    def last(self, topic: str) -> Message | None:
        with self._lock:
            seen = self._seen.get(topic)
            return seen[-1] if seen else None

    def text(self, topic: str) -> str | None:
        m = self.last(topic)
        return None if m is None else m.text

    def history(self, topic: str) -> list[Message]:
        with self._lock:
            return list(self._seen.get(topic, ()))

    def latest(self, match: Callable[[str], bool] = lambda _: True) -> dict[str, Message]:
        """The last message of every topic seen that `match` accepts; an empty payload (a deleted
        retained message) counts as not there."""
        with self._lock:
            return {t: ms[-1] for t, ms in self._seen.items() if ms and match(t) and ms[-1].payload}

    # -- sending --------------------------------------------------------------------------------
    def publish(self, topic: str, payload: bytes | str, retain: bool = False, qos: int = 1) -> None:
        """Publish and wait until the broker has it (qos 1: acknowledged)."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(10.0)
        if not info.is_published():
            raise AssertionError(f"the broker did not take a publish to {topic} within 10 s (rc {info.rc})")


def publish(broker: Mosquitto, topic: str, payload: bytes | str, retain: bool = False) -> None:
    """One message with a client of its own (connect, publish at qos 1, disconnect)."""
    import paho.mqtt.publish as single

    single.single(topic, payload, qos=1, retain=retain, hostname=HOST, port=broker.port,
                  protocol=mqtt.MQTTv311)
