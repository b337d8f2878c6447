"""Service: the lifecycle of one pbsyslog, between its sockets and its maps.

Contract: the only module that reads the clock (``reactor.seconds()``) and
owns the expiry ``LoopingCall``.  It starts (lock, journal restore, maps,
then the sockets ``wiring.bind`` opens), hands frames to the pipeline,
coalesces commits, expires and heals on each tick, reloads on SIGHUP and
stops cleanly (the last batch written).  Additions are coalesced: the first one
after a quiet spell is committed on the next reactor turn, and later ones at
most once per ``commit_interval`` (so a burst of 1,000 logins costs a few
commits, i.e. a few smtpd restarts, not 1,000); removals are committed by
the expiry tick.  Nothing here raises into the reactor: a
failed map write is logged and the map is healed from the tracker's state
on the next tick.
"""

from __future__ import annotations

import fcntl
import signal
import time
from collections.abc import Callable
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet.error import ReactorNotRunning
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from pbsyslog.config import Config
from pbsyslog.inputs.listening import TransportCounters
from pbsyslog.journal import SideFiles, StateJournal
from pbsyslog.logs import Failing
from pbsyslog.memo import remember
from pbsyslog.metrics import Metrics
from pbsyslog.outputs import Outputs
from pbsyslog.outputs.berkeley import output_filename
from pbsyslog.patterns import load_origins, load_table
from pbsyslog.pipeline import Moved, Pipeline, Refused
from pbsyslog.policy import NeverList, never_list
from pbsyslog.tracker import Change

log = Logger(namespace="pbsyslog")


