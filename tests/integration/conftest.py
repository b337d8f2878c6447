"""Fixtures that start real daemons for the pbsyslog integration tests.

Each fixture is a module-scoped factory: a test module calls it to start as
many instances as it needs (each with its own directory and free ports), and
everything it started is stopped when the module ends. The daemons
themselves live in harness.py.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping, Sequence

import pytest

from harness import (
    Dovecot,
    DovecotFactory,
    PbsyslogFactory,
    PbsyslogService,
    Postfix,
    PostfixFactory,
    Rsyslog,
    RsyslogFactory,
    fail_on_tracebacks,
    stopped_at_end,
)
from mta_tools import Exim, MtaTree, make_exim, mta_tree


@pytest.fixture(scope="module")
def pbsyslog_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PbsyslogFactory]:
    """Factory: ``pbsyslog_service(overrides, extra_args)`` starts twistd pbsyslog and waits for 'pbsyslog ready'.

    At the end of the module every service is stopped, and the module fails
    if any of them logged a traceback: bad input must be dropped, not raised
    into the reactor.
    """

    def start(
        overrides: Mapping[str, object] | None = None, extra_args: Sequence[str] = ()
    ) -> PbsyslogService:
        return PbsyslogService(tmp_path_factory.mktemp("pbsyslog"), overrides, extra_args)

    yield from stopped_at_end(start, fail_on_tracebacks)


@pytest.fixture
def services() -> Iterator[list[PbsyslogService]]:
    """A list for the services a test starts itself (say, on one directory twice); checked as above at the end."""
    started: list[PbsyslogService] = []
    yield started
    for service in started:
        service.stop()
    fail_on_tracebacks(started)


@pytest.fixture(scope="module")
def tree() -> MtaTree:
    """Debian's sendmail-bin and exim4 packages, downloaded and unpacked once (cached)."""
    return mta_tree()


@pytest.fixture
def exim(tree: MtaTree) -> Iterator[Exim]:
    """An Exim config whose connect ACL logs a hit when the client is in ``net-dbm;DIR/map``."""
    box = make_exim(
        tree,
        acl_body=(
            "  warn    hosts = net-dbm;@MAP@\n"
            "          logwrite = PBSYSLOG net-dbm hit\n"
            "  accept\n"
        ),
    )
    yield box
    shutil.rmtree(box.directory)


@pytest.fixture(scope="module")
def rsyslog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RsyslogFactory]:
    """Factory: ``rsyslog(port, transport, template)`` starts a private rsyslogd forwarding mail.* to 127.0.0.1:port."""

    def start(
        port: int, transport: str = "udp", template: str = "RSYSLOG_TraditionalForwardFormat"
    ) -> Rsyslog:
        return Rsyslog(tmp_path_factory.mktemp("rsyslog"), port, transport, template)

    yield from stopped_at_end(start)


@pytest.fixture(scope="module")
def dovecot() -> Iterator[DovecotFactory]:
    """Factory: ``dovecot(rsyslog)`` starts a private Dovecot whose /dev/log is that rsyslog's socket."""
    yield from stopped_at_end(Dovecot)


@pytest.fixture(scope="module")
def postfix() -> Iterator[PostfixFactory]:
    """Factory: ``postfix(access_map)`` starts a private Postfix relaying for clients in ``hash:access_map``.

    Start pbsyslog first: the map must exist before any smtpd opens it. At
    the end of the module every instance is stopped, and the module fails if
    any of them ever queued a message or logged a fatal error or a panic.
    """
    yield from stopped_at_end(Postfix, fail_on_queued_mail)


def fail_on_queued_mail(started: Sequence[Postfix]) -> None:
    """Fail if any of the (stopped) Postfix instances queued a message or logged a fatal error or a panic."""
    broken = [daemon for daemon in started if daemon.queued_files() or daemon.problems()]
    if broken:
        pytest.fail(
            "Postfix queued a message or logged a fatal error:\n"
            + "\n".join(
                f"queued: {d.queued_files()}\nproblems: {d.problems()}\n{d.describe()}" for d in broken
            ),
            pytrace=False,
        )
