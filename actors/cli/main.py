"""The `harvester` command."""

from __future__ import annotations

import argparse
import ast
import json
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from actors.cli.health import add_health_parser
from plugins.cli import add_parser as add_plugins_parser

if TYPE_CHECKING:
    from actors.client import Fleet

T = TypeVar("T")
# Exit codes: 0 ok; 1 the command ran and said no (a check failed, a node is unhealthy, a job
# failed); 2 bad input (arguments, config, files); 3 the name server or a node did not answer
# (or refused, or has no such name); 4 this machine would not let us (a port taken, a folder not writable, no space);
# 70 an error nobody foresaw (a bug: --log-level DEBUG shows the traceback).
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_ENVIRONMENT = 4
EXIT_INTERNAL = 70
PARALLEL_CALLS = 16  # nodes asked at once by `ls` and `jobs`: a frozen one costs one timeout, not one each


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


def _arg(text: str) -> Any:
    """A call argument: JSON or a Python literal if it parses, else the plain string."""
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(text)
        except (ValueError, SyntaxError):
            continue
    return text


class CliFailure(Exception):
    """A failure already explained for the user: the message (without the command prefix) and the exit status."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _node_of(name: str) -> str | None:
    """The node of `harvester.<node>.<actor>`, else None."""
    from hal.names import PREFIX

    parts = name.split(".")
    return parts[1] if len(parts) >= 3 and parts[0] == PREFIX else None


def unreachable(fleet: Fleet, exc: Exception, name: str | None = None, method: str | None = None) -> CliFailure:
    """The one message for a name server or node that did not answer: who, within how long, what to check."""
    from Pyro5 import config as pyro_config
    from Pyro5 import errors as pyro_errors

    ns = f"{fleet.host}:{fleet.port}"
    node = _node_of(name) if name else None
    if isinstance(exc, pyro_errors.NamingError) and "unknown name" in str(exc):
        return CliFailure(f"no actor {name!r} in the name server at {ns} (`harvester ls` lists them)",
                          EXIT_UNREACHABLE)
    # a PYRONAME call that found no name server raises NamingError from the transport's error
    at_ns = name is None or isinstance(exc, pyro_errors.NamingError)
    cause = exc.__cause__ if at_ns and isinstance(exc.__cause__, pyro_errors.CommunicationError) else exc
    timed_out = isinstance(cause, pyro_errors.TimeoutError)
    within = f"within {fleet.timeout:g} s (the call timeout; see --timeout)"
    if at_ns:
        what = f"the name server at {ns} did not answer {within}" if timed_out else \
            f"cannot reach the name server at {ns}: {type(cause).__name__}: {cause}"
        check = f"Check that the hub (or `harvester nameserver`) is running at {ns} and the network to {fleet.host}."
    else:
        what = f"node {node} did not answer: {name}.{method}() got no reply {within}" if timed_out else \
            f"cannot reach {name}{f' on node {node}' if node else ''}: {type(exc).__name__}: {exc}"
        check = (f"Check that {node}'s node process is running and not stopped "
                 f"(`harvester health --node {node} --ns {ns}`) and the network between here and {node}."
                 if node else "Check that its node process is running and the network to it.")
    closed = isinstance(cause, pyro_errors.ConnectionClosedError)
    if (closed or at_ns and timed_out) and not pyro_config.SSL:
        # A TLS server closes on a plaintext client, or waits for its handshake, without a word.
        check += ("\n(if the fleet uses TLS, set HARVESTER_TLS_CA, HARVESTER_TLS_CERT and HARVESTER_TLS_KEY; "
                  "see README, Security)")
    return CliFailure(f"{what}.\n{check}", EXIT_UNREACHABLE)


def _is_transport_error(exc: Exception) -> bool:
    from Pyro5 import errors as pyro_errors

    if isinstance(exc, pyro_errors.NamingError):  # raised by the name server, or for want of one
        return True
    # an actor's own error that happens to be a Pyro5 one arrives with the remote traceback attached
    return isinstance(exc, pyro_errors.CommunicationError) and not hasattr(exc, "_pyroTraceback")


def remote_call(fleet: Fleet, name: str, method: str, *args: Any) -> Any:
    """Call `name.method(*args)` for a CLI command; a silent name server or node raises CliFailure (exit 3)."""
    try:
        return fleet.actor(name).call(method, *args)
    except Exception as exc:
        if _is_transport_error(exc):
            raise unreachable(fleet, exc, name, method) from exc
        raise


def ns_call(fleet: Fleet, op: Callable[[], T]) -> T:
    """Run a name-server query for a CLI command; a silent name server raises CliFailure (exit 3)."""
    try:
        return op()
    except Exception as exc:
        if _is_transport_error(exc):
            raise unreachable(fleet, exc) from exc
        raise


def _client(args: argparse.Namespace) -> Fleet:
    from actors.client import connect

    return connect(list(args.ns), timeout=args.timeout)


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
                notify={"webhook": args.notify_webhook, "ntfy": args.notify_ntfy} if notify else None).run()


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


def cmd_call(args: argparse.Namespace) -> int:
    from actors.client import check_method_name
    from actors.node.jobspec import ACTOR_RE

    # said before any network: a name server that is fine must not be blamed for a typo
    if not ACTOR_RE.match(args.name):
        raise CliFailure(f"{args.name!r} is not an actor name: harvester.<node>.<actor>, e.g. harvester.pi4.dht22 "
                         "(`harvester ls` lists them)", EXIT_USAGE)
    try:
        check_method_name(args.method)
    except AttributeError as exc:
        raise CliFailure(str(exc), EXIT_USAGE) from None
    fleet = _client(args)
    try:
        result = remote_call(fleet, args.name, args.method, *[_arg(a) for a in args.args])
    except CliFailure:
        raise
    except Exception as exc:  # the remote error, typed; show it plainly
        print(f"harvester call: {args.name}.{args.method} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2, ensure_ascii=False, default=str))
    return 0


def cmd_notify(args: argparse.Namespace) -> int:
    """`harvester notify channels|test [CHANNEL]`: the hub's notification channels."""
    fleet = _client(args)
    names = ns_call(fleet, lambda: fleet.names({"kind:notify"}))
    if not names:
        raise CliFailure(f"no hub at {fleet.where()} has notification channels ([[notify]] in its config)", 1)
    name = sorted(names)[0]  # with several hubs each has the same channels; the leader sends, any may test
    if args.notify_command == "channels":
        print(json.dumps(remote_call(fleet, name, "channels"), indent=2, ensure_ascii=False))
        return 0
    outcomes = remote_call(fleet, name, "test", *([args.channel] if args.channel else []))
    for o in outcomes:
        print(f"{o['channel']}: {'sent' if o['ok'] else 'NOT sent'}: {o['result']}")
    return 0 if all(o["ok"] for o in outcomes) else 1


