#!/usr/bin/env python3
"""Writes fuzz/seeds/<target>/ from the project's own test material: the nginx requests
captured in protocol.md §6 (as replayed by tests/it/vectors.rs and the auth_http unit
tests), the reference tools' hash fixtures, the example users file and config, and the
http-basic test fixtures. Run from the repository root; the seeds are committed."""
import ast
import hashlib
import pathlib
import re

root = pathlib.Path(__file__).resolve().parent.parent
seeds = root / "fuzz" / "seeds"


def put(target, data):
    d = seeds / target
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (d / hashlib.sha1(data).hexdigest()[:16]).write_bytes(data)


# Rust byte-string literals with the request line of an auth_http request. Their escapes
# (\r \n \xNN \t) read the same in Python.
literal = re.compile(rb'b"((?:GET|POST) [^"\\]*(?:\\.[^"\\]*)*)"')
for src in ["tests/it/vectors.rs", "tests/it/malformed.rs", "src/auth_http/tests.rs"]:
    for m in literal.finditer((root / src).read_bytes()):
        if b"{" in m.group(1):
            continue  # a format! template, not bytes
        req = ast.literal_eval("b\"" + m.group(1).decode("latin-1") + "\"")
        put("auth_request", req)
        for line in req.split(b"\n"):
            if line.lower().startswith((b"auth-pass:", b"auth-user:", b"auth-ssl-cert:")):
                put("percent_decode", line.split(b":", 1)[1].strip())

fixtures = [l.split("\t") for l in (root / "tests/fixtures/hashes.txt").read_text().splitlines() if l]
for i, (label, clear, stored) in enumerate(fixtures):
    put("stored_hash", stored)
put("hash_fixtures", bytes([0, 0]))
put("hash_fixtures", bytes([1, 1]) + b"x")
put("hash_fixtures", bytes([7, 3]) + b"secret")

users = [(root / "examples/users.htpasswd").read_bytes()]
users += [p.read_bytes() for p in sorted((root / "tests/fixtures/http-basic").glob("*.htpasswd"))]
# The tools' default costs take seconds to load (one dummy per cost); the fuzz target skips
# such files, so they are left out of its seeds.
users.append("".join(f"{l}:{s}\n" for l, _, s in fixtures if not l.endswith("-default")).encode())
users.append(
    b"# passwd-file\r\nu:{PLAIN}p:1000:1000::/home/u::nologin\r\n"
    b"v:{PLAIN}q:::::allow_nets=192.0.2.0/24,::1\r\nu:{PLAIN}older\r\n"
)
users.append(b"\xef\xbb\xbfalice:{PLAIN}a\nbob:$apr1$x\nbob:{PLAIN}b\n")
for u in users:
    put("users_file", u)

put("config", (root / "examples/mailauthd.toml").read_bytes())
put(
    "config",
    '[[source]]\nkind = "http-basic"\nurl = "http://127.0.0.1:8080/auth"\n'
    'timeout = "2s"\nserver_header = "X-Mail-Server"\nport_header = "X-Mail-Port"\nheaders = { X-Key = "k" }\n\n[[source]]\nkind = "htpasswd"\npath = "u"\n'
    'protocols = ["imap"]\n[route]\nimap = "[::1]:143"\n',
)

put("http_basic_answer", b"\x00\xc8")
put("http_basic_answer", b"\x00\xc8X-Mail-Server: [2001:db8::1]\nX-Mail-Port: 993\n")
put("http_basic_answer", b"\x00\xc8X-Mail-Server: Mail.Example.org\nX-Mail-Port: 143\n")
put("http_basic_answer", b"\x01\x91WWW-Authenticate: Basic realm=x\n")
put("http_basic_answer", b"\x01\x2eLocation: /login\n")

# ldap_entry: a login, then the host, ipServicePort, uid and userPassword values, split at
# 0xff. The logins of tests/it/ldap.rs's injection checks and RFC 4514's examples.
for login in [b"alice", b"*", b"al*", b"alice)(uid=*", b"alice\x00", b"*)(|(uid=*", b"\\2a",
              b'James "Jim" Smith, III', b" #lead", b"trail ", b"x,ou=admins", b"bob@example.org"]:
    put("ldap_entry", login)
put("ldap_entry", b"bob@example.org\xff192.0.2.30\xff1143\xffbob\xff{SSHA}c2FsdHNhbHRzYWx0c2FsdA==")
put("ldap_entry", b"mrose\xff[2001:db8::7]:993\xff\xffM Rose\xff{PLAIN}tanstaaf")
put("ldap_entry", b"tim\xffmail.example.org\xff0\xffTim\xff{CLEARTEXT}tanstaaftanstaaf")
