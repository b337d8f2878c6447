"""Inputs: everything that receives login reports (syslog over UDP, TCP, TLS and RELP) and who may send them."""