def _when(ts: float | None) -> str:
    import time as _time

    return "-" if ts is None else _time.strftime("%Y-%m-%d %H:%M:%S", _time.localtime(ts))


def _jobs_of(fleet: Fleet, nodes: list[str]) -> tuple[dict[str, list[dict[str, Any]]], dict[str, CliFailure]]:
    """Every node's job list, asked in parallel: (node -> jobs, node -> why it could not be asked)."""
    from hal.names import object_name

    def ask(node: str) -> list[dict[str, Any]]:
        try:
            return remote_call(fleet, object_name(node, "jobs"), "list")
        except CliFailure:
            raise
        except Exception as exc:  # the jobs actor's own error
            raise CliFailure(f"{node}: jobs.list() failed: {type(exc).__name__}: {exc}", 1) from exc

    found: dict[str, list[dict[str, Any]]] = {}
    failed: dict[str, CliFailure] = {}
    if not nodes:
        return found, failed
    with ThreadPoolExecutor(max_workers=min(PARALLEL_CALLS, len(nodes))) as pool:
        futures = {node: pool.submit(ask, node) for node in nodes}
    for node, future in futures.items():
        try:
            found[node] = future.result()
        except CliFailure as exc:
            failed[node] = exc
    return found, failed


def _jobs_nodes(fleet: Fleet) -> list[str]:
    """Nodes that register a jobs actor."""
    names = ns_call(fleet, lambda: fleet.names({"kind:jobs"}))
    return sorted({node for n in names if (node := _node_of(n))})


