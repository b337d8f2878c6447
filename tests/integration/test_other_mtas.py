"""The other map flavours as the real programs read them: postmap btree:, Sendmail, Exim.

Sendmail and Exim are Debian's own binaries, unpacked from their .debs by
mta_tools (they conflict with the installed Postfix); nothing here listens
on a socket or delivers mail.  Each test writes through pbsyslog's writer,
checks the lookup hits, removes the address and checks it misses.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from bsddb3 import db

from harness import run_postmap
from mta_tools import (
    SENDMAIL_RULES,
    UNSAFE_DIR_WARNING,
    Exim,
    MtaTree,
    makemap_dump,
    run_checked,
    sendmail_argv,
    sendmail_cf,
    sendmail_compile_flags,
    sendmail_test_mode,
)
from pbsyslog.outputs.berkeley import open_output

V4, V6, OTHER = "192.0.2.7", "2001:db8::7", "192.0.2.8"
# ${client_addr} for 2001:db8::7 on a Sendmail built with IPV6_FULL (8.15+ default, Debian).
V6_SENDMAIL = "IPv6:2001:db8:0:0:0:0:0:7"




# -- Postfix btree: ---------------------------------------------------------


def postmap_btree(key: str, path: Path) -> tuple[int, str]:
    """``postmap -q KEY btree:PATH``; fails the test on anything written to stderr."""
    result = run_postmap("-q", key, f"btree:{path}")
    assert result.stderr == "", result
    return result.returncode, result.stdout


def test_postmap_reads_btree(tmp_path: Path) -> None:
    """Real postmap finds both addresses in the postfix-btree map, and neither after removal."""
    w = open_output("postfix-btree", str(tmp_path / "map"))
    w.apply(add=[V4, V6])
    assert [postmap_btree(k, tmp_path / "map") for k in (V4, V6, OTHER)] == [(0, "OK\n"), (0, "OK\n"), (1, "")]
    w.apply(remove=[V4, V6])
    assert [postmap_btree(k, tmp_path / "map") for k in (V4, V6)] == [(1, ""), (1, "")]
    w.close()


def test_postmap_btree_refuses_hash(tmp_path: Path) -> None:
    """The btree flavour really is a B-tree: postmap's btree: reader rejects a postfix-hash file."""
    w = open_output("postfix-hash", str(tmp_path / "map"))
    w.apply(add=[V4])
    w.close()
    result = run_postmap("-q", V4, f"btree:{tmp_path / 'map'}")
    assert result.returncode != 0 and "map" in result.stderr, result


# -- Sendmail ---------------------------------------------------------------



def sendmail_answers(tree: MtaTree, cf: Path, ruleset: str, client_addrs: list[str]) -> list[str]:
    """Set ${client_addr} to each address in turn and return what ``ruleset`` returns, via sendmail -bt."""
    script = "".join(f".D{{client_addr}}{a}\n{ruleset} x\n" for a in client_addrs)
    out = sendmail_test_mode(tree, cf, script)
    answers = [line.split("returns:", 1)[1].strip() for line in out.splitlines() if f"{ruleset} " in line and "returns:" in line]
    assert len(answers) == len(client_addrs), out
    return answers


def test_debian_sendmail_prints_ipv6_uncompressed(tree: MtaTree, tmp_path: Path) -> None:
    """Debian's sendmail is built with IPV6_FULL, so ${client_addr} is IPv6:2001:db8:0:0:0:0:0:7, not ::-compressed."""
    cf = sendmail_cf(tmp_path, "")
    flags = sendmail_compile_flags(tree, cf)
    assert "IPV6_FULL" in flags and "NEWDB=5.3" in flags, (tree.versions, flags)


def test_makemap_writes_the_same_bytes(tree: MtaTree, tmp_path: Path) -> None:
    """makemap (no -N) given the admin's usual lines stores byte for byte what sendmail-access stores."""
    cf = sendmail_cf(tmp_path, "")
    source = "Connect:192.0.2.7\tRELAY\nConnect:IPv6:2001:db8:0:0:0:0:0:7\tRELAY\nConnect:IPv6:2001:db8::7\tRELAY\n"
    run_checked([str(tree.makemap), "-C", str(cf), "hash", str(tmp_path / "made")], input=source)
    w = open_output("sendmail-access", str(tmp_path / "ours"))
    w.apply(add=[V4, V6])
    w.close()

    def dump(name: str) -> dict[bytes, bytes]:
        d = db.DB()
        d.open(str(tmp_path / name), dbtype=db.DB_HASH, flags=db.DB_RDONLY)
        try:
            return dict(d.items())
        finally:
            d.close()

    assert dump("ours.db") == dump("made.db")
    assert b"connect:192.0.2.7" in dump("made.db")  # makemap folds case and adds no NUL


def test_makemap_dumps_access_map(tree: MtaTree, tmp_path: Path) -> None:
    """makemap -u lists the Connect: entries pbsyslog wrote, and only the IPv4 one after the IPv6 login is removed."""
    cf = sendmail_cf(tmp_path, "")
    w = open_output("sendmail-access", str(tmp_path / "access"))
    w.apply(add=[V4, V6])
    assert makemap_dump(tree, cf, tmp_path / "access") == [
        ("connect:192.0.2.7", "RELAY"),
        ("connect:ipv6:2001:db8:0:0:0:0:0:7", "RELAY"),
        ("connect:ipv6:2001:db8::7", "RELAY"),
    ]
    w.apply(remove=[V6])
    assert makemap_dump(tree, cf, tmp_path / "access") == [("connect:192.0.2.7", "RELAY")]
    w.close()


