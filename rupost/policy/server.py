"""The RuPost policy server: one process per node, run by the service backend as the
``policy`` component (adapters/policy.py renders its configuration).

It answers three clients, all from the shared tables in the ``rupost`` database:

- **dovecot's auth policy** (``auth_policy_server_url``): ``POST /dovecot?command=allow``
  before each authentication (IMAP, ManageSieve, and SMTP submission, which authenticates
  through dovecot's SASL) gets ``{"status": -1}`` when the client address or the account is
  blocked; ``POST /dovecot?command=report`` after it records a failure, which may block.
- **nginx** (``auth_request`` on the webmail login): ``GET /check`` with the client address
  in ``X-Real-IP`` answers 204 or 403; ``POST /sogo/connect`` is SOGo's login, relayed to
  SOGo by this server so that a failed webmail login is recorded like any other.
- **postfix** (``check_policy_service``, a unix socket): at DATA on the submission
  services, the outbound rate limit per authenticated sender, counted in
  ``sender_messages``; at RCPT, through the restriction class ``smtpd_rupost_list_members``
  (only for lists with sender policy "members"), whether the sender is a list member.
- **dovecot's post-login script** (``POST /impersonation``): records each mailbox opened
  by an impersonation account in ``rupost_logs.impersonation_uses``.
- **rspamd** (an HTTP map it polls): ``GET /antispam/lists`` answers the allow and deny lists
  of senders (``antispam_map``) with an entity tag; rspamd's ``If-None-Match`` gets 304 when
  nothing changed (docs/antispam.md).
"""
from __future__ import annotations

import argparse
import hmac
import http.client
import io
import json
import logging
import os
import signal
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from adapters.policy import API_HEADER, read_api_secret

from ..errors import RuPostError
from ..paths import Layout
from ..services.blocklist import BlockView, Limits

log = logging.getLogger("rupost.policy")

MAX_BODY = 64 * 1024
# what dovecot reports (failures that block accounts, impersonation uses): the secret header only
REPORT_PATHS = ("/dovecot", "/impersonation")
# prepended to mail sent on behalf of another mailbox; the submission cleanup's header_checks
# turn it into Sender: (templates/builtin/standard.yaml, table submission_headers)
ON_BEHALF_MARK = "X-RuPost-On-Behalf-Of"


