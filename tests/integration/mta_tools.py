"""Debian's real Sendmail and Exim programs, run from unpacked .debs, never installed.

sendmail-bin and exim4-daemon-light conflict with postfix (all three provide
mail-transport-agent), and the rest of the suite needs Postfix installed.  So
``mta_tree()`` fetches the .debs with ``apt-get download`` into a cache
directory, unpacks them with ``dpkg-deb -x`` and runs the binaries from there.
Nothing here listens on a socket or delivers mail: Sendmail runs in address
test mode (``-bt``) and ``makemap -u``, Exim in expansion test mode (``-be``)
and host checking mode (``-bh``, a simulated SMTP session on stdin/stdout).

Exim resolves its compiled-in user ``Debian-exim`` at start-up and refuses to
run if it is missing or uid 0; this machine has no such user (the package's
postinst would have made it).  Rather than touch /etc/passwd, each Exim run
happens in a private mount namespace (``unshare --mount``, private
propagation) where copies of /etc/passwd and /etc/group with that user are
bind-mounted over the originals.

Failures are loud: a download or unpack that fails fails the test, naming the
command and its output.
"""

from __future__ import annotations

import fcntl
import grp
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import attrs
import pytest

# Cached across runs (the .debs are ~3 MB); PBSYSLOG_MTA_DEBS moves it.
CACHE_DIR = Path(os.environ.get("PBSYSLOG_MTA_DEBS", "/tmp/pbsyslog-mta-debs"))
PACKAGES = ("sendmail-bin", "exim4-daemon-light", "exim4-base", "exim4-config")
EXIM_USER = "Debian-exim"


