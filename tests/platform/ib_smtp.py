"""A local SMTP server for the notification tests (aiosmtpd): `Mailbox` keeps what it accepts,
`LocalSmtp` serves it on 127.0.0.1 at a port bound here. The `smtp` fixture (conftest.py) runs one
per test module."""

from __future__ import annotations

import email
import socket
import threading
from email import policy

from aiosmtpd.controller import Controller


class Mailbox:
    """aiosmtpd handler: keeps every accepted mail; refuses recipients starting with `refused`."""

    def __init__(self):
        self.mails: list[dict] = []
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if address.startswith("refused"):
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        msg = email.message_from_bytes(envelope.content, policy=policy.default)
        mail = {"from": envelope.mail_from, "rcpt": list(envelope.rcpt_tos),
                "subject": str(msg["subject"] or ""), "body": msg.get_content()}
        with self.lock:
            self.mails.append(mail)
        return "250 OK"

    def about(self, text: str) -> list[dict]:
        """The mails whose subject or body mentions `text` (a device name)."""
        with self.lock:
            return [m for m in self.mails if text in m["subject"] or text in m["body"]]


class LocalSmtp(Controller):
    """A Controller on a socket bound here to 127.0.0.1:0, so the port is known and never raced
    for (aiosmtpd's own start-up check connects to `port`, which fails with port 0)."""

    def __init__(self, handler):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        super().__init__(handler, hostname="127.0.0.1", port=self.sock.getsockname()[1])

    def _create_server(self):
        return self.loop.create_server(self._factory_invoker, sock=self.sock)