class PbsyslogService(Service):
    """Listens for syslog, keeps the tracker, and mirrors it into the map."""

    def __init__(
        self,
        config: Config,
        reactor: Any,
        pipeline: Pipeline,
        bind: Callable[[PbsyslogService], Any],
        reload_config: Callable[[], Config] | None = None,
    ) -> None:
        self.config = config
        self._bind = bind  # opens the sockets at start-up (wiring.bind); returns a wiring.Bound
        self._reload_config = reload_config
        self._trust: list[Any] = []  # per syslog listener, its ListenerTrust (reload updates them)
        self._previous_hup: Any = None
        self._stopping = False  # a SIGTERM is being handled
        self._lock_file: Any = None
        self.started_at: float | None = None
        self.reactor = reactor
        self.pipeline = pipeline
        self.tracker = pipeline.tracker
        self.outputs: Outputs | None = None
        self.files = SideFiles(config.dbfile)
        self.map_file = output_filename(config.map_kind, config.dbfile)  # the primary map's file, for messages
        self.journal = StateJournal(self.files.journal)
        self.ports: list[Any] = []
        self.untrusted = 0
        self._warned: dict[str, float] = {}
        # One set of transport counters per listener, in config order.
        self.transport_counters: list[tuple[Any, TransportCounters]] = []
        self.map_commits = 0
        self.map_errors = 0
        self.output_name = config.map_kind if not config.outputs else "all"
        self.metrics = Metrics()
        self.metrics.watch(self)
        self._full_warned = float("-inf")
        self._pending_adds: dict[str, float] = {}  # ip -> when its login arrived
        self._pending_state: set[str] = set()
        self._flush_call: Any = None
        self._dirty = False
        self._state_dirty = False
        self._failing = Failing()  # kinds of failure logged and not yet recovered
        self._unlogged: set[str] = set()  # additions whose commit failed, logged once healed
        self.last_commit = float("-inf")
        self._expiry = LoopingCall(self.tick)
        self._expiry.clock = reactor

    def startService(self) -> None:
        self._lock()
        self._restore_state()
        # Open (create) the map before any port is bound: an smtpd that finds
        # no map file answers 451 until it exits.
        self.outputs = self._open_outputs()
        self._announce_exactness(self.outputs)
        added, stale = self.outputs.replace_all(self.tracker.ips())
        for ip in sorted(stale):
            log.info("removed {ip} from map (not authorised at start-up)", ip=ip)
        for ip in sorted(added):
            log.info("added {ip} to map (restored)", ip=ip)
        bound = self._bind(self)
        self.ports, self._trust, self.transport_counters = bound.ports, bound.trust, bound.counters
        self._expiry.start(self.config.expire_interval, now=False)
        if self._reload_config is not None:  # run by twistd, not by a test
            self._previous_hup = signal.signal(
                signal.SIGHUP, lambda signum, frame: self.reactor.callFromThread(self.reload))
            # The reactor's own SIGTERM handler makes twistd re-raise the
            # signal at exit (status -15); a stop asked for is a clean stop,
            # so take SIGTERM over once the reactor runs: stop, write the
            # last batch (stopService), exit 0.
            self.reactor.callWhenRunning(signal.signal, signal.SIGTERM, self._on_sigterm)
        super().startService()
        log.info("pbsyslog ready: map {path}, grace {grace:g} s", path=self.map_file, grace=self.config.grace)

    def _open_outputs(self) -> Outputs:
        """Open every output; a pgsql one reads deadlines and patterns from the tracker."""
        outputs = Outputs(self.config.all_outputs(), self.reactor.seconds(),
                          deadline_of=self.tracker.deadline, pattern_of=self.tracker.pattern, reactor=self.reactor,
                          ipv6_parent_match=self.config.ipv6_file_maps == "allow-parent-match")
        return outputs

    def _announce_exactness(self, outputs: Outputs) -> None:
        """Say at start-up which outputs keep IPv6 keys that would stand for other clients out."""
        matching = [name for name, writer in zip(outputs.names, outputs.writers, strict=True) if writer.parent_match]
        if matching and not outputs.ipv6_parent_match:
            exact = (["socketmap"] if self.config.socketmap else []) + (["policy"] if self.config.policy else [])
            log.info("IPv6 addresses that Postfix would also match for other clients (those with '::') are not "
                     "written to {names}; {exact} (ipv6_file_maps = \"exact-only\")", names=", ".join(matching),
                     exact=f"{' and '.join(exact)} answer for them" if exact
                     else "no exact output ([[policy]], [[socketmap]]) answers for them")

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        # A second SIGTERM (make forwards the one a process group gets, then
        # sends its own) must neither stop the reactor twice nor kill the
        # process while it writes its last batch: from now on SIGTERM is
        # ignored by the kernel (Python leaves SIG_IGN in place even while
        # the interpreter shuts down, where it resets its own handlers).
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if self._stopping:
            return
        self._stopping = True
        log.info("received SIGTERM: writing the last batch and stopping")
        self.reactor.callFromThread(self._stop_reactor)

    def _stop_reactor(self) -> None:
        try:
            self.reactor.stop()
        except ReactorNotRunning:  # already stopping for another reason (twistd's own handler, an error)
            pass

    def _lock(self) -> None:
        """Hold ``<dbfile>.lock`` while running: one service per map, and the offline CLI knows we are up."""
        self._lock_file = open(self.files.lock, "a+b")
        try:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            self._lock_file = None
            raise RuntimeError(f"another pbsyslog is running with {self.map_file}") from None
        self.started_at = self.reactor.seconds()

    def _restore_state(self) -> None:
        loaded = self.journal.load(self.reactor.seconds(), grace=self.config.grace,
                                   max_session=self.config.max_session)
        restore = self.tracker.restore
        patterns = loaded.patterns
        sessions = loaded.sessions
        for ip, deadline in loaded.deadlines.items():
            if ip in sessions:
                floor, keyed = sessions[ip]
                restore(ip, deadline, patterns.get(ip, ""), floor, keyed)
            else:
                restore(ip, deadline, patterns.get(ip, ""))
        self.tracker.take_touched()
        if loaded.bad_lines:
            log.warn("{path}: skipped {n} unreadable lines", path=self.journal.path, n=loaded.bad_lines)
        if loaded.deadlines:
            log.info("restored {n} authorisations ({s} open sessions) from {path}", n=len(loaded.deadlines),
                     s=self.tracker.open_count, path=self.journal.path)
        self.journal.compact(self.tracker.entries(), self.tracker.all_sessions())

    def stopService(self) -> Any:
        super().stopService()
        if self._previous_hup is not None:
            signal.signal(signal.SIGHUP, self._previous_hup)
            self._previous_hup = None
        if self._expiry.running:
            self._expiry.stop()
        ports, self.ports = self.ports, []
        for port in ports:
            port.stopListening()
        # Nothing authorised is lost by a clean stop: the last batch goes out now.
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self.flush()
        self.journal.close()
        if self.outputs is not None:
            self.outputs.close()
            self.outputs = None
        if self._lock_file is not None:
            self._lock_file.close()  # releases the flock
            self._lock_file = None

    def reload(self) -> None:
        """Re-read the config (SIGHUP): patterns, trust settings and grace; keep state and sockets.

        A config that does not load is refused with an error and the running
        one stays.  Changes to where listeners bind need a restart.
        """
        if self._reload_config is None:
            return
        try:
            new = self._reload_config()
            table = load_table(new.patterns, extra=new.extra_patterns)
            origins = load_origins(new.extra_origins) if new.require_origin else None
        except Exception as e:
            log.error("reload refused, the running configuration stays: {error}", error=e)
            return
        bindings = [x.binding for x in self.config.listen]
        if bindings != [x.binding for x in new.listen]:
            log.warn("reload: listeners differ from the running ones; restart to rebind them "
                     "(their trust settings were not changed)")
        else:
            for trust, listener in zip(self._trust, new.listen, strict=True):
                trust.update(listener.allow, listener.hostnames)
        self.pipeline.table = table
        self.pipeline.never = logged_never_list(new)
        self.pipeline.origins = origins
        self.tracker.grace = new.grace
        self.config = attrs.evolve(
            self.config, patterns=new.patterns, extra_patterns=new.extra_patterns,
            authorise_loopback=new.authorise_loopback, authorise_link_local=new.authorise_link_local,
            mynetworks=new.mynetworks, never=new.never, grace=new.grace,
            require_origin=new.require_origin, extra_origins=new.extra_origins,
            listen=new.listen if bindings == [x.binding for x in new.listen] else self.config.listen,
        )
        log.info("reloaded configuration: {n} patterns, grace {grace:g} s; {ips} authorisations kept",
                 n=len(table.names), grace=new.grace, ips=len(self.tracker))

    # -- changes by hand (the control socket's Admin) ---------------------

    def grant(self, ip: str, deadline: float, pattern: str) -> None:
        """Authorise ``ip`` until ``deadline`` now (an administrator's ``add``), committed at once."""
        now = self.reactor.seconds()
        change = self.tracker.restore(ip, deadline, pattern)
        if change is not None:
            self._pending_state.add(ip)
            if change is Change.ADDED:
                self._pending_adds.setdefault(ip, now)
            self.flush()

    def revoke(self, ips: list[str], why: str) -> list[str]:
        """Take the authorisation of ``ips`` away now; return those that had one."""
        gone = [ip for ip in ips if self.tracker.remove(ip)]
        if gone:
            self._pending_adds = {ip: t for ip, t in self._pending_adds.items() if ip in self.tracker}
            try:
                self.journal.append(removed=gone)
            except Exception:
                self._state_dirty = True
                log.failure("state journal write failed; will rewrite {path} from memory", path=self.journal.path)
            self._commit(remove=gone)
            for ip in gone:
                log.info("removed {ip} from map ({why})", ip=ip, why=why)
        return gone

    def authorised(self, ip: str) -> bool:
        """Say whether ``ip`` (normalised) may relay now: the policy service's answer."""
        deadline = self.tracker.deadline(ip)
        return deadline is not None and deadline > self.reactor.seconds()

    def lookup(self, key: str) -> str | None:
        """The socketmap answer for ``key``: the map value while it is authorised, else None."""
        return self.config.map_value if self.authorised(key) else None

    def refused(self, peer: str) -> None:
        """Count a frame or connection from an untrusted peer; warn at most once a minute per peer."""
        self.untrusted += 1
        now = self.reactor.seconds()
        last = self._warned.get(peer)
        if last is not None and now - last < 60:
            return
        remember(self._warned, peer, now, 1024)  # bounded: a spoofing flood cannot grow it
        log.warn("refused syslog from untrusted sender {peer} (not in the listener's allow list); "
                 "{n} refused so far", peer=peer, n=self.untrusted)

    def receive(self, frame: bytes, hostnames: frozenset[str] | None = None) -> None:
        """Handle one frame (RELP hands them over one by one, to ack each)."""
        self.receive_batch([frame], hostnames)

    def receive_batch(self, frames: list[bytes], hostnames: frozenset[str] | None = None) -> None:
        """Handle the frames of one read (a UDP batch, a TCP chunk), in order, all received now.

        Schedules a commit when one moved a deadline.
        """
        now = self.reactor.seconds()
        feed = self.pipeline.feed
        for frame in frames:
            outcome = feed(frame, now, hostnames)
            if outcome is None:
                continue
            if isinstance(outcome, Moved):
                self._changed(outcome.ip, outcome.change, now)
            else:
                self._refused_login(outcome)

    def _refused_login(self, refused: Refused) -> None:
        """A login authorised nothing: the tracker is full (warn), or a never-rule holds (debug)."""
        if refused.reason == "full":
            self._warn_full()
        else:
            log.debug("ignored login from {ip} ({reason})", ip=refused.ip, reason=refused.reason)

    def _changed(self, ip: str, change: Change, now: float) -> None:
        """A deadline moved: journal it with the next commit, and schedule that commit."""
        self._pending_state.add(ip)
        if change is Change.ADDED:
            self._pending_adds.setdefault(ip, now)
        if self._flush_call is None or not self._flush_call.active():
            # Coalesce: an isolated login is committed on the next reactor
            # turn; during a burst, at most one commit per commit_interval
            # (each map commit makes every idle smtpd restart).
            delay = max(0.0, self.last_commit + self.config.commit_interval - now)
            self._flush_call = self.reactor.callLater(delay, self.flush)

    def _warn_full(self) -> None:
        now = self.reactor.seconds()
        if now - self._full_warned >= 60:
            self._full_warned = now
            log.error(
                "tracker is full ({n} authorised IPs, max_tracked): new logins are NOT authorised "
                "until some expire; {refused} refused so far",
                n=len(self.tracker), refused=self.pipeline.counters.full,
            )

    def flush(self) -> None:
        """Commit what changed since the last flush: journal first, then the map."""
        state, self._pending_state = self._pending_state, set()
        adds, self._pending_adds = self._pending_adds, {}
        tracker = self.tracker
        entries = {}
        for ip in state:
            deadline = tracker.deadline(ip)
            if deadline is not None:
                entries[ip] = (deadline, tracker.pattern(ip) or "")
        self._journal(entries)
        if self.outputs is not None:
            self.outputs.refresh(entries)  # a pgsql table keeps deadlines: extended or shortened ones too
        adds = {ip: arrived for ip, arrived in adds.items() if ip in tracker}
        if not adds or self.outputs is None:
            return
        if not self._commit(add=adds):
            return
        self.last_commit = now = self.reactor.seconds()
        delay = self.metrics.commit_delay.labels(self.output_name)
        for ip in sorted(adds):
            delay.observe(max(0.0, now - adds[ip]))
            log.info("added {ip} to map ({pattern})", ip=ip, pattern=tracker.pattern(ip))

    def _journal(self, entries: dict[str, tuple[float, str]]) -> None:
        """Append ``entries`` and every IP whose sessions changed to the journal, with their sessions."""
        tracker = self.tracker
        touched = tracker.take_touched()
        if touched:
            entries = dict(entries)
            for ip in touched:
                deadline = tracker.deadline(ip)
                if deadline is not None and ip not in entries:
                    entries[ip] = (deadline, tracker.pattern(ip) or "")
        sessions = {}
        if tracker.open_count:
            for ip in entries:
                open_ = tracker.sessions(ip)
                if open_ is not None:
                    sessions[ip] = open_
        try:
            self.journal.append(entries, sessions=sessions)
        except Exception:
            self._state_dirty = True
            self._failed("journal", "state journal write failed; will rewrite {path} from memory",
                         path=self.journal.path)

    def _failed(self, kind: str, message: str, **fields: Any) -> None:
        """Log a failure with its traceback, once per kind until that kind works again."""
        if self._failing.failed(kind):
            log.failure(message + " (logged once until it works again)", **fields)

    def _works(self, kind: str, message: str, **fields: Any) -> None:
        """Log the recovery of a kind of operation that had failed."""
        if self._failing.works(kind):
            log.info(message, **fields)

    def _commit(self, add: Any = (), remove: Any = ()) -> bool:
        """One map commit, timed and counted; on failure, log and mark the map for healing."""
        started = time.perf_counter()
        try:
            assert self.outputs is not None, "a commit before start-up"
            self.outputs.apply(add=add, remove=remove)
        except Exception:
            self._dirty = True
            self.map_errors += 1
            self._unlogged.update(add)
            self._failed("map", "map write failed; will rebuild {path} from memory", path=self.map_file)
            return False
        self.map_commits += 1
        self.metrics.write_seconds.labels(self.output_name).observe(time.perf_counter() - started)
        return True

    def tick(self) -> None:
        """Expire what is due, heal the map after a failed write, compact the journal; never raises."""
        try:
            removed = self.tracker.expire(self.reactor.seconds())
            if self.outputs is None and not self._dirty:
                return
            if self._dirty:
                # Reopen from the file: after a failed write the old handle's
                # cache holds pages the file never got, and would report
                # them as present.
                if self.outputs is None:
                    self.outputs = self._open_outputs()
                else:
                    self.outputs.reopen(self.reactor.seconds())
                added, gone = self.outputs.replace_all(self.tracker.ips())
                self._dirty = False
                self._works("map", "map rebuilt from memory ({n} authorised): writes to {path} work again",
                            path=self.map_file, n=len(self.tracker))
                # Additions whose commit failed were never logged as added.
                for ip in sorted((self._unlogged | added) & self.tracker.ips()):
                    log.info("added {ip} to map ({pattern})", ip=ip, pattern=self.tracker.pattern(ip))
                self._unlogged.clear()
            elif removed:
                self._commit(remove=removed)
            for ip in removed:
                log.info("removed {ip} from map (expired)", ip=ip)
            self._works("tick", "expiry tick works again")
        except Exception:
            self._dirty = True
            self._failed("tick", "expiry tick failed; will rebuild the map on the next tick")
        # Session changes that moved no deadline (a logout closing one of two
        # sessions) scheduled no commit: journal them now.
        self._journal({})
        try:
            if self._state_dirty or self.journal.needs_compaction(len(self.tracker)):
                self.journal.compact(self.tracker.entries(), self.tracker.all_sessions())
                if self._state_dirty:
                    self._works("journal", "state journal works again: rewrote {path}", path=self.journal.path)
                self._state_dirty = False
            self._works("compact", "compacting the state journal works again")
        except Exception:
            self._state_dirty = True
            self._failed("compact", "compacting {path} failed; will retry", path=self.journal.path)


def logged_never_list(config: Config) -> NeverList:
    """``policy.never_list(config)``, with what it found about mynetworks in the service's log."""
    never, warnings, from_postfix = never_list(config)
    for warning in warnings:
        log.warn("mynetworks: {warning}", warning=warning)
    if from_postfix is not None:
        log.info("mynetworks from postconf: {nets}", nets=" ".join(str(n) for n in from_postfix) or "(none)")
    return never
