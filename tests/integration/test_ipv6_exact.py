"""One IPv6 login authorises exactly one address, with every output, as a real smtpd decides (XCLIENT on loopback).

Postfix's access maps look up parent networks too: for IPv6 the client
address cut at its last ``:``.  A key ``2001:db8:1:2::5`` would therefore
also let ``2001:db8:1:2::5:1`` relay.  pbsyslog keeps such keys out of the
maps Postfix reads that way (``ipv6_file_maps = "exact-only"``, the
default) and answers for them through the exact outputs (policy service,
socketmap).  Each stack: pbsyslog with the outputs, a private Postfix
whose relay restrictions are the shipped snippet's (paths and ports
changed), and SMTP sessions that take the client address from XCLIENT.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from test_outages import database, snippet_restrictions  # noqa: F401 (database is a fixture)
from test_pgsql_live import PostgreSQL, pgsql_cf

from harness import (
    LOOPBACK_V4,
    PbsyslogFactory,
    PostfixFactory,
    dovecot_login,
    free_port,
    postfix_config_dir,
    smtp_rcpt_as,
    wait_for,
)

LOGGED_IN = "2001:db8:1:2::5"  # compressed with '::': the prefix of other addresses' texts
NEIGHBOURS = ["2001:db8:1:2::5:1", "2001:db8:1:2::5:beef"]
EIGHT_GROUPS = "2001:db8:1:2:3:4:5:6"  # no other address's text starts with it
RELAYED, DENIED = 250, 554


def codes(port: int, clients: list[str]) -> list[int]:
    """RCPT to a foreign domain as each client (XCLIENT)."""
    return [smtp_rcpt_as(port, client)[0] for client in clients]


@pytest.mark.parametrize("output", ["policy", "socketmap", "hash", "hash allow-parent-match", "pgsql"])
def test_neighbours_of_an_ipv6_login_are_refused(
    pbsyslog_service: PbsyslogFactory, postfix: PostfixFactory, output: str, request: pytest.FixtureRequest
) -> None:
    """After logins from 2001:db8:1:2::5 and an eight-group address, 2001:db8:1:2::5:X never relays; each output's answer for the logins themselves is as documented."""
    settings: dict[str, object] = {"grace": 600, "authorise_loopback": False}
    if output == "policy":
        port = free_port(socket.SOCK_STREAM)
        settings["policy"] = [{"host": LOOPBACK_V4, "port": port}]
        restrictions = snippet_restrictions("main.cf.policy.snippet", {"inet:127.0.0.1:9515": f"inet:{LOOPBACK_V4}:{port}"})
    elif output == "socketmap":
        port = free_port(socket.SOCK_STREAM)
        settings["socketmap"] = [{"host": LOOPBACK_V4, "port": port, "names": ["pop-before-smtp"]}]
        restrictions = snippet_restrictions(
            "main.cf.socketmap.snippet", {"inet:127.0.0.1:9514": f"inet:{LOOPBACK_V4}:{port}"})
    elif output == "pgsql":
        server: PostgreSQL = request.getfixturevalue("database")
        cf = pgsql_cf(server, Path(postfix_config_dir()))
        settings["output"] = [{"kind": "pgsql", "dsn": server.dsn}]
        restrictions = snippet_restrictions("main.cf.snippet", {"hash:/var/lib/pbsyslog/pop-before-smtp": f"pgsql:{cf}"})
    else:
        if output == "hash allow-parent-match":
            settings["ipv6_file_maps"] = "allow-parent-match"
        restrictions = None
    service = pbsyslog_service(settings)
    if restrictions is None:
        restrictions = snippet_restrictions(
            "main.cf.snippet", {"/var/lib/pbsyslog/pop-before-smtp": str(service.dbfile)})
    mta = postfix(None, relay_restrictions=restrictions)
    assert codes(mta.port, [LOGGED_IN, *NEIGHBOURS, EIGHT_GROUPS]) == [DENIED] * 4, mta.describe()

    service.send_udp(dovecot_login(LOGGED_IN))
    service.send_udp(dovecot_login(EIGHT_GROUPS))
    assert wait_for(lambda: smtp_rcpt_as(mta.port, EIGHT_GROUPS)[0] == RELAYED, 5), \
        f"{output}: the eight-group login never relayed\n{service.describe()}\n{mta.describe()}"
    exact = output in ("policy", "socketmap")
    if output == "hash allow-parent-match":
        # The documented risk of the opt-in: the key stands for its neighbours too.
        assert codes(mta.port, [LOGGED_IN, *NEIGHBOURS]) == [RELAYED] * 3, mta.describe()
        return
    assert codes(mta.port, NEIGHBOURS) == [DENIED] * 2, f"{output}: a neighbour relayed\n{mta.describe()}"
    assert smtp_rcpt_as(mta.port, LOGGED_IN)[0] == (RELAYED if exact else DENIED), (output, mta.describe())
