"""An SMTP relay for the TLS tests (aiosmtpd): requires STARTTLS with
CERT/KEY, then AUTH as USER/PASSWORD, and writes every message into the
Maildir MAILDIR.

Usage: python3 smtp_starttls.py PORT CERT KEY USER PASSWORD MAILDIR
"""
import ssl
import sys
import time

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import AuthResult, LoginPassword

port, cert, key, user, password, maildir = sys.argv[1:7]


def authenticate(server, session, envelope, mechanism, data):
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
        user.encode(),
        password.encode(),
    )
    return AuthResult(success=ok)


context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
controller = Controller(
    Mailbox(maildir),
    hostname="127.0.0.1",
    port=int(port),
    server_hostname="localhost",
    tls_context=context,
    require_starttls=True,
    auth_required=True,
    authenticator=authenticate,
)
controller.start()
while True:
    time.sleep(3600)
