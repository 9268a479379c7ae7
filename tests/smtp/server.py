#!/usr/bin/env python3
"""SMTP test server for credit-sentinel's integration tests (built on aiosmtpd).

Start it as a child process; once it listens it prints exactly one line

    PORT <n>

to stdout (flushed), then serves until SIGTERM or SIGINT, and exits 0.

Every accepted message is stored in --maildir DIR as DIR/<seq>.eml (the raw
bytes received, seq zero-padded to 6 digits) and described by one JSON line
appended to DIR/messages.jsonl.  Both are fsynced before the 250 reply to DATA.

See tests/smtp/README.md for the options and the file formats.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hmac
import json
import logging
import os
import re
import signal
import ssl
import sys
import warnings
from email.header import decode_header, make_header
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Optional

try:
    from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
except ImportError:  # pragma: no cover - environment problem
    sys.stderr.write(
        "server.py: aiosmtpd is not installed; run "
        "`pip install -r tests/smtp/requirements.txt`\n"
    )
    sys.exit(2)

log = logging.getLogger("smtp-test-server")

SEQ_WIDTH = 6
EML_RE = re.compile(r"^(\d+)\.eml$")
JSONL_NAME = "messages.jsonl"

REPLY_OK = "250 2.0.0 Message accepted for delivery"
REPLY_TEMPFAIL = "451 4.3.0 temporarily unavailable"
REPLY_LOCAL_ERROR = "451 4.3.0 local error in processing"


# --------------------------------------------------------------------------
# Header helpers
# --------------------------------------------------------------------------

_FOLD_RE = re.compile(r"\r?\n[ \t]")


def _unfold(value: str) -> str:
    return _FOLD_RE.sub(" ", value).strip()


def _raw_header(headers, name: str) -> Optional[str]:
    """First header `name`, unfolded, as in the message (not decoded).

    raw_items() keeps raw 8-bit bytes as surrogate escapes, where get()
    would turn them into U+FFFD.
    """
    name = name.lower()
    for key, value in headers.raw_items():
        if key.lower() == name:
            return _unfold(value)
    return None


def _decode_subject(raw: Optional[str]) -> Optional[str]:
    """Decode an RFC 2047 Subject into unicode; never raises."""
    if raw is None:
        return None
    # Raw 8-bit bytes in the header come through as surrogate escapes: treat
    # them as UTF-8 (what SMTPUTF8 / 8BITMIME clients send).
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        raw = raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    try:
        return str(make_header(decode_header(raw)))
    except Exception:  # malformed encoded-words: keep the raw text
        return raw


def _rfc3339_now() -> str:
    now = dt.datetime.now(dt.timezone.utc)
    return now.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --------------------------------------------------------------------------
# Message store
# --------------------------------------------------------------------------


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class Maildir:
    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        os.makedirs(self.path, exist_ok=True)
        self.jsonl = os.path.join(self.path, JSONL_NAME)
        self.next_seq = self._scan_last_seq() + 1

    def _scan_last_seq(self) -> int:
        last = 0
        for name in os.listdir(self.path):
            m = EML_RE.match(name)
            if m:
                last = max(last, int(m.group(1)))
        # Also continue after anything already recorded in messages.jsonl
        # (a test may have deleted .eml files but kept the index).
        try:
            with open(self.jsonl, "r", encoding="utf-8", errors="replace") as f:
                for line in f:
                    try:
                        seq = json.loads(line).get("seq")
                    except (ValueError, AttributeError):
                        continue
                    if isinstance(seq, int):
                        last = max(last, seq)
        except FileNotFoundError:
            pass
        return last

    def save(self, envelope) -> dict:
        """Write <seq>.eml and append to messages.jsonl, both fsynced.

        Runs synchronously on the event loop, so sequence numbers and
        jsonl lines are never interleaved between concurrent sessions.
        """
        seq = self.next_seq
        self.next_seq += 1
        raw: bytes = envelope.original_content or b""
        name = f"{seq:0{SEQ_WIDTH}d}.eml"
        final = os.path.join(self.path, name)
        tmp = os.path.join(self.path, f".{name}.tmp")
        with open(tmp, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)  # readers never see a partial .eml
        _fsync_dir(self.path)

        headers = BytesHeaderParser(policy=compat32).parsebytes(raw)
        record = {
            "seq": seq,
            "message_id": _raw_header(headers, "Message-ID"),
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "subject": _decode_subject(_raw_header(headers, "Subject")),
            "received_at": _rfc3339_now(),
        }
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with open(self.jsonl, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(self.path)
        return record


# --------------------------------------------------------------------------
# aiosmtpd handler / authenticator
# --------------------------------------------------------------------------


class Handler:
    def __init__(self, maildir: Optional[Maildir], fail_file: Optional[str],
                 delay_data_secs: float, refuse_rcpt=()) -> None:
        self.maildir = maildir
        self.fail_file = fail_file
        self.delay = delay_data_secs
        self.refuse_rcpt = set(refuse_rcpt)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse_rcpt:
            log.info("refusing recipient %s", address)
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.fail_file and os.path.exists(self.fail_file):
            log.info("fail-file %s exists: answering 451", self.fail_file)
            return REPLY_TEMPFAIL
        if self.maildir is not None:
            try:
                rec = self.maildir.save(envelope)
            except OSError as e:
                log.error("could not store message: %s", e)
                return REPLY_LOCAL_ERROR
            log.info("stored message seq=%s message_id=%s",
                     rec["seq"], rec["message_id"])
        if self.delay > 0:
            await asyncio.sleep(self.delay)
        return REPLY_OK


class PasswordFileAuthenticator:
    """Accepts exactly one user; the password file is re-read on each try."""

    def __init__(self, user: str, password_file: str) -> None:
        self.user = user.encode("utf-8")
        self.password_file = password_file

    def _password(self) -> Optional[bytes]:
        try:
            with open(self.password_file, "rb") as f:
                pw = f.read()
        except OSError as e:
            log.warning("cannot read password file: %s", e)
            return None
        if pw.endswith(b"\n"):
            pw = pw[:-1]
            if pw.endswith(b"\r"):
                pw = pw[:-1]
        return pw

    def __call__(self, server, session, envelope, mechanism, auth_data):
        fail = AuthResult(success=False, handled=False)
        if mechanism not in ("PLAIN", "LOGIN"):
            return fail
        if not isinstance(auth_data, LoginPassword):
            return fail
        expected = self._password()
        if expected is None:
            return fail
        user_ok = hmac.compare_digest(auth_data.login or b"", self.user)
        pw_ok = hmac.compare_digest(auth_data.password or b"", expected)
        if user_ok and pw_ok:
            return AuthResult(success=True)
        log.info("AUTH %s failed for %r", mechanism, auth_data.login)
        return fail


# --------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------


def _tls_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certfile=cert, keyfile=key)
    return ctx


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0,
                   help="0 (default) picks a free port")
    p.add_argument("--hostname", default="localhost",
                   help="name in the greeting and EHLO reply")
    p.add_argument("--maildir", help="store accepted messages here")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--require-starttls", action="store_true")
    p.add_argument("--implicit-tls", action="store_true",
                   help="TLS from the first byte (SMTPS) instead of STARTTLS")
    p.add_argument("--auth-user")
    p.add_argument("--auth-password-file")
    p.add_argument("--fail-file",
                   help="while this file exists, DATA gets 451")
    p.add_argument("--delay-data-secs", type=float, default=0.0)
    p.add_argument("--refuse-rcpt", action="append", default=[],
                   help="answer 550 to RCPT TO this address (repeatable)")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="log to stderr (-v info, -vv debug)")
    a = p.parse_args(argv)

    if bool(a.tls_cert) != bool(a.tls_key):
        p.error("--tls-cert and --tls-key go together")
    if (a.require_starttls or a.implicit_tls) and not a.tls_cert:
        p.error("--require-starttls / --implicit-tls need --tls-cert/--tls-key")
    if a.require_starttls and a.implicit_tls:
        p.error("--require-starttls and --implicit-tls exclude each other")
    if bool(a.auth_user) != bool(a.auth_password_file):
        p.error("--auth-user and --auth-password-file go together")
    if a.delay_data_secs < 0:
        p.error("--delay-data-secs must be >= 0")
    return a


async def serve(a: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    maildir = Maildir(a.maildir) if a.maildir else None
    handler = Handler(maildir, a.fail_file, a.delay_data_secs, a.refuse_rcpt)
    ctx = _tls_context(a.tls_cert, a.tls_key) if a.tls_cert else None
    starttls_ctx = None if a.implicit_tls else ctx
    listen_ssl = ctx if a.implicit_tls else None

    smtp_kwargs = dict(
        hostname=a.hostname,
        enable_SMTPUTF8=True,
        tls_context=starttls_ctx,
        require_starttls=bool(a.require_starttls),
        # aiosmtpd only lets AUTH through after STARTTLS unless told
        # otherwise.  Require that only when STARTTLS is on offer; with
        # implicit TLS the socket is already encrypted (aiosmtpd cannot
        # tell), and with no TLS at all plaintext AUTH must work.
        auth_require_tls=starttls_ctx is not None,
        loop=loop,
    )
    if a.auth_user:
        smtp_kwargs["auth_required"] = True
        smtp_kwargs["authenticator"] = PasswordFileAuthenticator(
            a.auth_user, a.auth_password_file)

    sessions: set = set()

    def factory():
        proto = SMTP(handler, **smtp_kwargs)
        sessions.add(proto)
        orig_lost = proto.connection_lost

        def connection_lost(exc, _orig=orig_lost, _p=proto):
            sessions.discard(_p)
            return _orig(exc)

        proto.connection_lost = connection_lost
        return proto

    async def listen(port: int):
        return await loop.create_server(
            factory, host=a.host, port=port, ssl=listen_ssl,
            reuse_address=True)

    server = await listen(a.port)
    ports = {s.getsockname()[1] for s in server.sockets}
    if a.port == 0 and len(ports) > 1:
        # A host name resolving to several addresses got one free port
        # each: rebind all of them on the first one.
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        server = await listen(port)
        ports = {s.getsockname()[1] for s in server.sockets}
    port = server.sockets[0].getsockname()[1]

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    mode = ("implicit-tls" if a.implicit_tls
            else "starttls-required" if a.require_starttls
            else "starttls" if ctx else "plain")
    log.info("listening on %s port %d (%s, auth=%s, maildir=%s)",
             a.host, port, mode, bool(a.auth_user),
             maildir.path if maildir else None)
    sys.stdout.write(f"PORT {port}\n")
    sys.stdout.flush()

    await stop.wait()
    log.info("signal received, shutting down")
    server.close()
    for proto in list(sessions):
        transport = getattr(proto, "transport", None)
        if transport is not None:
            transport.close()
    await asyncio.sleep(0.05)
    return 0


def main(argv=None) -> int:
    a = parse_args(argv)
    level = (logging.WARNING if a.verbose == 0
             else logging.INFO if a.verbose == 1 else logging.DEBUG)
    logging.basicConfig(
        stream=sys.stderr, level=level,
        format="%(asctime)s smtp-test-server %(levelname)s %(name)s: "
               "%(message)s")
    mail_log = logging.getLogger("mail.log")
    if a.verbose < 2:
        # aiosmtpd logs every connection at INFO on "mail.log".
        mail_log.setLevel(max(level, logging.WARNING))
    # aiosmtpd warns on every connection that plaintext AUTH is allowed
    # (intended here) and on every login about its own use of a deprecated
    # attribute: drop both.
    mail_log.addFilter(lambda r: not any(
        s in r.getMessage() for s in ("auth_require_tls == False",
                                      "login_data is deprecated")))
    warnings.filterwarnings("ignore", message="Requiring AUTH")
    try:
        return asyncio.run(serve(a))
    except OSError as e:
        sys.stderr.write(f"server.py: {e}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
