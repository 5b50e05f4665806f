"""The `harvester` command.

Each subcommand's code is imported when it runs: `harvester node`, which stays running on
every board, loads its own and none of the fleet client's, health's or plugin tools'."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

# Exit codes: 0 ok; 1 the command ran and said no (a check failed, a node is unhealthy, a job
# failed); 2 bad input (arguments, config, files); 3 the name server or a node did not answer
# (or refused, or has no such name); 4 this machine would not let us (a port taken, a folder not writable, no space);
# 70 an error nobody foresaw (a bug: --log-level DEBUG shows the traceback).
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_ENVIRONMENT = 4
EXIT_INTERNAL = 70


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {value!r}")
    return seconds


def _endpoint(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


def _endpoints(value: str) -> list[tuple[str, int]]:
    """HOST:PORT, or several comma-separated (one per hub: the first that answers is asked)."""
    return [_endpoint(v.strip()) for v in value.split(",")]


class CliFailure(Exception):
    """A failure already explained for the user: the message (without the command prefix) and the exit status."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def cmd_node(args: argparse.Namespace) -> int:
    from actors.cli.compose import build_node
    from actors.node.agent import cap_malloc_arenas
    from actors.node.config import ConfigError, check_on_this_machine, load_config

    try:
        cfg = load_config(args.config, args.set)
        if problems := check_on_this_machine(cfg):  # what `config check` says too, before any socket
            raise ConfigError(cfg.path, problems)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    cap_malloc_arenas()
    logging.basicConfig(level=args.log_level, format=f"%(asctime)s {cfg.name} %(levelname)s %(name)s: %(message)s")
    # APScheduler logs every job run at INFO; a node polls every few seconds.
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, logging.getLogger().level))
    from actors.errors import CannotListen
    from nameserver.pyro import InsecureBindError
    from nameserver.security import TlsConfigError

    try:
        build_node(cfg, hal_mode=args.hal).run_forever()
    except TlsConfigError as exc:
        print(f"{cfg.path}: security: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except InsecureBindError as exc:
        print(f"{cfg.path}: agent.host: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CannotListen as exc:
        print(f"{cfg.path}: {exc.strerror}", file=sys.stderr)
        return EXIT_ENVIRONMENT
    return 0


def cmd_nameserver(args: argparse.Namespace) -> int:
    from nameserver.server import serve_forever

    logging.basicConfig(level=args.log_level)
    if args.ca or args.cert or args.key:
        from nameserver.security import TlsFiles, apply_tls

        if not (args.ca and args.cert and args.key):
            print("harvester nameserver: TLS needs all of --ca, --cert and --key", file=sys.stderr)
            return 2
        apply_tls(TlsFiles(args.ca, args.cert, args.key), serve=True)
    serve_forever(args.host, args.port, Path(args.storage) if args.storage else None, args.allow_insecure_lan)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from actors.cli.demo import Demo

    if not 1 <= args.hubs <= 5:
        print(f"harvester demo: --hubs takes 1 to 5, got {args.hubs}", file=sys.stderr)
        return 2
    if args.export and not re.match(r"https?://[^\s/?#]+", args.export):
        print(f"harvester demo: --export takes an http(s):// write URL, got {args.export!r}", file=sys.stderr)
        return 2
    mqtt = None
    if args.mqtt:
        host, sep, port = args.mqtt.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            print(f"harvester demo: --mqtt takes HOST:PORT of a broker, got {args.mqtt!r}", file=sys.stderr)
            return 2
        mqtt = (host, int(port))
    for flag, url in (("--notify-webhook", args.notify_webhook), ("--notify-ntfy", args.notify_ntfy)):
        if url and not re.match(r"https?://[^\s/?#]+", url):
            print(f"harvester demo: {flag} takes an http(s):// URL, got {url!r}", file=sys.stderr)
            return 2
    notify = [kind for kind, url in (("webhook", args.notify_webhook), ("ntfy", args.notify_ntfy)) if url]
    return Demo(Path(args.state_dir), web_port=args.port, ns_port=args.ns_port, tls=args.tls, hubs=args.hubs,
                export=args.export, mqtt=mqtt,
                notify={"webhook": args.notify_webhook, "ntfy": args.notify_ntfy} if notify else None,
                native_python=args.native_python).run()


def cmd_certs(args: argparse.Namespace) -> int:
    try:
        from actors.cli.certs import run_cli
    except ImportError as exc:
        print(f"harvester certs needs the 'pki' extra (pip install 'wasi-harvester[pki]'): {exc}", file=sys.stderr)
        return 2

    nodes = args.node + getattr(args, "nodes", [])
    return run_cli(args.certs_command, Path(args.dir), nodes, args.user + getattr(args, "users", []), args.force)


def cmd_config_check(args: argparse.Namespace) -> int:
    from actors.node.config import ConfigError, check_fleet, check_on_this_machine, load_config

    status = 0
    checked = []
    for path in args.files:
        try:
            cfg = load_config(path)
            if not args.remote and (problems := check_on_this_machine(cfg)):
                raise ConfigError(cfg.path, problems)
        except ConfigError as exc:
            print(exc)
            status = 1
            continue
        checked.append(cfg)
        sensors = ", ".join(f"{s.name}({s.kind}, every {s.interval:g}s)" for s in cfg.sensors) or "none"
        print(f"{path}: ok — node {cfg.name}, {cfg.role}, {cfg.profile} profile, {cfg.hal} HAL; sensors: {sensors}")
    for problem in check_fleet(checked):
        print(problem)
        status = 1
    return status


def _command(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    """A subcommand's function, imported from its module when the subcommand runs."""
    def run(args: argparse.Namespace) -> int:
        return getattr(importlib.import_module(module), name)(args)

    return run


class _Parser(argparse.ArgumentParser):
    """argparse builds a help formatter for every add_argument, and the formatter asks shutil
    for the terminal's width; shutil loads bz2 and lzma, 0.7 MB of RSS in every node. The
    same width, read as shutil reads it. Subcommand parsers are of this class too."""

    def _get_formatter(self) -> argparse.HelpFormatter:
        return self.formatter_class(prog=self.prog, width=_terminal_columns() - 2)


def _terminal_columns() -> int:
    """shutil.get_terminal_size().columns: $COLUMNS, else stdout's terminal, else 80."""
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    from nameserver.pyro import CALL_TIMEOUT

    p = _Parser(prog="harvester", description="Harvester sensor fleet")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("node", help="run a node agent from its config")
    s.add_argument("--config", required=True)
    s.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value (repeatable)")
    s.add_argument("--hal", choices=["mock", "real"], help="HAL mode (beats $HARVESTER_HAL and the config)")
    s.set_defaults(func=cmd_node)

    s = sub.add_parser("nameserver", help="run the Pyro5 name server alone")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=9090)
    s.add_argument("--storage", help="SQLite file to keep registrations across restarts")
    s.add_argument("--allow-insecure-lan", action="store_true")
    s.add_argument("--ca", help="CA certificate (mutual TLS; with --cert and --key)")
    s.add_argument("--cert", help="this name server's node certificate")
    s.add_argument("--key", help="its private key")
    s.set_defaults(func=cmd_nameserver)

    s = sub.add_parser("demo", help="run hub, pi4 and pizero in mock mode on 127.0.0.1")
    s.add_argument("--port", type=int, default=8080, help="dashboard port (with --hubs N: P, P+1, ...)")
    s.add_argument("--ns-port", type=int, default=9090, help="name server port (with --hubs N: P, P+10, ...)")
    s.add_argument("--hubs", type=int, default=1, help="run N hubs (hub1, hub2, ...) sharing the fleet; 3 ride "
                                                       "out one down")
    s.add_argument("--state-dir", default=".state/demo")
    s.add_argument("--tls", action="store_true", help="mutual TLS between nodes (CA and certs in <state-dir>/pki)")
    s.add_argument("--export", metavar="URL", help="stream every reading to this InfluxDB line-protocol write "
                                                   "endpoint (VictoriaMetrics: http://127.0.0.1:8428/write)")
    s.add_argument("--notify-webhook", metavar="URL", help="POST every alert's messages to this URL (JSON)")
    s.add_argument("--notify-ntfy", metavar="URL/TOPIC", help="send every alert's messages to this ntfy topic "
                                                              "(e.g. https://ntfy.sh/my-greenhouse)")
    s.add_argument("--mqtt", metavar="HOST:PORT", help="publish the fleet to this MQTT broker for Home "
                                                       "Assistant's discovery (mosquitto: 127.0.0.1:1883)")
    s.add_argument("--native-python", metavar="PYTHON", help="the interpreter of the native node (pizero); "
                                                             "default: this one")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("certs", help="private CA: node and user certificates for mutual TLS")
    csub = s.add_subparsers(dest="certs_command", required=True)
    for name, what in (("init", "create the CA, then node and user certificates"),
                       ("add-node", "issue node certificates from an existing CA"),
                       ("add-user", "issue user (REPL) certificates from an existing CA")):
        c = csub.add_parser(name, help=what)
        c.add_argument("--dir", required=True, help="PKI directory (holds the CA key: keep it off the nodes)")
        c.add_argument("--node", action="append", default=[], metavar="NAME=IP[,IP|DNS...]")
        c.add_argument("--user", action="append", default=[], metavar="NAME")
        c.add_argument("--force", action="store_true", help="replace existing keys")
        if name == "add-node":
            c.add_argument("nodes", nargs="*", metavar="NAME=IP[,IP|DNS...]")
        elif name == "add-user":
            c.add_argument("users", nargs="*", metavar="NAME")
        c.set_defaults(func=cmd_certs)

    s = sub.add_parser("config", help="node config tools")
    csub = s.add_subparsers(dest="config_command", required=True)
    c = csub.add_parser("check", help="validate config files and print every problem")
    c.add_argument("files", nargs="+")
    c.add_argument("--remote", action="store_true",
                   help="the configs are for other machines: skip the checks of their state folder and TLS files")
    c.set_defaults(func=cmd_config_check)

    ns_help = ("name server HOST:PORT (default 127.0.0.1:9090); with several hubs, all of theirs "
               "comma-separated: the first that answers is asked")

    def client_options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--ns", type=_endpoints, default=[("127.0.0.1", 9090)], help=ns_help)
        parser.add_argument("--timeout", type=_seconds, default=CALL_TIMEOUT, metavar="SECONDS",
                            help=f"how long to wait for each answer (default {CALL_TIMEOUT:g})")

    s = sub.add_parser("call", help="call an actor method and print the result as JSON")
    s.add_argument("name", help="e.g. harvester.pi4.dht22")
    s.add_argument("method")
    s.add_argument("args", nargs="*", help="arguments (JSON or Python literals)")
    client_options(s)
    s.set_defaults(func=_command("actors.cli.fleet", "cmd_call"))

    s = sub.add_parser("notify", help="the hub's notification channels: list them, or send a test message")
    nsub = s.add_subparsers(dest="notify_command", required=True)
    n = nsub.add_parser("test", help="send a test message on one channel (or every one) and print the outcome")
    n.add_argument("channel", nargs="?", help="a channel's name (default: every channel)")
    client_options(n)
    n.set_defaults(func=_command("actors.cli.fleet", "cmd_notify"))
    n = nsub.add_parser("channels", help="each channel: sent, waiting, suppressed, last error")
    client_options(n)
    n.set_defaults(func=_command("actors.cli.fleet", "cmd_notify"))

    s = sub.add_parser("ls", help="list the fleet's actors with live/dead status")
    s.add_argument("--kind")
    s.add_argument("--node")
    client_options(s)
    s.set_defaults(func=_command("actors.cli.fleet", "cmd_ls"))

    s = sub.add_parser("token", help="print a node's HTTP push token (created if new), or the operator token")
    s.add_argument("node", nargs="?", default="")
    s.add_argument("--operator", action="store_true", help="print the operator token instead")
    s.add_argument("--file", required=True, help="the hub's tokens.json")
    s.set_defaults(func=_command("actors.cli.fleet", "cmd_token"))

    s = sub.add_parser("jobs", help="scheduled jobs: list them or run one now")
    jsub = s.add_subparsers(dest="jobs_command", required=True)
    j = jsub.add_parser("ls", help="next run, last run, last result or error, duration")
    j.add_argument("--node")
    client_options(j)
    j.set_defaults(func=_command("actors.cli.fleet", "cmd_jobs"))
    j = jsub.add_parser("run", help="run a job now")
    j.add_argument("name")
    j.add_argument("--node", help="the node that runs it (default: the one node that has a job of that name)")
    client_options(j)
    j.set_defaults(func=_command("actors.cli.fleet", "cmd_jobs"))

    s = sub.add_parser("shell", help="Python REPL with `fleet` connected")
    client_options(s)
    s.set_defaults(func=_command("actors.cli.fleet", "cmd_shell"))


    s = sub.add_parser(
        "health", help="is a node's agent up and does the hub see it online? (exit 0 yes, 1 no, 2 bad arguments)",
        description="`harvester health`: does a node's agent answer, and does the hub see the node online?")
    s.add_argument("--config", help="the node's config: gives its name, the hub's name server and TLS files")
    s.add_argument("--node", help="node name (default: the config's node.name)")
    s.add_argument("--ns", type=_endpoint, help="the hub's name server HOST:PORT (default: from the config, "
                   "else 127.0.0.1:9090)")
    s.add_argument("--hub", help="the hub's node name, when the name server holds several hubs "
                                 "(default: the config's hub.name, else the one hub registered)")
    s.add_argument("--wait", action="store_true", help="poll until healthy or --timeout")
    s.add_argument("--timeout", type=float, default=60.0, help="seconds to wait with --wait (default 60)")
    s.add_argument("--interval", type=float, default=0.5, help="seconds between polls (default 0.5)")
    s.add_argument("--expect-version", help="healthy only when the agent runs this package version")
    s.add_argument("--watch-pid", type=int, help="fail at once if this process (the agent) exits")
    s.add_argument("--agent-only", action="store_true", help="check the agent only, not the hub's view")
    s.add_argument("--quiet", action="store_true", help="no progress lines while waiting")
    s.set_defaults(func=_command("actors.cli.health", "cmd_health"))

    s = sub.add_parser("plugins", help="plugin tools: test in the sandbox, scaffold, build the sandbox")
    psub = s.add_subparsers(dest="plugins_command", required=True)
    t = psub.add_parser("test", help="run a plugin on readings in the sandbox; print results and actions as JSON")
    t.add_argument("plugin", help="PLUGIN.py (or .wasm)")
    t.add_argument("--manifest", help="manifest TOML (default: PLUGIN.toml beside it)")
    t.add_argument("--readings", required=True, help="JSON: a list of readings, or a list of batches")
    t.add_argument("--native", action="store_true", help="run natively instead of in the sandbox (trusted code)")
    t.set_defaults(func=_command("plugins.cli", "cmd_test"))
    n = psub.add_parser("new", help="scaffold NAME.py and NAME.toml")
    n.add_argument("name")
    n.add_argument("--dir", default=".", help="folder to write into (default: current)")
    n.add_argument("--sensor", action="store_true",
                   help="a sensor plugin instead: a soil probe's voltage from an ADS1115 over its I2C grant, "
                        "declaring its own quantity")
    n.set_defaults(func=_command("plugins.cli", "cmd_new"))
    b = psub.add_parser("build", help="build the sandbox component if its sources changed")
    b.set_defaults(func=_command("plugins.cli", "cmd_build"))
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `harvester` console script."""
    args = build_parser().parse_args(argv)
    from Pyro5 import config as pyro_config
    from Pyro5 import errors as pyro_errors

    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except CliFailure as exc:
        print(f"harvester {args.command}: {exc}", file=sys.stderr)
        return exc.code
    except pyro_errors.CommunicationError as exc:
        hint = ""
        if isinstance(exc, pyro_errors.ConnectionClosedError) and not pyro_config.SSL:
            # A TLS server closes on a plaintext client without a word; say what probably happened.
            hint = ("\n(if the fleet uses TLS, set HARVESTER_TLS_CA, HARVESTER_TLS_CERT and "
                    "HARVESTER_TLS_KEY; see README, Security)")
        print(f"harvester {args.command}: {type(exc).__name__}: {exc}{hint}", file=sys.stderr)
        return 3
    except Exception as exc:
        # Every error a user can cause has its own message above or in its command; this is the
        # net under them: one line, and the traceback only when asked for.
        if args.log_level == "DEBUG":
            traceback.print_exc()
        code, what = _unforeseen(exc)
        print(f"harvester {args.command}: {what}", file=sys.stderr)
        return code


def _unforeseen(exc: Exception) -> tuple[int, str]:
    """(exit code, one line) for an error no command turned into a message of its own."""
    from nameserver.pyro import InsecureBindError

    if isinstance(exc, InsecureBindError | ValueError):  # bad input that reached a deeper layer
        return EXIT_USAGE, f"{exc}"
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return EXIT_ENVIRONMENT, f"{exc.strerror or exc}{where}"
    return EXIT_INTERNAL, (f"unexpected {type(exc).__name__}: {exc} (a bug; run with --log-level DEBUG "
                           "for the traceback and report it)")


if __name__ == "__main__":
    sys.exit(main())
