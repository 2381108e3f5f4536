#!/usr/bin/python3
"""Real mail clients for qam's tests: python's imaplib (IMAP LOGIN) and smtplib (STARTTLS,
then AUTH PLAIN or AUTH LOGIN). Usage: mail_login.py imap|smtp-plain|smtp-login PORT USER
COUNT, the password on stdin. Prints one line per login: `ok MS` or `denied MS`, where MS is
the time from connecting to the server's answer to the login."""

import imaplib
import smtplib
import ssl
import sys
import time


def imap(port, user, password):
    client = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    try:
        client.login(user, password)
    except imaplib.IMAP4.error:
        return False
    client.logout()
    return True


def smtp(port, user, password, mechanism):
    client = smtplib.SMTP("127.0.0.1", port, timeout=30)
    client.ehlo()
    if client.has_extn("auth"):
        sys.exit("AUTH offered before STARTTLS although smtpd_tls_auth_only = yes")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the test's self-signed certificate
    client.starttls(context=context)
    client.ehlo()
    offered = client.esmtp_features.get("auth", "").split()
    if mechanism not in offered:
        sys.exit(f"AUTH {mechanism} not offered after STARTTLS: {offered}")
    client.user, client.password = user, password
    answer = client.auth_plain if mechanism == "PLAIN" else client.auth_login
    try:
        client.auth(mechanism, answer, initial_response_ok=mechanism == "PLAIN")
        accepted = True
    except smtplib.SMTPAuthenticationError:
        accepted = False
    client.quit()
    return accepted


def main():
    protocol, port, user, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    password = sys.stdin.readline().rstrip("\n")
    for _ in range(count):
        started = time.perf_counter()
        if protocol == "imap":
            accepted = imap(port, user, password)
        else:
            accepted = smtp(port, user, password, protocol.split("-")[1].upper())
        elapsed = (time.perf_counter() - started) * 1000
        print(f"{'ok' if accepted else 'denied'} {elapsed:.3f}", flush=True)


main()