class PolicyApp:
    """The WSGI application (usable without a server in tests)."""

    def __init__(self, app, config: dict, api_secret: str = ""):
        self.app = app
        self.config = config
        self.blocklist = app.blocklist_with(Limits(**config.get("limits", {})))
        self.sogo_upstream = config.get("sogo_upstream", "")
        rate = config.get("sender_rate", {})
        self.rate_limit = int(rate.get("limit", 0))
        self.rate_window = int(rate.get("window", 3600))
        self.api_secret = api_secret

    def authorised(self, environ) -> bool:
        """The request carries the node's secret header (adapters/policy.py API_HEADER)."""
        sent = environ.get("HTTP_" + API_HEADER.upper().replace("-", "_"), "")
        return bool(self.api_secret) and hmac.compare_digest(sent.encode(), self.api_secret.encode())

    # ------------------------------------------------------------ WSGI
    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        try:
            if path in REPORT_PATHS and not self.authorised(environ):
                log.warning("%s %s refused: no valid %s header", method, path, API_HEADER)
                return self._reply(start_response, "403 Forbidden", b"forbidden\n", "text/plain")
            if path == "/dovecot" and method == "POST":
                return self._json(start_response, self.dovecot(environ))
            if path == "/check":
                return self.check(environ, start_response)
            if path == "/sogo/connect":
                return self.sogo_connect(environ, start_response)
            if path == "/impersonation" and method == "POST":
                return self.impersonation(environ, start_response)
            if path == "/antispam/lists" and method in ("GET", "HEAD"):
                return self.antispam_lists(environ, start_response)
            if path == "/health":
                return self._reply(start_response, "200 OK", b"ok\n", "text/plain")
            return self._reply(start_response, "404 Not Found", b"not found\n", "text/plain")
        except (RuPostError, ValueError) as exc:
            log.error("%s %s: %s", method, path, exc)
            return self._reply(start_response, "500 Internal Server Error", f"{exc}\n".encode(), "text/plain")

    @staticmethod
    def _reply(start_response, status: str, body: bytes, ctype: str, headers=()):
        start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body))), *headers])
        return [body]

    def _json(self, start_response, data: dict):
        return self._reply(start_response, "200 OK", json.dumps(data).encode(), "application/json")

    @staticmethod
    def _body(environ) -> bytes:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > MAX_BODY:
            raise ValueError(f"request body of {length} bytes is too large")
        return environ["wsgi.input"].read(length) if length > 0 else b""

    # ------------------------------------------------------------ rspamd
    def antispam_lists(self, environ, start_response):
        """rspamd's map of the allow and deny lists, read from the database at each poll (a
        few rows, every map_watch_interval per node): a change needs no deploy."""
        body, etag = self.app.antispam_lists.map_text()
        if environ.get("HTTP_IF_NONE_MATCH", "") == etag:
            start_response("304 Not Modified", [("ETag", etag), ("Content-Length", "0")])
            return [b""]
        return self._reply(start_response, "200 OK", body.encode(), "text/plain; charset=utf-8", [("ETag", etag)])

    # ------------------------------------------------------------ dovecot
    def dovecot(self, environ) -> dict:
        command = parse_qs(environ.get("QUERY_STRING", "")).get("command", [""])[0]
        try:
            request = json.loads(self._body(environ) or b"{}")
        except ValueError:
            raise ValueError("dovecot auth policy request is not JSON") from None
        ip, login = str(request.get("remote", "")), str(request.get("login", ""))
        protocol = str(request.get("protocol", ""))
        if command == "allow":
            block = self.blocklist.is_blocked(ip, login)
            if block:
                log.info("refused %s login %r from %s: %s %s is blocked until %s", protocol, login, ip,
                         block["kind"], block["value"], block["expires_at"].isoformat())
                return {"status": -1, "msg": "Too many failed authentications, try again later"}
            return {"status": 0, "msg": ""}
        if command == "report":
            if not request.get("success") and not request.get("policy_reject"):
                for block in self.blocklist.record_failure(ip, login, protocol):
                    log.info("blocked %s %s: %s", block["kind"], block["value"], block["reason"])
            return {"status": 0, "msg": ""}
        raise ValueError(f"unknown dovecot auth policy command {command!r}")

    # ------------------------------------------------------------ nginx / SOGo
    def check(self, environ, start_response):
        ip = environ.get("HTTP_X_REAL_IP", "")
        query = parse_qs(environ.get("QUERY_STRING", ""))
        account = query.get("account", [""])[0]
        if self.blocklist.is_blocked(ip, account):
            return self._reply(start_response, "403 Forbidden", b"blocked\n", "text/plain")
        return self._reply(start_response, "204 No Content", b"", "text/plain")

    def sogo_connect(self, environ, start_response):
        """SOGo's login (POST /SOGo/connect, JSON userName/password): refused while the client
        address or the account is blocked, relayed to SOGo otherwise; a refused login
        (SOGo answers 403) is recorded as a failure."""
        ip = environ.get("HTTP_X_REAL_IP", "")
        body = self._body(environ)
        try:
            account = str(json.loads(body or b"{}").get("userName", ""))
        except (ValueError, AttributeError):
            account = ""
        block = self.blocklist.is_blocked(ip, account)
        if block:
            log.info("refused webmail login %r from %s: %s %s is blocked", account, ip, block["kind"], block["value"])
            return self._reply(start_response, "403 Forbidden",
                               json.dumps({"LDAPPasswordPolicyError": 65535, "blocked": True}).encode(),
                               "application/json")
        host, _, port = self.sogo_upstream.rpartition(":")
        headers = {k[5:].replace("_", "-").title(): v for k, v in environ.items() if k.startswith("HTTP_")}
        headers.pop("Connection", None)
        headers["Content-Type"] = environ.get("CONTENT_TYPE", "application/json")
        headers["Content-Length"] = str(len(body))
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        try:
            conn.request(environ.get("REQUEST_METHOD", "POST"), environ.get("HTTP_X_ORIGINAL_URI", "/SOGo/connect"),
                         body=body, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
            status = f"{resp.status} {resp.reason}"
            passed = [(k, v) for k, v in resp.getheaders()
                      if k.lower() not in ("connection", "transfer-encoding", "content-length", "keep-alive")]
        finally:
            conn.close()
        if resp.status in (401, 403) and environ.get("REQUEST_METHOD") == "POST":
            self.blocklist.record_failure(ip, account, "webmail")
        start_response(status, passed + [("Content-Length", str(len(payload)))])
        return [payload]

    # ------------------------------------------------------------ impersonation
    def impersonation(self, environ, start_response):
        """dovecot's post-login script: a mailbox was opened by an impersonation account.
        Answers 204 once the use is in rupost_logs; anything else keeps the session closed."""
        from ..services.impersonation import record_use

        form = parse_qs(self._body(environ).decode("utf-8", "replace"))
        field = lambda name: (form.get(name) or [""])[0]
        try:
            record_use(self.app, account=field("account"), target=field("target"), remote_ip=field("ip"),
                       mechanism=field("mechanism"), protocol=field("protocol") or "imap")
        except SQLAlchemyError as exc:
            log.error("impersonation use of %r on %r not recorded: %s", field("account"), field("target"), exc)
            return self._reply(start_response, "503 Service Unavailable", b"not recorded\n", "text/plain")
        return self._reply(start_response, "204 No Content", b"", "text/plain")

    # ------------------------------------------------------------ postfix
    def postfix_policy(self, attrs: dict) -> str:
        """Postfix policy delegation: at RCPT, the sender policy "members" of a distribution
        list (postfix's restriction class smtpd_rupost_list_members, named by the
        lookup_list_policies view); at DATA, the outbound rate limit per authenticated sender,
        then the Sender: header of mail sent on behalf of another mailbox."""
        if attrs.get("protocol_state", "").upper() == "RCPT":
            return self.list_policy(attrs)
        verdict = self.rate_policy(attrs)
        return verdict if verdict != "DUNNO" else self.on_behalf_policy(attrs)

    def on_behalf_policy(self, attrs: dict) -> str:
        """A login submitting from another mailbox's address with send-on-behalf (and not
        send-as) rights: `Sender: LOGIN`, so the recipient sees who wrote on whose
        behalf (postfix already refused a sender the login holds no right on, at MAIL FROM)."""
        login = (attrs.get("sasl_username") or "").strip().lower()
        sender = (attrs.get("sender") or "").strip().lower()
        if not login or not sender or sender == login:
            return "DUNNO"
        try:
            with self.app.dbs.engine("data").connect() as conn:
                kinds = set(conn.execute(text("SELECT kind FROM lookup_sender_grants WHERE sender = :s "
                                              "AND login = :l"), {"s": sender, "l": login}).scalars())
        except SQLAlchemyError as exc:
            log.error("send-on-behalf check of %s for %s: %s", login, sender, exc)
            return "451 4.3.0 The sender's rights cannot be checked now, try again later"
        if kinds == {"send_on_behalf"}:
            log.info("send-on-behalf: %s sends on behalf of %s", login, sender)
            # a mark, not the header: the submission cleanup drops every Sender: a client wrote
            # and turns this mark into the only one (table submission_headers)
            return f"PREPEND {ON_BEHALF_MARK}: {login}"
        return "DUNNO"

    def rate_policy(self, attrs: dict) -> str:
        if self.rate_limit <= 0:
            return "DUNNO"
        sender = (attrs.get("sasl_username") or attrs.get("sender") or "").strip().lower()
        if not sender:
            return "DUNNO"
        with self.app.dbs.engine("main").begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:s))"), {"s": "rupost-rate:" + sender})
            count = conn.execute(text("SELECT count(*) FROM sender_messages WHERE sender = :s "
                                      "AND at > now() - make_interval(secs => :w)"),
                                 {"s": sender, "w": self.rate_window}).scalar()
            if count >= self.rate_limit:
                log.info("rate limit: %s sent %d messages in %d s (limit %d)", sender, count, self.rate_window,
                         self.rate_limit)
                return (f"450 4.7.1 Sending rate limit exceeded: at most {self.rate_limit} messages "
                        f"per {self.rate_window} s, try again later")
            conn.execute(text("INSERT INTO sender_messages (sender) VALUES (:s)"), {"s": sender})
        return "DUNNO"

    def list_policy(self, attrs: dict) -> str:
        """Sender policy "members": the envelope sender (or, on submission, the logged-in
        user) must be a current member of the list. Anything else: 550 naming the policy."""
        recipient = (attrs.get("recipient") or "").strip().lower()
        local, at, domain = recipient.rpartition("@")
        if not at:
            return "DUNNO"
        candidates = [recipient]
        if "+" in local:  # the recipient delimiter: list+tag@domain is the list
            candidates.append(f"{local.split('+', 1)[0]}@{domain}")
        senders = [a for a in dict.fromkeys([(attrs.get("sasl_username") or "").strip().lower(),
                                             (attrs.get("sender") or "").strip().lower()]) if a]
        try:
            row = self._list_row(senders, candidates)
        except SQLAlchemyError as exc:
            log.error("list policy for %s: %s", recipient, exc)
            return "451 4.3.0 The distribution list's sender policy cannot be checked now, try again later"
        if row is None or row.sender_policy != "members" or row.member:
            return "DUNNO"
        log.info("list policy: %s refused for sender %r (login %r): not a member", row.address,
                 attrs.get("sender", ""), attrs.get("sasl_username", ""))
        return (f"550 5.7.1 <{row.address}>: only members of this distribution list may send to it "
                "(sender policy: members)")

    def _list_row(self, senders: list[str], candidates: list[str]):
        with self.app.dbs.engine("data").connect() as conn:
            return conn.execute(text(
                "SELECT l.address, l.sender_policy, EXISTS (SELECT 1 FROM distribution_list_members m "
                "WHERE m.list_id = l.id AND m.address = ANY(CAST(:senders AS text[]))) AS member "
                "FROM distribution_lists l WHERE l.address = ANY(CAST(:candidates AS text[])) "
                "ORDER BY length(l.address) DESC LIMIT 1"),
                {"senders": senders, "candidates": candidates}).first()

    def expire(self) -> None:
        self.blocklist.expire()
        if self.rate_limit > 0:
            with self.app.dbs.engine("main").begin() as conn:
                conn.execute(text("DELETE FROM sender_messages WHERE at <= now() - make_interval(secs => :w)"),
                             {"w": self.rate_window})


