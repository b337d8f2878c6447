"""pbsyslog: a push-based POP-before-SMTP relay authoriser.

Syslog lines forwarded by rsyslog -> successful POP3/IMAP logins -> a
Berkeley DB map that Postfix reads with ``check_client_access``.
"""

__version__ = "0.1.0"
