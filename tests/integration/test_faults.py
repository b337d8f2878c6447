"""Map faults on the real service: missing or read-only directory, a full disk at runtime, a corrupt map, SIGTERM mid-burst.

Read-only and full file systems are made for real, never simulated with
chmod (root ignores modes): a read-only bind mount or a 64 KiB tmpfs, each
in a private mount namespace (``unshare --mount``) so that nothing outside
the test sees it.  The tmpfs namespace is held open by a ``sleep`` process,
so the service can be killed and restarted inside it, and postmap reads the
map from inside it too (``nsenter --mount=/proc/PID/ns/mnt``).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import (
    LOOPBACK_V4,
    POSTMAP,
    UNSHARE,
    Daemon,
    PbsyslogFactory,
    PbsyslogService,
    dovecot_login,
    free_port,
    postfix_config_dir,
    postmap_q,
    render_toml,
    twistd_path,
    wait_for,
)

NSENTER = "/usr/bin/nsenter"



def octet_counted(line: bytes) -> bytes:
    """``line`` framed as RFC 6587 octet counting."""
    return b"%d %s" % (len(line), line)


def ips_under(prefix: str, count: int) -> list[str]:
    """``count`` distinct addresses under the two-octet ``prefix``."""
    return [f"{prefix}.{k // 250}.{k % 250 + 1}" for k in range(count)]


def send_logins(port: int, ips: list[str]) -> None:
    """Send one octet-counted login per IP over one TCP connection."""
    with socket.create_connection((LOOPBACK_V4, port), timeout=5) as sock:
        sock.sendall(b"".join(octet_counted(dovecot_login(ip).encode()) for ip in ips))


def map_keys(dbfile: Path | str, prefix: tuple[str, ...] = ()) -> set[str]:
    """Every key of ``hash:dbfile`` as real postmap lists it (run through ``prefix``); fails if postmap complains."""
    listing = subprocess.run(
        [*prefix, POSTMAP, "-c", postfix_config_dir(), "-s", f"hash:{dbfile}"],
        capture_output=True, text=True, timeout=30,
    )
    assert (listing.returncode, listing.stderr) == (0, ""), f"postmap -s hash:{dbfile}: {listing}"
    return {line.split("\t", 1)[0] for line in listing.stdout.splitlines()}


def write_config(directory: Path, dbfile: Path, **overrides: object) -> tuple[Path, int]:
    """Write a one-TCP-listener pbsyslog.toml into ``directory``; return (its path, the port)."""
    port = free_port(socket.SOCK_STREAM)
    config: dict[str, object] = {
        "grace": 1800, "expire_interval": 0.5, "dbfile": str(dbfile), "patterns": ["dovecot"],
        "authorise_loopback": True,
        "listen": [{"protocol": "tcp", "host": LOOPBACK_V4, "port": port}],
    }
    config.update(overrides)
    path = directory / "pbsyslog.toml"
    path.write_text(render_toml(config))
    return path, port


def twistd_argv(config: Path) -> list[str]:
    """The command line that runs pbsyslog in the foreground with ``config``."""
    return [str(twistd_path()), "--nodaemon", "--pidfile=", "pbsyslog", "--config", str(config)]


# --------------------------------------------------------------------------
# Start-up: the map's directory

def test_missing_directory_exits_nonzero_before_binding(tmp_path: Path) -> None:
    """With the dbfile's directory missing, twistd exits non-zero naming it, and never listens."""
    missing = tmp_path / "no-such-dir"
    config, port = write_config(tmp_path, missing / "pop-before-smtp")
    result = subprocess.run(twistd_argv(config), cwd=tmp_path, capture_output=True, text=True, timeout=30)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert f"directory {missing} does not exist" in output, output
    assert "listening on" not in output and "pbsyslog ready" not in output, output
    assert not (missing / "pop-before-smtp.db").exists()


