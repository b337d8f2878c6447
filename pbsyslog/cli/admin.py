"""``pbsyslog list/add/del/flush/status``: the client side of the administrator's commands on authorisations.

What it does: ``run`` turns the command line into one request, ``request``
carries it out, and ``run`` prints the reply (``list`` as
``IP<TAB>PATTERN<TAB>SECONDS_LEFT<TAB>OPEN_SESSIONS`` rows, ``status`` as
``key: value`` lines, ``--json`` as the reply itself).  With the service
running, every request goes through its control socket (``<dbfile>.ctl``,
see ``pbsyslog.control``), so the service's tracker, journal and map stay
consistent.  With the service stopped (no socket answers and the service's
lock ``<dbfile>.lock`` is free), ``list/add/del/flush`` work on the state
journal and the file maps directly, holding that lock, so a service
starting meanwhile waits for nothing and finds consistent files.

What it must not do: change anything behind a running service's back (a
held lock with no answering socket is an error, not a reason to write the
files), write a PostgreSQL output (its rows carry deadlines only the
service computes; it resyncs the table at start-up), or need a reactor: it
is a plain blocking client of the socket, or of the files.

How it fails: ``AdminError`` with a message saying what is wrong (service
running but its socket unreachable, a bad IP, a refused request, a map
that cannot be written); the command line turns it into exit status 2.
``status`` with the service stopped (``NotRunning``) is exit status 3.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import socket
import sys
import time
from typing import Any

from pbsyslog.addresses import address_order
from pbsyslog.cli import CommandError, read_config
from pbsyslog.config import Config, ConfigError
from pbsyslog.journal import SideFiles, StateJournal, UntrustedFile


class AdminError(RuntimeError):
    """A command that could not be carried out."""


class NotRunning(AdminError):
    """The service is not running (for ``status``)."""


def run(args: argparse.Namespace) -> int:
    """list / add / del / flush / status."""
    config = read_config(args.config)
    if args.dbfile:
        try:
            config = config.override(dbfile=args.dbfile)
        except ConfigError as e:
            raise CommandError(str(e)) from None
    message: dict[str, Any] = {"cmd": args.command}
    if args.command in ("add", "del"):
        message["ip"] = args.ip
    if args.command == "add" and args.grace is not None:
        if args.grace <= 0:
            raise CommandError("--grace must be positive")
        message["grace"] = args.grace
    try:
        reply = request(config, message)
    except NotRunning as e:
        print(f"pbsyslog status: {e}", file=sys.stderr)
        return 3
    except AdminError as e:
        raise CommandError(str(e)) from None
    if args.command == "list":
        if args.sort == "deadline":
            reply["entries"].sort(key=lambda e: (e["seconds_left"], address_order(e["ip"])))
        else:
            reply["entries"].sort(key=lambda e: address_order(e["ip"]))
    if getattr(args, "json", False):
        reply.pop("ok", None)
        print(json.dumps(reply, indent=2))
    elif args.command == "list":
        print("IP\tPATTERN\tSECONDS_LEFT\tOPEN_SESSIONS")
        for entry in reply["entries"]:
            sessions = entry.get("open_sessions", "-")
            print(f"{entry['ip']}\t{entry['pattern'] or '-'}\t{entry['seconds_left']:.0f}\t{sessions}")
    elif args.command == "status":
        for key, value in reply.items():
            if key != "ok":
                print(f"{key}: {json.dumps(value)}")
    elif args.command == "add":
        print(f"added {reply['ip']}")
    elif args.command == "del":
        print("removed" if reply["removed"] else "not authorised")
    elif args.command == "flush":
        print(f"removed {reply['removed']}")
    return 0


def request(config: Config, message: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Send one request to the running service, or carry it out offline; return the reply."""
    path = SideFiles(config.dbfile).control
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(json.dumps(message).encode() + b"\n")
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    raise AdminError("the service closed the control connection")
                reply += chunk
    except (FileNotFoundError, ConnectionRefusedError):
        return _offline(config, message)
    except OSError as e:
        raise AdminError(f"control socket {path}: {e}") from None
    answer: dict[str, Any] = json.loads(reply)
    if not answer.get("ok"):
        raise AdminError(answer.get("error", "refused"))
    return answer


