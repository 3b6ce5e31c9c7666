"""TLS mail clients for the mailauthd e2e suite (scenario 9), driven by tests/e2e/tls.rs.

Usage: python3 tls_clients.py '<json spec>'   ->   one JSON object on stdout.

spec: proto ("imap", "imaps", "pop3s", "smtp"), port, starttls (bool), ca (the test CA that
signed nginx's certificate), cert/key (a client certificate, or null), method ("login" for a
cleartext password, "external" for SASL EXTERNAL), user, pass, authzid. The answer: "ok"
(bool), "text" (the server's answer to the login), "tls" (the TLS version, or null), and
"after" (the backend's answer to one command after a login, or null).
"""

import base64
import imaplib
import json
import poplib
import smtplib
import ssl
import sys

TIMEOUT = 15


def context(spec):
    ctx = ssl.create_default_context(cafile=spec["ca"])
    ctx.check_hostname = False
    if spec.get("cert"):
        ctx.load_cert_chain(spec["cert"], spec["key"])
    return ctx


def b64(s):
    return base64.b64encode(s.encode("utf-8")).decode("ascii") or "="


def text(v):
    if isinstance(v, (list, tuple)):
        return " ".join(text(x) for x in v)
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return str(v)


class ProxiedImap(imaplib.IMAP4):
    """IMAP behind a PROXY-protocol balancer: the v1 header (haproxy's proxy-protocol.txt
    section 2.1) names spec["proxy_from"] as the client."""

    def __init__(self, port, proxy_from):
        self.proxy_from = proxy_from
        super().__init__("127.0.0.1", port, timeout=TIMEOUT)

    def _create_socket(self, timeout):
        sock = super()._create_socket(timeout)
        sock.sendall(("PROXY TCP4 %s 127.0.0.1 40000 %d\r\n" % (self.proxy_from, self.port)).encode("ascii"))
        return sock


def imap(spec):
    if spec.get("proxy_from"):
        c = ProxiedImap(spec["port"], spec["proxy_from"])
    elif spec["proto"] == "imaps":
        c = imaplib.IMAP4_SSL("127.0.0.1", spec["port"], ssl_context=context(spec), timeout=TIMEOUT)
    else:
        c = imaplib.IMAP4("127.0.0.1", spec["port"], timeout=TIMEOUT)
        if spec["starttls"]:
            c.starttls(ssl_context=context(spec))
    tls = c.sock.version() if isinstance(c.sock, ssl.SSLSocket) else None
    try:
        if spec["method"] == "external":
            authzid = spec["authzid"].encode("utf-8")
            typ, dat = c.authenticate("EXTERNAL", lambda _: authzid)
        else:
            typ, dat = c.login(spec["user"], spec["pass"])
    except imaplib.IMAP4.error as e:
        return {"ok": False, "text": text(e.args), "tls": tls, "after": None}
    after = c.select("INBOX")
    c.logout()
    return {"ok": typ == "OK", "text": text(dat), "tls": tls, "after": text(after)}


def pop3(spec):
    c = poplib.POP3_SSL("127.0.0.1", spec["port"], context=context(spec), timeout=TIMEOUT)
    tls = c.sock.version()
    try:
        if spec["method"] == "external":
            r = c._shortcmd("AUTH EXTERNAL " + b64(spec["authzid"]))
        else:
            c.user(spec["user"])
            r = c.pass_(spec["pass"])
    except poplib.error_proto as e:
        return {"ok": False, "text": text(e.args), "tls": tls, "after": None}
    after = c.stat()
    c.quit()
    return {"ok": True, "text": text(r), "tls": tls, "after": text(after)}


def smtp(spec):
    c = smtplib.SMTP("127.0.0.1", spec["port"], timeout=TIMEOUT)
    c.ehlo("client.test")
    if spec["starttls"]:
        c.starttls(context=context(spec))
        c.ehlo("client.test")
    tls = c.sock.version() if isinstance(c.sock, ssl.SSLSocket) else None
    try:
        if spec["method"] == "external":
            code, msg = c.docmd("AUTH", "EXTERNAL " + b64(spec["authzid"]))
        else:
            # One method only: login() would try the next one on a refusal, after nginx
            # has closed the session.
            c.user, c.password = spec["user"], spec["pass"]
            code, msg = c.auth("PLAIN", c.auth_plain)
    except smtplib.SMTPResponseException as e:
        return {"ok": False, "text": "%d %s" % (e.smtp_code, text(e.smtp_error)), "tls": tls, "after": None}
    answer = "%d %s" % (code, text(msg))
    if code != 235:
        return {"ok": False, "text": answer, "tls": tls, "after": None}
    after = c.docmd("NOOP")
    c.quit()
    return {"ok": True, "text": answer, "tls": tls, "after": "%d %s" % (after[0], text(after[1]))}


def mx(spec):
    """An inbound MX session from spec["source"]: MAIL FROM, RCPT TO, and DATA if accepted."""
    c = smtplib.SMTP(timeout=TIMEOUT, source_address=(spec["source"], 0))
    c.connect("127.0.0.1", spec["port"])
    c.ehlo("client.test")
    c.mail(spec["mail_from"])
    code, msg = c.rcpt(spec["rcpt_to"])
    out = {"ok": code == 250, "text": "%d %s" % (code, text(msg)), "tls": None, "after": None}
    if code == 250:
        code, msg = c.data(spec["body"])
        out["after"] = "%d %s" % (code, text(msg))
    try:
        c.quit()
    except smtplib.SMTPServerDisconnected:
        pass
    return out


def main():
    spec = json.loads(sys.argv[1])
    proto = spec["proto"]
    try:
        if proto in ("imap", "imaps"):
            out = imap(spec)
        elif proto == "pop3s":
            out = pop3(spec)
        elif proto == "smtp":
            out = smtp(spec)
        elif proto == "mx":
            out = mx(spec)
        else:
            raise ValueError("unknown proto " + proto)
    except (OSError, EOFError, smtplib.SMTPException, imaplib.IMAP4.abort) as e:
        out = {"ok": False, "text": "connection: %r" % (e,), "tls": None, "after": None}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