def test_sendmail_access_lookup(tree: MtaTree, tmp_path: Path) -> None:
    """Sendmail's own Connect:${client_addr} lookup in the access map gives RELAY for logged-in clients only."""
    access = tmp_path / "access"
    cf = sendmail_cf(tmp_path, SENDMAIL_RULES.format(access=access, popauth=tmp_path / "popauth"))
    w = open_output("sendmail-access", str(access))
    w.apply(add=[V4, V6])
    clients = [V4, V6_SENDMAIL, "IPv6:2001:db8::7", OTHER]
    assert sendmail_answers(tree, cf, "Connect_access", clients) == ["RELAY", "RELAY", "RELAY", "NOTFOUND"]
    w.apply(remove=[V4, V6])
    assert sendmail_answers(tree, cf, "Connect_access", clients) == ["NOTFOUND"] * 4
    w.close()


def test_sendmail_popauth_lookup(tree: MtaTree, tmp_path: Path) -> None:
    """popauth.m4's rule (Kpopauth hash -a<OK>, key ${client_addr}) says YES for logged-in clients, NO after removal."""
    popauth = tmp_path / "popauth"
    cf = sendmail_cf(tmp_path, SENDMAIL_RULES.format(access=tmp_path / "access", popauth=popauth))
    w = open_output("sendmail-popauth", str(popauth))
    w.apply(add=[V4, V6])
    assert makemap_dump(tree, cf, popauth) == [
        ("192.0.2.7", "OK"), ("ipv6:2001:db8:0:0:0:0:0:7", "OK"), ("ipv6:2001:db8::7", "OK"),
    ]
    clients = [V4, V6_SENDMAIL, OTHER]
    assert sendmail_answers(tree, cf, "Is_popauth_ok", clients) == ["YES", "YES", "NO"]
    w.apply(remove=[V4, V6])
    assert sendmail_answers(tree, cf, "Is_popauth_ok", clients) == ["NO", "NO", "NO"]
    w.close()


def test_sendmail_sees_change_without_restart(tree: MtaTree, tmp_path: Path) -> None:
    """One sendmail -bt process sees an address added after its first lookup (it reopens a map whose mtime moved)."""
    access = tmp_path / "access"
    cf = sendmail_cf(tmp_path, SENDMAIL_RULES.format(access=access, popauth=tmp_path / "popauth"))
    w = open_output("sendmail-access", str(access))
    proc = subprocess.Popen(
        sendmail_argv(tree, cf, "-bt"),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(f"/map access Connect:{V4}\n")
        proc.stdin.flush()
        first = ""
        while "map_lookup" not in first:
            first = proc.stdout.readline()
            assert first, "sendmail -bt exited early"
        w.apply(add=[V4])
        out, _ = proc.communicate(f"/map access Connect:{V4}\n", timeout=30)
        out = out.replace(UNSAFE_DIR_WARNING, "")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    w.close()
    assert "no match" in first, first
    assert f"access (Connect:{V4}) returns RELAY" in out, out


# -- Exim -------------------------------------------------------------------


def exim_lookup(exim: Exim, lookup: str, key: str, path: Path) -> str:
    """``${lookup{KEY}LOOKUP{PATH}{<$value>}{NOTFOUND}}`` as exim4 -be expands it."""
    return exim.expand(f"${{lookup{{{key}}}{lookup}{{{path}}}{{<$value>}}{{NOTFOUND}}}}")


def test_exim_dbm_lookup(exim: Exim) -> None:
    """Exim's dbm lookup on the exact file name finds both addresses ($sender_host_address form), none after removal."""
    path = exim.directory / "map"
    w = open_output("exim-dbm", str(path))
    assert w.filename == str(path)
    w.apply(add=[V4, V6])
    assert [exim_lookup(exim, "dbm", k, path) for k in (V4, V6, OTHER)] == ["<OK>", "<OK>", "NOTFOUND"], exim.version()
    w.apply(remove=[V4, V6])
    assert [exim_lookup(exim, "dbm", k, path) for k in (V4, V6)] == ["NOTFOUND", "NOTFOUND"]
    w.close()


def test_exim_dbmnz_does_not_match(exim: Exim) -> None:
    """The file is for the dbm lookup type: dbmnz (key without its NUL) finds nothing in it."""
    path = exim.directory / "map"
    w = open_output("exim-dbm", str(path))
    w.apply(add=[V4])
    assert exim_lookup(exim, "dbm", V4, path) == "<OK>"
    assert exim_lookup(exim, "dbmnz", V4, path) == "NOTFOUND"
    w.close()


def test_exim_host_list_net_dbm(exim: Exim) -> None:
    """In an SMTP session simulated with exim4 -bh, hosts = net-dbm;MAP matches logged-in clients (IPv4, IPv6) only."""
    path = exim.directory / "map"
    w = open_output("exim-dbm", str(path))
    w.apply(add=[V4, V6])

    def hit(ip: str) -> bool:
        result = exim.run("-bh", ip, stdin="QUIT\r\n")
        assert "220 test.example" in result.stdout, result
        assert "failed to open" not in result.stdout + result.stderr, result
        return "PBSYSLOG net-dbm hit" in result.stdout + result.stderr

    assert [hit(ip) for ip in (V4, V6, OTHER, "2001:db8::8")] == [True, True, False, False]
    w.apply(remove=[V4, V6])
    assert [hit(ip) for ip in (V4, V6)] == [False, False]
    w.close()