def _job_node(fleet: Fleet, job: str) -> str:
    """The one node that has a job named `job`; CliFailure when none, several, or a node could not be asked."""
    found, failed = _jobs_of(fleet, _jobs_nodes(fleet))
    have = sorted(node for node, jobs in found.items() if any(j["name"] == job for j in jobs))
    if len(have) > 1:
        raise CliFailure(f"job {job!r} is on several nodes: {', '.join(have)}; pick one with --node NODE", 2)
    if failed:  # the silent node may have it too: running it elsewhere could be the wrong job
        where = f"{have[0]} has it, but " if have else ""
        hint = f" --node {have[0]}" if have else " --node NODE"
        reasons = "\n".join(str(f) for f in failed.values())
        raise CliFailure(f"cannot tell which node has job {job!r}: {where}{', '.join(sorted(failed))} could not be "
                         f"asked; name the node with{hint}\n{reasons}", max(f.code for f in failed.values()))
    if not have:
        owners: dict[str, list[str]] = {}
        for node, jobs in found.items():
            for j in jobs:
                owners.setdefault(j["name"], []).append(node)
        known = ", ".join(f"{name} ({', '.join(sorted(nodes))})" for name, nodes in sorted(owners.items()))
        raise CliFailure(f"no node has a job named {job!r}; jobs: {known or 'none'}", 2)
    return have[0]


def cmd_jobs(args: argparse.Namespace) -> int:
    from actors.errors import BadRequest
    from hal.names import object_name

    fleet = _client(args)
    if args.jobs_command == "run":
        node = args.node or _job_node(fleet, args.name)
        try:
            rec = remote_call(fleet, object_name(node, "jobs"), "run", args.name)
        except CliFailure:
            raise
        except BadRequest as exc:  # no such job on that node: the actor lists the ones it has
            print(f"harvester jobs run: {node}: {exc}", file=sys.stderr)
            return 2
        except Exception as exc:  # the remote error, typed; show it plainly
            print(f"harvester jobs run: {node}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        print(json.dumps(rec, indent=2, ensure_ascii=False))
        return 1 if rec["last_error"] else 0
    found, failed = _jobs_of(fleet, [args.node] if args.node else _jobs_nodes(fleet))
    rows = []
    for node, jobs in sorted(found.items()):
        for job in jobs:
            outcome = f"error: {job['last_error']}" if job["last_error"] else (job["last_result"] or "-")
            took = f"{job['duration_ms']:.0f} ms" if job["duration_ms"] is not None else "-"
            rows.append((node, job["name"], job["trigger"], _when(job["next_run"]), _when(job["last_run"]), took,
                         outcome if job["enabled"] else "disabled"))
    header = ("NODE", "JOB", "TRIGGER", "NEXT RUN", "LAST RUN", "TOOK", "LAST RESULT")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(6)]
    for r in [header, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(r[:6], widths, strict=True)) + "  " + str(r[6]))
    for failure in failed.values():  # the nodes that answered are listed; say which did not
        print(f"harvester jobs: {failure}", file=sys.stderr)
    return max((f.code for f in failed.values()), default=0)


def cmd_token(args: argparse.Namespace) -> int:
    from actors.hub.tokens import TokenFileError, Tokens

    try:
        tokens = Tokens(Path(args.file))
        print(tokens.data()["operator"] if args.operator else tokens.ensure_node(args.node))
    except (TokenFileError, ValueError, OSError) as exc:
        print(f"harvester token: {exc}", file=sys.stderr)
        return 2
    return 0


def _ping(fleet: Fleet, name: str) -> tuple[str, CliFailure | None]:
    """An actor's state for `ls`: live, dead (refused, gone) or no answer (frozen), with why."""
    from Pyro5 import errors as pyro_errors

    try:
        remote_call(fleet, name, "ping")
        return "live", None
    except CliFailure as exc:
        frozen = isinstance(exc.__cause__, pyro_errors.TimeoutError)
        return (f"no answer ({fleet.timeout:g} s)", exc) if frozen else ("dead", None)
    except Exception:  # any other failure to answer means "dead" in a listing
        return "dead", None


