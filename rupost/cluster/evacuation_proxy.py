"""The SMTP hop between an evacuator instance and this node's evacuation listener.

Postfix's SMTP client marks a recipient done in the queue file only after it read the
server's 250. An evacuator killed between the receiver's commit and that moment leaves
the message in the failed node's queue although it was delivered, and the next run
would send it again: SMTP cannot close that window by itself. This relay, running inside
the evacuator process, closes it with a hand-over journal in Postgres:

- the evacuator's client tells it the message's queue id on the failed node (XFORWARD
  IDENT, which Postfix sends to servers that offer it); with the failed node's name and
  a cluster secret this gives the message's evacuation id, also put on the message as
  an `X-RuPost-Evacuation-Id` header;
- before the final dot goes to the listener the message is journalled `prepared`, after
  the listener's 250 `delivered`;
- a message journalled `delivered` is answered 250 without being sent again;
- a message journalled `prepared` (the hand-over was cut off, its outcome unknown) is
  looked for in its recipients' mailboxes by that header; recipients that have it are
  not sent it again, the others are.

So a crash at any point leads to another attempt, never to a loss, and an attempt after
a completed hand-over delivers nothing twice. (A recipient that is not a local mailbox,
e.g. an external forward, cannot be searched: after a cut-off hand-over it may receive
a second copy, never none.)

Everything else passes through verbatim (envelope parameters, dot-stuffed data, every
reply), and a reply is given to the evacuator only after the listener gave it.
"""
from __future__ import annotations

import abc
import hashlib
import hmac
import socket
import socketserver
import threading

HEADER = "X-RuPost-Evacuation-Id"
TIMEOUT = 300.0
_CAPABILITIES = ("8BITMIME", "SMTPUTF8", "DSN", "ENHANCEDSTATUSCODES",
                 "XFORWARD NAME ADDR PROTO HELO IDENT SOURCE PORT")


def evacuation_digest(secret: bytes, failed_node: str, queue_id: str) -> str:
    """A message's evacuation id: stable across runs, unguessable without the secret."""
    return hmac.new(secret, f"{failed_node}\0{queue_id}".encode(), hashlib.sha256).hexdigest()[:40]


class _Lines:
    """CRLF-terminated lines from a socket, bytes in and out (8-bit and UTF-8 safe)."""

    def __init__(self, sock: socket.socket) -> None:
        self.file = sock.makefile("rb")
        self.sock = sock

    def read(self) -> bytes:
        line = self.file.readline(1 << 20)
        if not line:
            raise ConnectionError("connection closed")
        return line

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)


class _Upstream:
    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.create_connection(address, timeout=TIMEOUT)
        self.io = _Lines(self.sock)

    def reply(self) -> bytes:
        """A whole (possibly multi-line) reply, as received."""
        lines = [self.io.read()]
        while len(lines[-1]) > 3 and lines[-1][3:4] == b"-":
            lines.append(self.io.read())
        return b"".join(lines)

    def command(self, line: bytes) -> bytes:
        self.io.write(line)
        return self.reply()

    def close(self) -> None:
        self.sock.close()


class HandOverJournal(abc.ABC):
    """What the relay asks of its owner (PostgresHandOverJournal in rupost/cluster/evacuation.py)."""

    @abc.abstractmethod
    def state(self, evacuation_id: str) -> str | None: ...

    @abc.abstractmethod
    def prepare(self, evacuation_id: str, queue_id: str) -> None: ...

    @abc.abstractmethod
    def delivered(self, evacuation_id: str, reply: str) -> None: ...

    @abc.abstractmethod
    def forget(self, evacuation_id: str) -> None: ...

    @abc.abstractmethod
    def in_mailbox(self, recipient: str, evacuation_id: str) -> bool: ...


def _address(line: bytes) -> str:
    """The address of a MAIL FROM:/RCPT TO: command line."""
    text = line.decode("utf-8", "replace")
    start, end = text.find("<"), text.find(">")
    return text[start + 1:end] if 0 <= start < end else text.split(":", 1)[-1].split()[0]


class _Transaction:
    def __init__(self) -> None:
        self.ident: str | None = None
        self.evacuation_id: str | None = None
        self.state: str | None = None
        self.mail: bytes | None = None
        self.rcpts: list[bytes] = []


