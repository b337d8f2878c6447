"""The socketmap variant of the Postfix snippet: real postconf parses it, and it points at pbsyslog's socketmap."""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SNIPPET = ROOT / "conf" / "postfix" / "main.cf.socketmap.snippet"


def test_socketmap_snippet_parses_and_checks_in_relay_restrictions(tmp_path: Path) -> None:
    """postconf reads the snippet without warnings; the socketmap lookup sits after mynetworks and mail to own domains, before reject_unauth_destination."""
    (tmp_path / "main.cf").write_text(SNIPPET.read_text())
    (tmp_path / "master.cf").write_text("")
    result = subprocess.run(["/usr/sbin/postconf", "-c", str(tmp_path), "-h", "smtpd_relay_restrictions"],
                            capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stderr) == (0, ""), result
    items = [item.strip() for item in result.stdout.split(",")]
    check = "check_client_access socketmap:inet:127.0.0.1:9514:pop-before-smtp"
    assert items.index("permit_mynetworks") < items.index("permit_auth_destination") < items.index(check) \
        < items.index("reject_unauth_destination")