class _PolicyHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, policy: PolicyApp):
        super().__init__(address, _KeepAliveHandler)
        self.policy = policy


class _KeepAliveHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 with persistent connections, the WSGI application behind it. dovecot asks
    twice per authentication (before it, and the report after it): a new TCP connection
    and a new thread for each request (wsgiref's server speaks HTTP/1.0) cost more than
    the policy decision itself, ~2 ms of every IMAP and submission login."""

    protocol_version = "HTTP/1.1"
    # seconds an idle kept-alive connection holds its thread: longer than dovecot's auth policy
    # client keeps one idle (10 s), so dovecot closes first and never sends on a closed one
    timeout = 60
    # one segment per answer, sent at once: written unbuffered, headers and body went out
    # as two small segments, and Nagle held the second until the client's delayed ACK (40 ms)
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True

    def _serve(self):
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY or "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            # the body would stay unread and be taken for the next request: answer and close
            self.send_error(413 if length > MAX_BODY else 400, "bad or too large request body")
            return
        path, _, query = self.path.partition("?")
        environ = {"REQUEST_METHOD": self.command, "PATH_INFO": path, "QUERY_STRING": query,
                   "CONTENT_TYPE": self.headers.get("Content-Type", ""), "CONTENT_LENGTH": str(length),
                   "REMOTE_ADDR": self.client_address[0] if self.client_address else "",
                   "wsgi.input": io.BytesIO(self.rfile.read(length))}
        for name, value in self.headers.items():
            key = "HTTP_" + name.upper().replace("-", "_")
            if key not in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
                environ[key] = value
        reply = {}

        def start_response(status, headers, exc_info=None):
            reply["status"], reply["headers"] = status, headers

        try:
            body = b"".join(self.server.policy(environ, start_response))
        except Exception:  # noqa: BLE001 - e.g. the database gone: one answer, the server lives on
            log.exception("%s %s", self.command, path)
            self.send_error(500, "policy server error")
            return
        code, _, reason = reply["status"].partition(" ")
        self.send_response(int(code), reason)
        for name, value in reply["headers"]:
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_HEAD = _serve

    def log_message(self, format, *args):  # noqa: A002 - the stdlib's name
        pass


class _PostfixPolicyHandler(socketserver.StreamRequestHandler):
    server: _UnixServer

    def handle(self) -> None:
        policy: PolicyApp = self.server.policy
        attrs: dict = {}
        while True:
            raw = self.rfile.readline(8192)
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if line:
                name, _, value = line.partition("=")
                attrs[name] = value
                continue
            try:
                action = policy.postfix_policy(attrs)
            except RuPostError as exc:
                log.error("postfix policy: %s", exc)
                action = "DUNNO"
            self.wfile.write(f"action={action}\n\n".encode())
            self.wfile.flush()
            attrs = {}


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    policy: PolicyApp


DKIM_SYNC_INTERVAL = 15.0


def dkim_sync(app) -> None:
    """Keys generated or rotated on another node reach this node's OpenDKIM: when the
    KeyTable written here no longer matches the database, rewrite it and signal OpenDKIM."""
    from ..services import dkim

    while True:
        time.sleep(DKIM_SYNC_INTERVAL)
        try:
            keys = dkim.active_keys(app.dbs)
            key_dir = dkim.state_dir(app.layout) / "keys"
            wanted = dkim.table_files(keys, key_dir)["key.table"]
            try:
                current = (dkim.state_dir(app.layout) / "key.table").read_text()
            except OSError:
                current = None
            if current != wanted:
                result = app.dkim.apply()
                log.info("DKIM keys changed in the database: files rewritten%s",
                         ", OpenDKIM re-read them" if result["reloaded"] else "")
        except (RuPostError, OSError, SQLAlchemyError) as exc:  # the thread lives on: next round
            log.error("DKIM key sync: %s", exc)


def serve(root: str, config_path: str) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s rupost-policy %(levelname)s %(message)s")
    config = json.loads(Path(config_path).read_text())
    app = _open_as_policy_role(root)
    policy = PolicyApp(app, config, read_api_secret(app.layout))
    # checked before every authentication: from memory, kept current by NOTIFY
    policy.blocklist.view = BlockView(app).start()
    host, _, port = config["listen"].rpartition(":")
    httpd = _PolicyHTTPServer((host, int(port)), policy)
    servers: list[socketserver.BaseServer] = [httpd]
    sock_path = config.get("postfix_socket")
    if sock_path:
        Path(sock_path).parent.mkdir(parents=True, exist_ok=True)
        Path(sock_path).unlink(missing_ok=True)
        unix = _UnixServer(sock_path, _PostfixPolicyHandler)
        unix.policy = policy
        _restrict_socket(sock_path, config.get("postfix_socket_group") or "postfix")
        servers.append(unix)
        threading.Thread(target=unix.serve_forever, daemon=True).start()

    def stop(*_):
        threading.Thread(target=httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def housekeeping():
        while True:
            time.sleep(max(5, min(60, policy.blocklist.limits.window // 2 or 60)))
            try:
                policy.expire()
            except RuPostError as exc:
                log.error("expiring old entries: %s", exc)

    threading.Thread(target=housekeeping, daemon=True).start()
    threading.Thread(target=dkim_sync, args=(app,), daemon=True).start()
    log.info("listening on %s (dovecot auth policy, nginx checks)%s", config["listen"],
             f" and {sock_path} (postfix policy)" if sock_path else "")
    try:
        httpd.serve_forever(poll_interval=0.5)
    finally:
        policy.blocklist.view.stop()
        for server in servers:
            server.server_close()
        if sock_path:
            Path(sock_path).unlink(missing_ok=True)
        app.close()


def _open_as_policy_role(root: str):
    """The services over the policy server's own database role (rupost/db/roles.py): its
    tables and nothing else, so a flaw in a request it parses reaches no other secret. The
    owner's login of config.json reads which one; without one (roles not created yet), the
    owner's."""
    from dataclasses import replace

    from ..db.roles import consumer_database
    from ..services import Actor, Runtime
    from ..services.db_roles import active_logins

    runtime = Runtime.open(root)
    try:
        login = active_logins(runtime.dbs).get("policy")
    finally:
        runtime.close()
    config = replace(runtime.config, database=consumer_database(runtime.config.database, login))
    log.info("database role %s", config.database.user)
    return Runtime(Layout.at(root), config).services(Actor("policy", source="policy"))


def _restrict_socket(path: str, group: str) -> None:
    """postfix's smtpd (group postfix) connects; nobody else may: a local process that could
    write here would be told list members' verdicts and count against senders' rate limits."""
    import grp

    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        raise RuPostError(f"group {group!r} of the postfix policy socket does not exist") from None
    os.chown(path, 0, gid)
    os.chmod(path, 0o660)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="rupost-policy", description="RuPost policy server")
    parser.add_argument("--root", default=os.environ.get("RUPOST_ROOT", "/"))
    parser.add_argument("--config", required=True)
    args = parser.parse_args(argv)
    serve(args.root, args.config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