class _Session(socketserver.StreamRequestHandler):
    server: EvacuationProxy

    def handle(self) -> None:
        self.request.settimeout(TIMEOUT)
        client = _Lines(self.request)
        try:
            upstream = _Upstream(self.server.upstream)
        except OSError as exc:
            client.write(f"421 4.4.1 evacuation listener unreachable: {exc}\r\n".encode())
            return
        try:
            greeting = upstream.reply()
            if not greeting.startswith(b"220"):
                client.write(b"421 4.4.2 evacuation listener refused the connection\r\n")
                return
            ehlo = upstream.command(b"EHLO rupost-evacuator\r\n")
            if not ehlo.startswith(b"250"):
                client.write(b"421 4.4.2 evacuation listener refused EHLO\r\n")
                return
            client.write(b"220 rupost evacuation relay ESMTP\r\n")
            self._serve(client, upstream)
        except (OSError, ConnectionError):
            pass  # either side went away: no reply, so the evacuator keeps the message
        finally:
            upstream.close()

    def _serve(self, client: _Lines, upstream: _Upstream) -> None:
        journal = self.server.journal
        tx = _Transaction()
        while True:
            line = client.read()
            verb = line.split(b" ", 1)[0].split(b":", 1)[0].strip().upper()
            if verb in (b"EHLO", b"HELO"):
                caps = [b"rupost-evacuation-relay", *(c.encode() for c in _CAPABILITIES)]
                if verb == b"HELO":
                    client.write(b"250 rupost-evacuation-relay\r\n")
                else:
                    client.write(b"".join(b"250-" + c + b"\r\n" for c in caps[:-1]) + b"250 " + caps[-1] + b"\r\n")
            elif verb == b"XFORWARD":
                for attr in line.split()[1:]:
                    name, _, value = attr.partition(b"=")
                    if name.upper() == b"IDENT" and value and value != b"[UNAVAILABLE]":
                        tx.ident = value.decode("ascii", "replace")
                client.write(b"250 2.0.0 Ok\r\n")
            elif verb == b"MAIL":
                if tx.ident:
                    tx.evacuation_id = evacuation_digest(self.server.secret, self.server.failed_node, tx.ident)
                    tx.state = journal.state(tx.evacuation_id)
                if tx.state == "delivered":
                    client.write(b"250 2.1.0 Ok\r\n")
                else:
                    reply = upstream.command(line)
                    if reply.startswith(b"2"):
                        tx.mail = line
                    client.write(reply)
            elif verb == b"RCPT":
                if tx.state == "delivered":
                    client.write(b"250 2.1.5 Ok\r\n")
                else:
                    reply = upstream.command(line)
                    if reply.startswith(b"2"):
                        tx.rcpts.append(line)
                    client.write(reply)
            elif verb == b"DATA":
                self._data(client, upstream, tx)
                tx = _Transaction()
            elif verb == b"RSET":
                client.write(upstream.command(line))
                tx = _Transaction()
            elif verb == b"NOOP":
                client.write(b"250 2.0.0 Ok\r\n")
            elif verb == b"QUIT":
                client.write(b"221 2.0.0 Bye\r\n")
                try:
                    upstream.command(b"QUIT\r\n")
                except (OSError, ConnectionError):
                    pass
                return
            else:
                client.write(b"502 5.5.2 command not recognised by the evacuation relay\r\n")

    def _data(self, client: _Lines, upstream: _Upstream, tx: _Transaction) -> None:
        journal, eid = self.server.journal, tx.evacuation_id
        if tx.state == "delivered":
            client.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
            self._read_data(client)
            client.write(b"250 2.0.0 Ok: delivered by an earlier evacuation run\r\n")
            return
        if tx.state == "prepared" and tx.rcpts:
            # an earlier hand-over was cut off: send it only to recipients that lack it
            assert eid is not None  # a journal state is only looked up for an evacuation id
            missing = [r for r in tx.rcpts if not journal.in_mailbox(_address(r), eid)]
            if len(missing) < len(tx.rcpts):
                upstream.command(b"RSET\r\n")
                if not missing:
                    client.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    self._read_data(client)
                    journal.delivered(eid, "found in the recipients' mailboxes")
                    client.write(b"250 2.0.0 Ok: delivered by an earlier evacuation run\r\n")
                    return
                mail = tx.mail  # None: the listener accepted no MAIL FROM of this transaction, nothing to re-address
                replies = [upstream.command(mail)] + [upstream.command(r) for r in missing] if mail is not None else []
                if mail is None or not all(r.startswith(b"2") for r in replies):
                    upstream.command(b"RSET\r\n")
                    client.write(b"451 4.3.0 evacuation relay: could not re-address a cut-off hand-over\r\n")
                    return
        reply = upstream.command(b"DATA\r\n")
        if not reply.startswith(b"354"):
            client.write(reply)
            return
        client.write(reply)
        data = self._read_data(client)
        if eid:
            assert tx.ident is not None  # the evacuation id is derived from it
            journal.prepare(eid, tx.ident)
            upstream.io.write(f"{HEADER}: {self.server.failed_node} {tx.ident} {eid}\r\n".encode())
        upstream.io.write(data)
        reply = upstream.reply()
        if eid:
            if reply.startswith(b"2"):
                journal.delivered(eid, reply.decode("utf-8", "replace").strip())
            else:
                journal.forget(eid)  # refused: the listener has no copy
        client.write(reply)

    @staticmethod
    def _read_data(client: _Lines) -> bytes:
        chunk = bytearray()
        while True:
            data = client.read()
            chunk += data
            if data in (b".\r\n", b".\n"):
                return bytes(chunk)


class EvacuationProxy(socketserver.ThreadingTCPServer):
    """Listens on a free loopback port for the duration of one evacuation run."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, upstream: tuple[str, int], failed_node: str, secret: bytes, journal: HandOverJournal) -> None:
        self.upstream, self.failed_node, self.secret, self.journal = upstream, failed_node, secret, journal
        super().__init__(("127.0.0.1", 0), _Session)
        self._thread = threading.Thread(target=self.serve_forever, name="evacuation-proxy", daemon=True)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def __enter__(self) -> EvacuationProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
