"""Mail clients for the mailauthd e2e suite, driven by the Rust tests.

Usage: python3 clients.py '<json spec>'   ->   one JSON object on stdout.

The spec's "proto" picks the client: imap (imaplib; raw socket for literals), pop3 (poplib),
smtp (smtplib), smtp_loop (many smtplib logins in a row). Every socket has a timeout and every
loop a count and time bound, so a client never hangs the suite.
"""

import base64
import hashlib
import hmac
import imaplib
import json
import os
import poplib
import smtplib
import socket
import sys
import time

TIMEOUT = 15


def b64(b):
    return base64.b64encode(b).decode("ascii")


def cram(user, password, challenge_b64):
    salt = base64.b64decode(challenge_b64)
    digest = hmac.new(password.encode("utf-8"), salt, hashlib.md5).hexdigest()
    return b64(user.encode("utf-8") + b" " + digest.encode("ascii"))


def text(b):
    if isinstance(b, bytes):
        return b.decode("utf-8", "replace")
    return str(b)


# ---------------------------------------------------------------- IMAP


class RawImap:
    """Just enough IMAP to send LOGIN with both arguments as synchronising literals."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.f = self.sock.makefile("rb")
        self.greeting = self.line()
        self.n = 0

    def line(self):
        ln = self.f.readline()
        if not ln:
            raise EOFError("connection closed")
        return ln.rstrip(b"\r\n")

    def tagged(self, tag):
        """Returns (untagged lines, tagged line)."""
        seen = []
        for _ in range(10000):
            ln = self.line()
            m = ln
            if ln.endswith(b"}") and b"{" in ln:
                size = int(ln[ln.rindex(b"{") + 1 : -1])
                m = ln + b"\r\n" + self.f.read(size)
            if ln.startswith(tag + b" "):
                return seen, ln
            seen.append(m)
        raise RuntimeError("too many lines")

    def cmd(self, s):
        self.n += 1
        tag = b"r%d" % self.n
        self.sock.sendall(tag + b" " + s + b"\r\n")
        return self.tagged(tag)

    def login_literal(self, user, password):
        self.n += 1
        tag = b"r%d" % self.n
        u, p = user.encode("utf-8"), password.encode("utf-8")
        self.sock.sendall(tag + b" LOGIN {%d}\r\n" % len(u))
        cont = self.line()
        if not cont.startswith(b"+"):
            return cont
        self.sock.sendall(u + b" {%d}\r\n" % len(p))
        cont = self.line()
        if not cont.startswith(b"+"):
            return cont
        self.sock.sendall(p + b"\r\n")
        return self.tagged(tag)[1]


def imap(spec):
    out = {"attempts": []}
    if any(a["how"] == "literal" for a in spec["attempts"]):
        return imap_raw(spec, out)
    m = imaplib.IMAP4("127.0.0.1", spec["port"], timeout=TIMEOUT)
    m._encoding = "utf-8"  # send UTF-8 quoted strings as they are
    out["greeting"] = text(m.welcome)
    logged_in = False
    for a in spec["attempts"]:
        t0 = time.monotonic()
        res = {"how": a["how"]}
        try:
            if a["how"] == "quoted":
                typ, dat = m._simple_command("LOGIN", m._quote(a["user"]), m._quote(a["pass"]))
                res["ok"] = typ == "OK"
                res["resp"] = "%s %s" % (typ, text(dat[-1]))
            elif a["how"] == "cram":
                m.user, m.password = a["user"], a["pass"]
                try:
                    typ, dat = m.authenticate("CRAM-MD5", m._CRAM_MD5_AUTH)
                    res["ok"] = typ == "OK"
                    res["resp"] = "%s %s" % (typ, text(dat[-1]))
                except imaplib.IMAP4.error as e:
                    if isinstance(e, imaplib.IMAP4.abort):
                        raise
                    res["ok"] = False
                    res["resp"] = "NO %s" % e
            else:
                raise ValueError(a["how"])
        except (imaplib.IMAP4.abort, OSError, EOFError) as e:
            res["ok"] = False
            res["closed"] = True
            res["resp"] = "closed: %s" % e
        res["secs"] = time.monotonic() - t0
        out["attempts"].append(res)
        if res.get("closed"):
            out["closed"] = True
            return out
        if res["ok"]:
            logged_in = True
            m.state = "AUTH"
            break
    if logged_in:
        typ, dat = m.select("INBOX")
        out["select"] = "%s %s" % (typ, text(dat[-1]))
        typ, dat = m.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        out["fetch"] = text(dat[0][1]).strip() if typ == "OK" else typ
        m.logout()
    else:
        out["closed"] = probe_imap(m)
    return out


def probe_imap(m):
    """True if nginx has closed the connection (NOOP gets no answer)."""
    try:
        m.noop()
        return False
    except (imaplib.IMAP4.abort, OSError, EOFError):
        return True


def imap_raw(spec, out):
    c = RawImap(spec["port"])
    out["greeting"] = text(c.greeting)
    for a in spec["attempts"]:
        t0 = time.monotonic()
        res = {"how": a["how"]}
        try:
            ln = c.login_literal(a["user"], a["pass"])
            resp = ln.split(b" ", 1)[1]
            res["ok"] = resp.startswith(b"OK")
            res["resp"] = text(resp)
        except (OSError, EOFError) as e:
            res.update(ok=False, closed=True, resp="closed: %s" % e)
        res["secs"] = time.monotonic() - t0
        out["attempts"].append(res)
        if res.get("closed"):
            out["closed"] = True
            return out
        if res["ok"]:
            _, ln = c.cmd(b'SELECT "INBOX"')
            out["select"] = text(ln.split(b" ", 1)[1])
            seen, ln = c.cmd(b"FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            out["fetch"] = text(b"\n".join(seen))
            c.cmd(b"LOGOUT")
            return out
    return out


# ---------------------------------------------------------------- POP3


def pop3(spec):
    out = {"attempts": []}
    p = poplib.POP3("127.0.0.1", spec["port"], timeout=TIMEOUT)
    out["greeting"] = text(p.getwelcome())
    for a in spec["attempts"]:
        t0 = time.monotonic()
        res = {"how": a["how"]}
        try:
            if a["how"] == "userpass":
                p.user(a["user"])
                r = p.pass_(a["pass"])
            elif a["how"] == "apop":
                r = p.apop(a["user"], a["pass"])
            elif a["how"] == "cram":
                ch = p._shortcmd("AUTH CRAM-MD5")
                r = p._shortcmd(cram(a["user"], a["pass"], ch[2:].strip()))
            else:
                raise ValueError(a["how"])
            res.update(ok=True, resp=text(r))
        except poplib.error_proto as e:
            res.update(ok=False, resp=text(e.args[0]))
        except (OSError, EOFError) as e:
            res.update(ok=False, closed=True, resp="closed: %s" % e)
        res["secs"] = time.monotonic() - t0
        out["attempts"].append(res)
        if res.get("closed"):
            out["closed"] = True
            return out
        if res["ok"]:
            out["stat"] = list(p.stat())
            resp, lines, _ = p.retr(1)
            out["retr"] = [text(l) for l in lines]
            p.quit()
            return out
    try:
        p.noop()
        out["closed"] = False
    except (poplib.error_proto, OSError, EOFError):
        out["closed"] = True
    return out


# ---------------------------------------------------------------- SMTP


def smtp_auth(s, a):
    user, pw = a["user"].encode("utf-8"), a["pass"].encode("utf-8")
    if a["how"] == "plain":
        return s.docmd("AUTH", "PLAIN " + b64(b"\0" + user + b"\0" + pw))
    if a["how"] == "login":
        code, r = s.docmd("AUTH", "LOGIN")
        if code != 334:
            return code, r
        code, r = s.docmd(b64(user))
        if code != 334:
            return code, r
        return s.docmd(b64(pw))
    if a["how"] == "cram":
        code, r = s.docmd("AUTH", "CRAM-MD5")
        if code != 334:
            return code, r
        return s.docmd(cram(a["user"], a["pass"], r.decode("ascii")))
    raise ValueError(a["how"])


def smtp(spec):
    out = {"attempts": []}
    s = smtplib.SMTP("127.0.0.1", spec["port"], local_hostname="client.test", timeout=TIMEOUT)
    s.ehlo("client.test")
    out["ehlo"] = text(s.ehlo_resp)
    authed = not spec["attempts"]
    for a in spec["attempts"]:
        t0 = time.monotonic()
        res = {"how": a["how"]}
        try:
            code, r = smtp_auth(s, a)
            res.update(ok=code == 235, code=code, resp="%d %s" % (code, text(r)))
        except (smtplib.SMTPServerDisconnected, OSError) as e:
            res.update(ok=False, closed=True, resp="closed: %s" % e)
        res["secs"] = time.monotonic() - t0
        out["attempts"].append(res)
        if res.get("closed"):
            out["closed"] = True
            return out
        if res["ok"]:
            authed = True
            break
    if authed and spec.get("mail_from"):
        try:
            code, r = s.mail(spec["mail_from"])
            out["mail"] = "%d %s" % (code, text(r))
            code, r = s.rcpt(spec["rcpt_to"])
            out["rcpt"] = "%d %s" % (code, text(r))
            if code == 250:
                code, r = s.data(spec["body"].encode("utf-8"))
                out["data"] = "%d %s" % (code, text(r))
            s.quit()
        except (smtplib.SMTPServerDisconnected, OSError) as e:
            out["closed"] = True
            out["error"] = str(e)
        return out
    try:
        code, _ = s.noop()
        out["closed"] = False
    except (smtplib.SMTPServerDisconnected, OSError):
        out["closed"] = True
    return out


def smtp_loop(spec):
    """Logs in again and again (AUTH PLAIN, new connection each time) until the stop file
    exists, `count` logins were made, or `secs` have passed."""
    results = []
    end = time.monotonic() + spec["secs"]
    for _ in range(spec["count"]):
        if os.path.exists(spec["stop_file"]) or time.monotonic() > end:
            break
        t0 = time.monotonic()
        try:
            s = smtplib.SMTP("127.0.0.1", spec["port"], local_hostname="loop.test", timeout=TIMEOUT)
            s.ehlo("loop.test")
            code, r = smtp_auth(s, {"how": "plain", "user": spec["user"], "pass": spec["pass"]})
            try:
                s.quit()
            except (smtplib.SMTPServerDisconnected, OSError):
                pass
            results.append({"code": code, "resp": text(r), "at": t0})
        except (smtplib.SMTPException, OSError) as e:
            results.append({"code": 0, "resp": "error: %s" % e, "at": t0})
    return {"results": results}


def main():
    spec = json.loads(sys.argv[1])
    fn = {"imap": imap, "pop3": pop3, "smtp": smtp, "smtp_loop": smtp_loop}[spec["proto"]]
    print(json.dumps(fn(spec)))


if __name__ == "__main__":
    main()
