#!/usr/bin/env python3
"""Smoke test of tests/smtp/server.py in all its modes, with Python's smtplib.

    python3 tests/smtp/selftest.py [-v]

Needs `pip install -r tests/smtp/requirements.txt` and the openssl CLI.
Talks only to 127.0.0.1.  Prints one line per check and a closing
"N passed, N failed" line; exits non-zero if any check failed.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "server.py")
MAKE_CERT = os.path.join(HERE, "make_cert.sh")
VERBOSE = "-v" in sys.argv[1:]

USER = "alerts@example.test"
PASSWORD = "s3cret pass"          # with a space, to check no trimming of it
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


# --------------------------------------------------------------------------
# Harness
# --------------------------------------------------------------------------

class Server:
    def __init__(self, tmp: str, name: str, *args: str) -> None:
        self.name = name
        self.stderr_path = os.path.join(tmp, f"{name}.stderr")
        self.stderr = open(self.stderr_path, "wb")
        cmd = [sys.executable, SERVER, *args] + (["-vv"] if VERBOSE else [])
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                     stderr=self.stderr, stdin=subprocess.DEVNULL)
        self.port = self._read_port()

    def _read_port(self) -> int:
        deadline = time.monotonic() + 15
        buf = b""
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                self.proc.kill()
                raise AssertionError(f"{self.name}: no PORT line in time")
            r, _, _ = select.select([self.proc.stdout], [], [], left)
            if r:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    raise AssertionError(
                        f"{self.name}: exited before PORT line: "
                        f"rc={self.proc.wait()} stderr={self.read_stderr()!r}")
                buf += chunk
        line = buf.split(b"\n", 1)[0].decode()
        m = re.fullmatch(r"PORT (\d+)", line)
        assert m, f"{self.name}: bad first line {line!r}"
        return int(m.group(1))

    def read_stderr(self) -> str:
        self.stderr.flush()
        with open(self.stderr_path, "r", errors="replace") as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{self.name}: did not exit after {sig!r}")
        rest = self.proc.stdout.read()
        self.proc.stdout.close()
        self.stderr.close()
        assert rest == b"", f"{self.name}: extra stdout after PORT: {rest!r}"
        return rc

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def client_ctx(ca: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class SMTPLocal(smtplib.SMTP):
    """Connects to 127.0.0.1 but verifies STARTTLS against `tls_name`."""

    def __init__(self, port: int, tls_name: str = "localhost") -> None:
        super().__init__("127.0.0.1", port, local_hostname="client.test",
                         timeout=15)
        self._host = tls_name   # smtplib uses it as server_hostname


class SMTPSLocal(smtplib.SMTP_SSL):
    """SMTPS to 127.0.0.1 with server_hostname 'localhost'."""

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        super().__init__("127.0.0.1", port, local_hostname="client.test",
                         timeout=15, context=context)

    def _get_socket(self, host, port, timeout):
        sock = socket.create_connection((host, port), timeout)
        return self.context.wrap_socket(sock, server_hostname="localhost")


def make_message(n: int, subject: str = None) -> tuple[bytes, str]:
    msgid = f"<selftest.{n}.{os.getpid()}.{time.time_ns()}@credit-sentinel.test>"
    subject = subject or f"=?utf-8?q?Alert_=E2=9C=93_n=C2=B0{n}?="
    raw = (
        "From: Credit Sentinel <alerts@example.test>\r\n"
        "To: ops@example.test\r\n"
        f"Subject: {subject}\r\n"
        f"Message-ID: {msgid}\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        f"message {n}\r\n"
        ".a line starting with a dot\r\n"
        "..two dots\r\n"
        "end\r\n"
    ).encode()
    return raw, msgid


def auth(s: smtplib.SMTP, mech: str, user: str, password: str):
    s.user, s.password = user, password
    obj = {"PLAIN": s.auth_plain, "LOGIN": s.auth_login}[mech]
    return s.auth(mech, obj)


def read_jsonl(maildir: str) -> list[dict]:
    path = os.path.join(maildir, "messages.jsonl")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def check_stored(maildir: str, rec: dict, raw: bytes, msgid: str,
                 rcpts: list[str], subject: str) -> None:
    assert set(rec) == {"seq", "message_id", "mail_from", "rcpt_tos",
                        "subject", "received_at"}, rec
    assert rec["message_id"] == msgid, rec
    assert rec["mail_from"] == USER, rec
    assert rec["rcpt_tos"] == rcpts, rec
    assert rec["subject"] == subject, (rec["subject"], subject)
    assert RFC3339_UTC.match(rec["received_at"]), rec
    eml = os.path.join(maildir, f"{rec['seq']:06d}.eml")
    with open(eml, "rb") as f:
        got = f.read()
    assert got == raw, f"{eml} differs from what was sent:\n{got!r}\n{raw!r}"


def expect_smtp_error(fn, code: int, text: str = None):
    try:
        fn()
    except smtplib.SMTPResponseException as e:
        assert e.smtp_code == code, (e.smtp_code, e.smtp_error)
        if text is not None:
            assert e.smtp_error.decode() == text, e.smtp_error
        return e
    except smtplib.SMTPRecipientsRefused as e:
        codes = {c for c, _ in e.recipients.values()}
        assert codes == {code}, e.recipients
        return e
    except smtplib.SMTPSenderRefused as e:
        assert e.smtp_code == code, (e.smtp_code, e.smtp_error)
        return e
    raise AssertionError(f"expected an SMTP {code} error, got success")


def send(s: smtplib.SMTP, raw: bytes, rcpts: list[str]) -> None:
    refused = s.sendmail(USER, rcpts, raw)
    assert refused == {}, refused


# --------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------

def t_plain(tmp, certs):
    md = os.path.join(tmp, "plain")
    with Server(tmp, "plain", "--maildir", md) as srv:
        rcpts = ["ops@example.test", "oncall@example.test"]
        with SMTPLocal(srv.port) as s:
            code, ehlo = s.ehlo()
            assert code == 250 and b"STARTTLS" not in ehlo, ehlo
            raw1, id1 = make_message(1)
            send(s, raw1, rcpts)
            raw2, id2 = make_message(2, "plain ascii subject")
            send(s, raw2, rcpts[:1])
            # Raw UTF-8 (8BITMIME) subject, and no Message-ID at all.
            raw3, _ = make_message(3, "Grüße ✓ 8bit")
            raw3 = re.sub(rb"Message-ID: [^\r]*\r\n", b"", raw3)
            send(s, raw3, rcpts[1:])
        recs = read_jsonl(md)
        assert [r["seq"] for r in recs] == [1, 2, 3], recs
        check_stored(md, recs[0], raw1, id1, rcpts, "Alert ✓ n°1")
        check_stored(md, recs[1], raw2, id2, rcpts[:1], "plain ascii subject")
        check_stored(md, recs[2], raw3, None, rcpts[1:], "Grüße ✓ 8bit")
        assert sorted(os.listdir(md)) == [
            "000001.eml", "000002.eml", "000003.eml", "messages.jsonl"], \
            os.listdir(md)
        assert srv.stop() == 0
    # A restart on the same maildir continues the sequence.
    with Server(tmp, "plain2", "--maildir", md) as srv:
        raw4, id4 = make_message(4)
        with SMTPLocal(srv.port) as s:
            send(s, raw4, ["ops@example.test"])
        recs = read_jsonl(md)
        assert [r["seq"] for r in recs] == [1, 2, 3, 4], recs
        check_stored(md, recs[3], raw4, id4, ["ops@example.test"],
                     "Alert ✓ n°4")
        assert srv.stop(signal.SIGINT) == 0, "SIGINT exit code"


def t_plain_auth(tmp, certs):
    md = os.path.join(tmp, "plain_auth")
    pwfile = os.path.join(tmp, "plain_auth.pw")
    with open(pwfile, "w") as f:
        f.write(PASSWORD + "\n")
    with Server(tmp, "plain_auth", "--maildir", md, "--auth-user", USER,
                "--auth-password-file", pwfile) as srv:
        raw, msgid = make_message(1)
        with SMTPLocal(srv.port) as s:
            code, ehlo = s.ehlo()
            assert b"AUTH LOGIN PLAIN" in ehlo, ehlo
            expect_smtp_error(lambda: send(s, raw, ["ops@example.test"]),
                              530, "5.7.0 Authentication required")
            expect_smtp_error(lambda: auth(s, "PLAIN", USER, "nope"), 535,
                              "5.7.8 Authentication credentials invalid")
            expect_smtp_error(lambda: auth(s, "LOGIN", "other", PASSWORD),
                              535, "5.7.8 Authentication credentials invalid")
            code, _ = auth(s, "LOGIN", USER, PASSWORD)
            assert code == 235
            send(s, raw, ["ops@example.test"])
        recs = read_jsonl(md)
        assert len(recs) == 1
        check_stored(md, recs[0], raw, msgid, ["ops@example.test"],
                     "Alert ✓ n°1")
        assert srv.stop() == 0


def t_starttls_auth(tmp, certs):
    md = os.path.join(tmp, "starttls")
    pwfile = os.path.join(tmp, "starttls.pw")
    with open(pwfile, "w") as f:
        f.write("wrong-password\n")
    ctx = client_ctx(certs["ca"])
    with Server(tmp, "starttls", "--maildir", md,
                "--tls-cert", certs["cert"], "--tls-key", certs["key"],
                "--require-starttls", "--auth-user", USER,
                "--auth-password-file", pwfile) as srv:
        raw, msgid = make_message(1)
        # Before STARTTLS: MAIL refused with 530, AUTH not offered.
        with SMTPLocal(srv.port) as s:
            code, ehlo = s.ehlo()
            assert b"STARTTLS" in ehlo and b"AUTH" not in ehlo, ehlo
            expect_smtp_error(lambda: send(s, raw, ["ops@example.test"]),
                              530, "Must issue a STARTTLS command first")
        # The certificate must not verify without ca.pem.
        with SMTPLocal(srv.port) as s:
            try:
                s.starttls(context=ssl.create_default_context())
            except ssl.SSLCertVerificationError:
                pass
            else:
                raise AssertionError("cert verified without trusting ca.pem")
        with SMTPLocal(srv.port, tls_name="localhost") as s:
            s.starttls(context=ctx)
            code, ehlo = s.ehlo()
            assert b"AUTH LOGIN PLAIN" in ehlo and b"STARTTLS" not in ehlo
            assert s.sock.version() in ("TLSv1.2", "TLSv1.3")
            # After STARTTLS but before AUTH: 530.
            expect_smtp_error(lambda: send(s, raw, ["ops@example.test"]),
                              530, "5.7.0 Authentication required")
            # File holds the wrong password: 535.
            expect_smtp_error(lambda: auth(s, "PLAIN", USER, PASSWORD), 535,
                              "5.7.8 Authentication credentials invalid")
            # Fix the file: the next attempt succeeds, no restart needed.
            with open(pwfile, "w") as f:
                f.write(PASSWORD + "\n")
            code, resp = auth(s, "PLAIN", USER, PASSWORD)
            assert code == 235, (code, resp)
            send(s, raw, ["ops@example.test"])
        # The IP SAN verifies too; LOGIN works as well.
        raw2, id2 = make_message(2)
        with SMTPLocal(srv.port, tls_name="127.0.0.1") as s:
            s.starttls(context=ctx)
            s.ehlo()
            assert auth(s, "LOGIN", USER, PASSWORD)[0] == 235
            send(s, raw2, ["ops@example.test"])
        recs = read_jsonl(md)
        assert [r["seq"] for r in recs] == [1, 2], recs
        check_stored(md, recs[0], raw, msgid, ["ops@example.test"],
                     "Alert ✓ n°1")
        check_stored(md, recs[1], raw2, id2, ["ops@example.test"],
                     "Alert ✓ n°2")
        # SIGTERM while a client session is open still exits 0.
        idle = SMTPLocal(srv.port)
        idle.ehlo()
        try:
            assert srv.stop() == 0
        finally:
            idle.close()


def t_starttls_optional(tmp, certs):
    md = os.path.join(tmp, "starttls_opt")
    with Server(tmp, "starttls_opt", "--maildir", md,
                "--tls-cert", certs["cert"], "--tls-key", certs["key"]) as srv:
        raw1, id1 = make_message(1)
        raw2, id2 = make_message(2)
        with SMTPLocal(srv.port) as s:       # plaintext is allowed
            code, ehlo = s.ehlo()
            assert b"STARTTLS" in ehlo, ehlo
            send(s, raw1, ["ops@example.test"])
        with SMTPLocal(srv.port) as s:       # and so is STARTTLS
            s.starttls(context=client_ctx(certs["ca"]))
            send(s, raw2, ["ops@example.test"])
        recs = read_jsonl(md)
        assert [r["message_id"] for r in recs] == [id1, id2], recs
        assert srv.stop() == 0


def t_implicit_tls(tmp, certs):
    md = os.path.join(tmp, "smtps")
    pwfile = os.path.join(tmp, "smtps.pw")
    with open(pwfile, "w") as f:
        f.write(PASSWORD)                  # no trailing newline
    ctx = client_ctx(certs["ca"])
    with Server(tmp, "smtps", "--maildir", md, "--implicit-tls",
                "--tls-cert", certs["cert"], "--tls-key", certs["key"],
                "--auth-user", USER, "--auth-password-file", pwfile) as srv:
        # A plaintext client gets no greeting.
        try:
            with smtplib.SMTP("127.0.0.1", srv.port, timeout=1) as s:
                s.ehlo()
        except (smtplib.SMTPException, OSError):
            pass
        else:
            raise AssertionError("plaintext SMTP worked on the SMTPS port")
        raw, msgid = make_message(1)
        with SMTPSLocal(srv.port, ctx) as s:
            code, ehlo = s.ehlo()
            assert b"STARTTLS" not in ehlo and b"AUTH LOGIN PLAIN" in ehlo
            expect_smtp_error(lambda: send(s, raw, ["ops@example.test"]),
                              530, "5.7.0 Authentication required")
            expect_smtp_error(lambda: auth(s, "LOGIN", USER, "bad"), 535,
                              "5.7.8 Authentication credentials invalid")
            assert auth(s, "PLAIN", USER, PASSWORD)[0] == 235
            send(s, raw, ["ops@example.test"])
        recs = read_jsonl(md)
        assert len(recs) == 1, recs
        check_stored(md, recs[0], raw, msgid, ["ops@example.test"],
                     "Alert ✓ n°1")
        assert srv.stop() == 0


def t_fail_file(tmp, certs):
    md = os.path.join(tmp, "fail")
    flag = os.path.join(tmp, "fail.flag")
    open(flag, "w").close()
    with Server(tmp, "fail", "--maildir", md, "--fail-file", flag) as srv:
        raw, msgid = make_message(1)
        with SMTPLocal(srv.port) as s:
            e = expect_smtp_error(
                lambda: send(s, raw, ["ops@example.test"]), 451,
                "4.3.0 temporarily unavailable")
            assert isinstance(e, smtplib.SMTPDataError), type(e)
            assert read_jsonl(md) == []
            assert [n for n in os.listdir(md) if n.endswith(".eml")] == []
            os.unlink(flag)
            s.rset()
            send(s, raw, ["ops@example.test"])   # the retry goes through
        recs = read_jsonl(md)
        assert len(recs) == 1 and recs[0]["seq"] == 1, recs
        check_stored(md, recs[0], raw, msgid, ["ops@example.test"],
                     "Alert ✓ n°1")
        assert srv.stop() == 0


def t_delay_data(tmp, certs):
    md = os.path.join(tmp, "delay")
    with Server(tmp, "delay", "--maildir", md,
                "--delay-data-secs", "1.5") as srv:
        raw, msgid = make_message(1)
        with SMTPLocal(srv.port) as s:
            t0 = time.monotonic()
            send(s, raw, ["ops@example.test"])
            took = time.monotonic() - t0
        assert took >= 1.4, f"250 came after {took:.2f}s"
        # A client that gives up mid-DATA: the message is already stored
        # (the .eml is written before the 250 answer).
        raw2, id2 = make_message(2)
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        f = sock.makefile("rb")

        def reply():
            line = f.readline()
            while line[3:4] == b"-":
                line = f.readline()
            return line

        assert reply().startswith(b"220")
        for cmd, want in ((b"EHLO client.test", b"250"),
                          (f"MAIL FROM:<{USER}>".encode(), b"250"),
                          (b"RCPT TO:<ops@example.test>", b"250"),
                          (b"DATA", b"354")):
            sock.sendall(cmd + b"\r\n")
            got = reply()
            assert got.startswith(want), (cmd, got)
        sock.sendall(re.sub(rb"(?m)^\.", b"..", raw2) + b".\r\n")
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and len(read_jsonl(md)) < 2:
            time.sleep(0.05)
        f.close()
        sock.close()                 # killed before the 250 arrives
        recs = read_jsonl(md)
        assert [r["message_id"] for r in recs] == [msgid, id2], recs
        check_stored(md, recs[1], raw2, id2, ["ops@example.test"],
                     "Alert ✓ n°2")
        time.sleep(1.0)              # the server outlives the dropped client
        assert srv.proc.poll() is None
        with SMTPLocal(srv.port) as s:
            assert s.noop()[0] == 250
        assert srv.stop() == 0


def t_bad_args(tmp, certs):
    for args in (["--require-starttls"], ["--implicit-tls"],
                 ["--tls-cert", certs["cert"]], ["--auth-user", "x"]):
        p = subprocess.run([sys.executable, SERVER, *args],
                           capture_output=True, timeout=30)
        assert p.returncode == 2 and p.stdout == b"", (args, p)


CHECKS = [t_plain, t_plain_auth, t_starttls_auth, t_starttls_optional,
          t_implicit_tls, t_fail_file, t_delay_data, t_bad_args]


def main() -> int:
    passed = failed = 0
    with tempfile.TemporaryDirectory(prefix="smtp-selftest-") as tmp:
        certdir = os.path.join(tmp, "certs")
        subprocess.run(["bash", MAKE_CERT, certdir], check=True)
        certs = {k: os.path.join(certdir, f"{k}.pem")
                 for k in ("ca", "cert", "key")}
        for check in CHECKS:
            t0 = time.monotonic()
            try:
                check(tmp, certs)
            except Exception:
                failed += 1
                print(f"FAIL {check.__name__}", flush=True)
                traceback.print_exc()
                for name in sorted(os.listdir(tmp)):
                    if name.endswith(".stderr"):
                        with open(os.path.join(tmp, name)) as fh:
                            text = fh.read().strip()
                        if text:
                            print(f"--- {name}\n{text}")
            else:
                passed += 1
                print(f"ok   {check.__name__} "
                      f"({time.monotonic() - t0:.1f}s)", flush=True)
    print(f"smtp-selftest: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