def cmd_ls(args: argparse.Namespace) -> int:
    fleet = _client(args)
    selected = []
    for name, (_uri, tags) in sorted(ns_call(fleet, fleet.listing).items()):
        meta = dict(t.split(":", 1) for t in tags if ":" in t)
        if args.kind and meta.get("kind") != args.kind or args.node and meta.get("node") != args.node:
            continue
        selected.append((name, meta.get("kind", "?")))
    with ThreadPoolExecutor(max_workers=PARALLEL_CALLS) as pool:
        states = list(pool.map(lambda row: _ping(fleet, row[0]), selected))
    width = max((len(name) for name, _kind in selected), default=10)
    silent: dict[str, CliFailure] = {}
    for (name, kind), (state, failure) in zip(selected, states, strict=True):
        print(f"{name:<{width}}  {kind:<10}  {state}")
        if failure is not None:
            silent.setdefault(_node_of(name) or name, failure)
    for failure in silent.values():  # one hint per frozen node, not one per actor
        print(f"harvester ls: {failure}", file=sys.stderr)
    return 0


def enable_completion(namespace: dict[str, Any], readline: Any = None) -> bool:
    """Tab-complete names in `namespace` (node, actor and remote method names through `fleet`); False without readline."""
    import rlcompleter

    if readline is None:
        try:
            import readline
        except ImportError:  # e.g. Windows without pyreadline3
            return False
    # code.interact() runs in `namespace`, not __main__, so the default completer would not see `fleet`
    readline.set_completer(rlcompleter.Completer(namespace).complete)
    # macOS's readline module is libedit, which ignores GNU's "tab: complete"
    libedit = getattr(readline, "backend", None) == "editline" or "libedit" in (readline.__doc__ or "")
    readline.parse_and_bind("bind ^I rl_complete" if libedit else "tab: complete")
    return True


def cmd_shell(args: argparse.Namespace) -> int:
    import code

    from actors.client import connect

    fleet = _client(args)
    nodes = ns_call(fleet, fleet.nodes)
    namespace: dict[str, Any] = {"fleet": fleet, "connect": connect}
    tab = ("Tab completes node, actor and method names: fleet.pi4.dht22.re<Tab>" if enable_completion(namespace)
           else "(no readline module here, so no Tab completion)")
    banner = (f"Harvester shell — `fleet` is connected to {fleet.where}\n"
              f"nodes: {', '.join(nodes) or '(none yet)'}\n"
              f"try: fleet.pi4.dht22.read()   fleet.pi4.leds.help()   list(fleet)\n{tab}")
    code.interact(banner=banner, local=namespace)
    return 0


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
    s.set_defaults(func=cmd_call)

    s = sub.add_parser("notify", help="the hub's notification channels: list them, or send a test message")
    nsub = s.add_subparsers(dest="notify_command", required=True)
    n = nsub.add_parser("test", help="send a test message on one channel (or every one) and print the outcome")
    n.add_argument("channel", nargs="?", help="a channel's name (default: every channel)")
    client_options(n)
    n.set_defaults(func=cmd_notify)
    n = nsub.add_parser("channels", help="each channel: sent, waiting, suppressed, last error")
    client_options(n)
    n.set_defaults(func=cmd_notify)

    s = sub.add_parser("ls", help="list the fleet's actors with live/dead status")
    s.add_argument("--kind")
    s.add_argument("--node")
    client_options(s)
    s.set_defaults(func=cmd_ls)

    s = sub.add_parser("token", help="print a node's HTTP push token (created if new), or the operator token")
    s.add_argument("node", nargs="?", default="")
    s.add_argument("--operator", action="store_true", help="print the operator token instead")
    s.add_argument("--file", required=True, help="the hub's tokens.json")
    s.set_defaults(func=cmd_token)

    s = sub.add_parser("jobs", help="scheduled jobs: list them or run one now")
    jsub = s.add_subparsers(dest="jobs_command", required=True)
    j = jsub.add_parser("ls", help="next run, last run, last result or error, duration")
    j.add_argument("--node")
    client_options(j)
    j.set_defaults(func=cmd_jobs)
    j = jsub.add_parser("run", help="run a job now")
    j.add_argument("name")
    j.add_argument("--node", help="the node that runs it (default: the one node that has a job of that name)")
    client_options(j)
    j.set_defaults(func=cmd_jobs)

    s = sub.add_parser("shell", help="Python REPL with `fleet` connected")
    client_options(s)
    s.set_defaults(func=cmd_shell)

    add_health_parser(sub, _endpoint)
    add_plugins_parser(sub)
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