def run_checked(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run ``argv``; fail the test with its output unless it exits 0."""
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}",
            pytrace=False,
        )
    return result


def _download(debs: Path) -> None:
    """apt-get download the packages into ``debs``; refresh apt's lists once if they are empty or stale."""
    argv = ["apt-get", "download", *PACKAGES]
    result = subprocess.run(argv, cwd=debs, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        run_checked(["apt-get", "update", "-q"])
        run_checked(argv, cwd=debs)


@attrs.frozen
class MtaTree:
    """The unpacked packages: where each program is and which version it is."""

    root: Path
    versions: dict[str, str]

    @property
    def makemap(self) -> Path:
        return self.root / "usr/libexec/sendmail/makemap"

    @property
    def sendmail(self) -> Path:
        return self.root / "usr/libexec/sendmail/sendmail"

    @property
    def exim(self) -> Path:
        return self.root / "usr/sbin/exim4"


def mta_tree() -> MtaTree:
    """Download (once) and unpack (once) Debian's sendmail-bin and exim4 packages; return the tree."""
    if os.geteuid() != 0:
        pytest.fail("the Sendmail/Exim map tests run the unpacked MTAs as root", pytrace=False)
    CACHE_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    debs, root = CACHE_DIR / "debs", CACHE_DIR / "root"
    with open(CACHE_DIR / ".lock", "w") as lock:
        # Parallel test runs share the cache: one of them downloads and unpacks.
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = CACHE_DIR / ".unpacked"
        if not done.exists():
            shutil.rmtree(debs, ignore_errors=True)
            shutil.rmtree(root, ignore_errors=True)
            debs.mkdir()
            _download(debs)
            for deb in sorted(debs.glob("*.deb")):
                run_checked(["dpkg-deb", "-x", str(deb), str(root)])
            done.touch()
        versions = {}
        for package in PACKAGES:
            found = sorted(debs.glob(f"{package}_*.deb"))
            if len(found) != 1:
                pytest.fail(f"expected one {package} .deb in {debs}, found {found}", pytrace=False)
            versions[package] = run_checked(["dpkg-deb", "-f", str(found[0]), "Version"]).stdout.strip()
    tree = MtaTree(root, versions)
    for program in (tree.makemap, tree.sendmail, tree.exim):
        if not os.access(program, os.X_OK):
            pytest.fail(f"{program} is missing from the unpacked packages", pytrace=False)
        # The packages' library dependencies are not installed with them:
        # name any that is missing (add its package to DEB_TEST in the Makefile).
        missing = [
            line.split()[0]
            for line in run_checked(["ldd", str(program)]).stdout.splitlines()
            if "not found" in line
        ]
        if missing:
            pytest.fail(f"{program} needs {missing}: add their packages to DEB_TEST", pytrace=False)
    return tree


# -- Sendmail ---------------------------------------------------------------


# Two rule sets over pbsyslog's Sendmail maps (format with access= and popauth=
# paths): Connect_access answers the access map's value or NOTFOUND for
# ${client_addr}; Is_popauth_ok answers YES or NO for the bare address.
SENDMAIL_RULES = """\
Kaccess hash -T<TMPF> {access}
Kpopauth hash -a<OK> {popauth}
SConnect_access
R$*\t\t$: $(access Connect:$&{{client_addr}} $: <?> $)
R<?>\t\t$@ NOTFOUND
R$*\t\t$@ $1
SIs_popauth_ok
R$*\t\t$: $(popauth $&{{client_addr}} $: <?> $)
R<?>\t\t$@ NO
R$*\t\t$@ YES
"""


def sendmail_cf(directory: Path, body: str) -> Path:
    """Write a minimal sendmail.cf (queue in ``directory``, maps allowed under world-writable /tmp) plus ``body``."""
    (directory / "queue").mkdir(exist_ok=True)
    cf = directory / "sendmail.cf"
    cf.write_text(
        "V10/Berkeley\n"
        "Dj test.example\n"
        f"O QueueDirectory={directory / 'queue'}\n"
        # pytest's directories live under /tmp, which sendmail's safefile
        # checks reject for map files unless told otherwise.
        "O DontBlameSendmail=MapInUnsafeDirPath\n"
        # Without a local mailer sendmail complains and exits 70 (EX_SOFTWARE)
        # after any run; these are never used (nothing is delivered).
        "Mlocal, P=/bin/false, F=l, S=0, R=0, A=false\n"
        "Mprog, P=/bin/false, F=l, S=0, R=0, A=false\n" + body
    )
    return cf


def sendmail_argv(tree: MtaTree, cf: Path, *args: str) -> list[str]:
    """The command line that runs ``sendmail -C cf ARGS`` under a qualified host name.

    At start-up, before it reads its config, sendmail looks up the machine's
    own name; if that is unqualified and does not resolve it logs "My
    unqualified host name (...) unknown; sleeping for retry", sleeps 60 s
    and may exit 70.  Test machines are often named like that (this one is
    "vm"), so sendmail runs in a private UTS namespace named test.example.
    """
    script = 'hostname test.example || exit 97; exec "$@"'
    return ["unshare", "--uts", "--", "sh", "-c", script, "sh", str(tree.sendmail), "-C", str(cf), *args]


# Printed by sendmail for every map under /tmp (allowed by MapInUnsafeDirPath),
# possibly in the middle of another line.
UNSAFE_DIR_WARNING = "WARNING: World writable directory /tmp\n"


def sendmail_test_mode(tree: MtaTree, cf: Path, script: str) -> str:
    """Feed ``script`` to ``sendmail -C cf -bt`` (address test mode: no socket, no queue run); return stdout."""
    out = run_checked(sendmail_argv(tree, cf, "-bt"), input=script).stdout
    return out.replace(UNSAFE_DIR_WARNING, "")


def sendmail_compile_flags(tree: MtaTree, cf: Path) -> set[str]:
    """The 'Compiled with:' words of ``sendmail -d0.1``."""
    out = sendmail_test_mode_d0(tree, cf)
    words = out.split("Compiled with:", 1)[1].split("\n\n", 1)[0].split("=====", 1)[0]
    return set(words.split())


def sendmail_test_mode_d0(tree: MtaTree, cf: Path) -> str:
    """``sendmail -d0.1 -bt`` on empty input: the version banner and compile flags."""
    return run_checked(sendmail_argv(tree, cf, "-d0.1", "-bt"), input="").stdout


def makemap_dump(tree: MtaTree, cf: Path, map_path: Path, maptype: str = "hash") -> list[tuple[str, str]]:
    """``makemap -u TYPE MAP``: every (key, value) as makemap prints it, sorted."""
    out = run_checked([str(tree.makemap), "-C", str(cf), "-u", maptype, str(map_path)]).stdout
    return sorted(tuple(line.split("\t", 1)) for line in out.splitlines())  # type: ignore[misc]


# -- Exim -------------------------------------------------------------------


def _free_id(taken: set[int]) -> int:
    for candidate in range(64999, 60000, -1):
        if candidate not in taken:
            return candidate
    raise AssertionError("no free uid/gid between 60000 and 64999")


@attrs.frozen
class Exim:
    """Runs the unpacked exim4 with a private config, as Debian-exim resolvable in its own mount namespace."""

    tree: MtaTree
    directory: Path
    config: Path
    uid: int

    def run(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        """Run ``exim4 -C config ARGS`` in the namespace; fail the test unless it exits 0."""
        script = (
            'mount --bind "$1" /etc/passwd && mount --bind "$2" /etc/group || exit 97; '
            'shift 2; exec "$@"'
        )
        return run_checked(
            [
                "unshare", "--mount", "--propagation", "private", "--",
                "sh", "-c", script, "sh",
                str(self.directory / "passwd"), str(self.directory / "group"),
                str(self.tree.exim), "-C", str(self.config), *args,
            ],
            input=stdin,
        )

    def expand(self, expression: str) -> str:
        """``exim4 -be EXPRESSION``: the expansion as Exim prints it."""
        result = self.run("-be", expression)
        return result.stdout.rstrip("\n")

    def version(self) -> str:
        """The first line of ``exim4 -bV``."""
        return self.run("-bV").stdout.splitlines()[0]


def make_exim(tree: MtaTree, acl_body: str = "") -> Exim:
    """A world-traversable directory (Exim's -bh drops to its own uid) with a minimal config and the passwd overlay.

    ``acl_body`` becomes ``acl_smtp_connect``, with ``@MAP@`` standing for
    ``DIR/map``; the caller removes the directory
    (``shutil.rmtree(exim.directory)``).
    """
    directory = Path(tempfile.mkdtemp(prefix="pbsyslog-exim-"))
    directory.chmod(0o755)
    uid = _free_id({p.pw_uid for p in pwd.getpwall()} | {g.gr_gid for g in grp.getgrall()})
    Path(directory, "passwd").write_text(
        Path("/etc/passwd").read_text() + f"{EXIM_USER}:x:{uid}:{uid}:pbsyslog test:/nonexistent:/usr/sbin/nologin\n"
    )
    Path(directory, "group").write_text(Path("/etc/group").read_text() + f"{EXIM_USER}:x:{uid}:\n")
    spool = directory / "spool"
    spool.mkdir()
    os.chown(spool, uid, uid)
    config = directory / "exim.conf"
    text = (
        "primary_hostname = test.example\n"
        "keep_environment =\n"
        f"spool_directory = {spool}\n"
        f"log_file_path = {spool}/%slog\n"
    )
    if acl_body:
        acl = acl_body.replace("@MAP@", str(directory / "map"))
        text += "acl_smtp_connect = check_connect\nbegin acl\ncheck_connect:\n" + acl
    config.write_text(text)
    return Exim(tree, directory, config, uid)