def _offline(config: Config, message: dict[str, Any]) -> dict[str, Any]:
    """Carry out a request on the files, holding the service's lock."""
    from pbsyslog.outputs.berkeley import output_filename
    from pbsyslog.patterns import normalise_ip

    files = SideFiles(config.dbfile)
    cmd = message["cmd"]
    if cmd == "status":
        raise NotRunning(f"pbsyslog is not running (no control socket at {files.control})")
    try:
        lock = open(files.lock, "a+b")
    except OSError as e:
        raise AdminError(f"cannot open {files.lock}: {e.strerror}") from None
    with lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AdminError(
                f"pbsyslog is running with {output_filename(config.map_kind, config.dbfile)} "
                f"but its control socket {files.control} does not answer"
            ) from None
        now = time.time()
        journal = StateJournal(files.journal)
        try:
            loaded = journal.load(now, grace=config.grace, max_session=config.max_session)
        except UntrustedFile as e:
            raise AdminError(str(e)) from None
        if cmd == "list":
            return {"ok": True, "entries": [
                {"ip": ip, "pattern": loaded.patterns.get(ip, ""), "seconds_left": round(d - now, 1),
                 "open_sessions": _open_sessions(loaded, ip, now - config.max_session)}
                for ip, d in sorted(loaded.deadlines.items(), key=lambda item: address_order(item[0]))
            ]}
        if cmd == "add":
            ip = normalise_ip(str(message["ip"]))
            if ip is None:
                raise AdminError(f"not an IP address: {message['ip']!r}")
            deadline = now + (message.get("grace") or config.grace)
            if deadline > loaded.deadlines.get(ip, float("-inf")):
                # As the service's add: the floor rises, open sessions stay open.
                sessions = {}
                if ip in loaded.sessions:
                    floor, keyed = loaded.sessions[ip]
                    sessions[ip] = (max(floor, deadline), keyed)
                journal.append({ip: (deadline, "manual")}, sessions=sessions)
            journal.close()
            _apply(config, add=[ip])
            return {"ok": True, "ip": ip}
        if cmd in ("del", "flush"):
            if cmd == "del":
                ip = normalise_ip(str(message["ip"]))
                if ip is None:
                    raise AdminError(f"not an IP address: {message['ip']!r}")
                gone = [ip] if ip in loaded.deadlines else []
            else:
                gone = sorted(loaded.deadlines)
            journal.append(removed=gone)
            journal.close()
            _apply(config, remove=gone)
            return {"ok": True, "removed": bool(gone) if cmd == "del" else len(gone)}
        raise AdminError(f"unknown command {cmd!r}")


def _open_sessions(loaded: Any, ip: str, cutoff: float) -> int:
    """How many of ``ip``'s journalled sessions are still open (begun after ``cutoff`` = now - max_session)."""
    if ip not in loaded.sessions:
        return 0
    return sum(1 for _, starts in loaded.sessions[ip][1] for start in starts if start > cutoff)


def _apply(config: Config, add: list[str] = (), remove: list[str] = ()) -> None:  # type: ignore[assignment]
    """Write one change to every file map the service keeps (its primary map and the [[output]] files).

    A PostgreSQL output is left to the service: its rows carry deadlines
    that only the service computes, and it resyncs the table at start-up.
    """
    from pbsyslog.config import PGSQL_KIND
    from pbsyslog.outputs.berkeley import DBError, open_output

    for spec in config.all_outputs():
        if spec.kind == PGSQL_KIND:
            continue
        if not os.path.isdir(os.path.dirname(os.path.abspath(spec.path))):
            raise AdminError(f"the directory of the {spec.kind} map {spec.path} does not exist")
        try:
            writer = open_output(spec.kind, spec.path, spec.value)
            try:
                writer.apply(add=add, remove=remove)
            finally:
                writer.close()
        except UntrustedFile as e:
            raise AdminError(str(e)) from None
        except DBError as e:
            raise AdminError(
                f"cannot write the {spec.kind} map {spec.path}: {e}; the state journal has the change, "
                f"and the service rebuilds its maps from it when it starts"
            ) from None
