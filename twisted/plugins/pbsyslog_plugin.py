"""twistd plugin: ``twistd -n pbsyslog --config FILE``."""

from twisted.application.service import ServiceMaker

pbsyslog = ServiceMaker(
    "pbsyslog",
    "pbsyslog.tap",
    "POP-before-SMTP relay authoriser: syslog in, Postfix access map out",
    "pbsyslog",
)