def test_read_only_directory_exits_nonzero_before_binding(tmp_path: Path) -> None:
    """With the dbfile's directory on a read-only bind mount, twistd exits non-zero saying so, and never listens."""
    directory = tmp_path / "ro"
    directory.mkdir()
    config, port = write_config(tmp_path, directory / "pop-before-smtp")
    script = (
        'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" && '
        'if touch "$1/probe" 2>/dev/null; then echo "STILL WRITABLE"; exit 99; fi; shift; exec "$@"'
    )
    result = subprocess.run(
        [UNSHARE, "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(directory),
         *twistd_argv(config)],
        cwd=tmp_path, capture_output=True, text=True, timeout=30,
    )
    output = result.stdout + result.stderr
    assert "STILL WRITABLE" not in output, "the read-only bind mount did not take"
    assert result.returncode != 0, output
    assert f"directory {directory} is not writable" in output, output
    assert "listening on" not in output and "pbsyslog ready" not in output, output
    assert list(directory.iterdir()) == []


# --------------------------------------------------------------------------
# Runtime: a full file system

class TinyTmpfs(Daemon):
    """A private mount namespace, held open by ``sleep``, with a 64 KiB tmpfs mounted on ``mountpoint``."""

    name = "namespace holder"

    def __init__(self, mountpoint: Path) -> None:
        self.mountpoint = mountpoint
        mountpoint.mkdir()
        script = 'mount -t tmpfs -o size=64k tmpfs "$1" && echo mounted && exec sleep 600'
        self.spawn([UNSHARE, "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(mountpoint)],
                   mountpoint.parent)
        self.wait_until(lambda: "mounted" in self.output(), f"a tmpfs on {mountpoint}")

    @property
    def enter(self) -> tuple[str, ...]:
        """The command prefix that runs a program inside the namespace."""
        return (NSENTER, f"--mount=/proc/{self.proc.pid}/ns/mnt")

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the namespace."""
        return subprocess.run([*self.enter, *argv], capture_output=True, text=True, timeout=30)

    def fill(self) -> None:
        """Fill the tmpfs to the last byte with a filler file."""
        result = self.run("dd", "if=/dev/zero", f"of={self.mountpoint}/filler", "bs=1k")
        assert "No space left on device" in result.stderr, result
        df = self.run("df", "--output=avail", "-B1", str(self.mountpoint))
        assert df.stdout.split()[-1] == "0", df

    def free(self) -> None:
        """Remove the filler file."""
        result = self.run("rm", f"{self.mountpoint}/filler")
        assert result.returncode == 0, result


class NamespacedService(Daemon):
    """twistd pbsyslog run inside a TinyTmpfs namespace (nsenter execs twistd: same PID)."""

    name = "pbsyslog (in a mount namespace)"

    def __init__(self, namespace: TinyTmpfs, config: Path) -> None:
        self.spawn([*namespace.enter, *twistd_argv(config)], config.parent)
        self.wait_until(lambda: "pbsyslog ready" in self.output(), "'pbsyslog ready'")

    def wait_for_output(self, text: str, timeout: float) -> bool:
        """Wait until ``text`` appears in the service's output."""
        return bool(wait_for(lambda: text in self.output(), timeout))


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[TinyTmpfs]:
    """A 64 KiB tmpfs in its own mount namespace, gone when the test ends."""
    holder = TinyTmpfs(tmp_path / "tiny")
    yield holder
    holder.stop()


def test_full_disk_at_runtime_is_survived_and_healed(tmp_path: Path, tmpfs: TinyTmpfs) -> None:
    """On a full tmpfs the service keeps running and logs the failure; once space is freed, every IP authorised meanwhile reaches the map and survives a SIGKILL."""
    dbfile = tmpfs.mountpoint / "pop-before-smtp"
    config, port = write_config(tmp_path, dbfile)
    service = NamespacedService(tmpfs, config)
    try:
        early, during = ["10.7.0.1"], ips_under("10.8", 300)
        send_logins(port, early)
        assert wait_for(lambda: set(early) <= map_keys(dbfile, tmpfs.enter), 5), service.describe()

        tmpfs.fill()
        send_logins(port, during)
        assert wait_for(lambda: "map write failed" in service.output() or "journal write failed" in service.output(),
                        5), f"no write failure was logged on a full file system\n{service.describe()}"
        assert service.proc.poll() is None, service.describe()
        # Still serving: a new connection is accepted and read.
        send_logins(port, ["10.7.0.2"])

        tmpfs.free()
        everyone = set(early) | set(during) | {"10.7.0.2"}
        assert wait_for(lambda: everyone <= map_keys(dbfile, tmpfs.enter), 5), (
            f"missing after space was freed: {sorted(everyone - map_keys(dbfile, tmpfs.enter))[:5]}\n"
            f"{service.describe()}"
        )
        assert service.wait_for_output("map rebuilt from memory", 5), service.describe()
        # The journal was healed too: a crash now loses nothing.
        assert wait_for(lambda: len(tmpfs.run("cat", f"{dbfile}.state").stdout.splitlines()) >= len(everyone), 5)
        service.proc.send_signal(signal.SIGKILL)
        service.proc.wait(10)
        service = NamespacedService(tmpfs, config)
        assert everyone <= map_keys(dbfile, tmpfs.enter), service.describe()
        assert f"restored {len(everyone)} authorisations" in service.output(), service.describe()
    finally:
        service.stop()


# --------------------------------------------------------------------------
# Start-up: a corrupt map

def whole_garbage(data: bytes) -> bytes:
    """Random bytes of the same length."""
    return os.urandom(len(data))


def zeros(data: bytes) -> bytes:
    """Zeros of the same length."""
    return bytes(len(data))


def truncated(data: bytes) -> bytes:
    """The first half, cut mid-page (a torn copy)."""
    return data[: len(data) // 2 + 100]


def text_file(data: bytes) -> bytes:
    """Something that is not a database at all."""
    return b"10.0.0.1 OK\n"


def bucket_page_garbage(data: bytes) -> bytes:
    """A valid meta page followed by a random first bucket page (opens fine, fails on reading)."""
    return data[:4096] + os.urandom(4096) + data[8192:]


CORRUPTIONS = [whole_garbage, zeros, truncated, text_file, bucket_page_garbage]


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=[c.__name__ for c in CORRUPTIONS])
def test_corrupt_map_is_moved_aside_and_rebuilt(pbsyslog_service: PbsyslogFactory, corrupt: object) -> None:
    """A map corrupted while the service was down is moved aside at start-up and rebuilt from the journal; postmap reads it."""
    first = pbsyslog_service()
    ips = ips_under("10.5", 300)
    send_logins(first.tcp_port, ips)
    assert wait_for(lambda: set(ips) <= map_keys(first.dbfile), 5), first.describe()
    first.stop()
    assert "Server Shut Down." in first.output(), first.describe()
    data = first.db_path.read_bytes()
    first.db_path.write_bytes(corrupt(data))  # type: ignore[operator]

    second = pbsyslog_service({"dbfile": str(first.dbfile)})
    keys = map_keys(first.dbfile)
    assert set(ips) <= keys, f"{len(set(ips) - keys)} IPs missing after rebuild\n{second.describe()}"
    assert postmap_q(ips[0], first.dbfile) == (0, "OK\n")
    aside = sorted(first.db_path.parent.glob(first.db_path.name + ".corrupt-*"))
    # Whatever Berkeley DB could not open was kept for the admin, and said so.
    assert bool(aside) == ("moved it to" in second.output()), second.describe()


# --------------------------------------------------------------------------
# SIGTERM in the middle of a burst

class PacedSender(threading.Thread):
    """Sends logins over one TCP connection at a held rate (so a signal lands mid-burst) until done or cut off."""

    def __init__(self, port: int, ips: list[str], chunk: int = 15, pace: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.port, self.ips, self.chunk, self.pace = port, ips, chunk, pace
        self.sent = 0

    def run(self) -> None:
        try:
            with socket.create_connection((LOOPBACK_V4, self.port), timeout=5) as sock:
                for start in range(0, len(self.ips), self.chunk):
                    part = self.ips[start:start + self.chunk]
                    sock.sendall(b"".join(octet_counted(dovecot_login(ip).encode()) for ip in part))
                    self.sent += len(part)
                    time.sleep(self.pace)
        except OSError:
            pass  # the service went away under us: expected


def sigterm_mid_burst(service: PbsyslogService) -> tuple[int, int, list[str]]:
    """SIGTERM ``service`` once 300 of a paced 2,000-login burst are in its map; return (exit status, logins sent, IPs)."""
    ips = ips_under("10.6", 2000)
    sender = PacedSender(service.tcp_port, ips)
    sender.start()
    assert wait_for(lambda: len(map_keys(service.dbfile)) >= 300, 10), service.describe()
    service.proc.send_signal(signal.SIGTERM)
    status = service.proc.wait(10)
    sent = sender.sent
    sender.join(10)
    service.stop()  # collects the last output
    assert sent < len(ips), "the burst was over before SIGTERM: not mid-burst"
    return status, sent, ips


def test_sigterm_mid_burst_writes_last_batch(pbsyslog_service: PbsyslogFactory) -> None:
    """After SIGTERM during a burst the map holds exactly the IPs the service logged as added, and the journal has them all."""
    service = pbsyslog_service()
    _, sent, ips = sigterm_mid_burst(service)
    assert "Server Shut Down." in service.output(), service.describe()
    logged = set(re.findall(r"added (\S+) to map", service.output()))
    keys = map_keys(service.dbfile)
    assert logged == keys, (
        f"logged as added but not in the map: {sorted(logged - keys)[:5]}; "
        f"in the map but never logged: {sorted(keys - logged)[:5]}"
    )
    assert keys <= set(ips[:sent])
    assert postmap_q(sorted(keys)[0], service.dbfile) == (0, "OK\n")
    state = Path(str(service.dbfile) + ".state").read_text().splitlines()
    assert {line.split()[1] for line in state if line.startswith("+ ")} >= keys



def test_sigterm_exits_zero(pbsyslog_service: PbsyslogFactory) -> None:
    """SIGTERM during a burst makes twistd exit with status 0 (a stop asked for is a clean stop)."""
    service = pbsyslog_service()
    status, _, _ = sigterm_mid_burst(service)
    assert status == 0, f"exit status {status} after SIGTERM\n{service.output()[-300:]}"


def test_full_disk_failure_logged_once_per_kind(tmp_path: Path, tmpfs: TinyTmpfs) -> None:
    """While the disk stays full the service logs each kind of write failure once, not on every retry."""
    dbfile = tmpfs.mountpoint / "pop-before-smtp"
    config, port = write_config(tmp_path, dbfile)
    service = NamespacedService(tmpfs, config)
    try:
        tmpfs.fill()
        send_logins(port, ips_under("10.9", 300))
        assert service.wait_for_output("map write failed", 5), service.describe()
        failed_at = time.monotonic()
        wait_for(lambda: time.monotonic() > failed_at + 5, 6)
        failures = [x for x in service.output().splitlines() if "#critical]" in x or "#error]" in x]
        kinds = {re.sub(r"^\S+ \[[^]]+\] ", "", x) for x in failures}
        assert len(failures) == len(kinds), f"{len(failures)} failure lines for {len(kinds)} kinds: {sorted(kinds)}"
    finally:
        service.stop()


def test_journal_short_write_on_full_disk_loses_nothing_after_crash(tmp_path: Path, tmpfs: TinyTmpfs) -> None:
    """A journal append cut short by a full disk is rewritten once space returns, so a later SIGKILL loses no authorisation."""
    dbfile = tmpfs.mountpoint / "pop-before-smtp"
    config, port = write_config(tmp_path, dbfile)
    service = NamespacedService(tmpfs, config)
    try:
        send_logins(port, ["10.7.0.1"])  # the journal now has a partly used page
        assert wait_for(lambda: {"10.7.0.1"} <= map_keys(dbfile, tmpfs.enter), 5), service.describe()
        tmpfs.fill()
        during = ips_under("10.8", 300)
        send_logins(port, during)
        assert service.wait_for_output("map write failed", 5), service.describe()
        tmpfs.free()
        everyone = {"10.7.0.1", *during}
        assert wait_for(lambda: everyone <= map_keys(dbfile, tmpfs.enter), 5), service.describe()
        assert service.wait_for_output("state journal works again", 5), service.describe()
        service.proc.send_signal(signal.SIGKILL)
        service.proc.wait(10)
        service = NamespacedService(tmpfs, config)
        lost = everyone - map_keys(dbfile, tmpfs.enter)
        assert not lost, f"{len(lost)} of {len(everyone)} authorisations lost after SIGKILL, e.g. {sorted(lost)[:3]}"
    finally:
        service.stop()
