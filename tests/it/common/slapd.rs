//! A throw-away OpenLDAP `slapd` on loopback ports: a `slapd.conf` and an MDB database in
//! a temp dir, the directory loaded with `ldapadd`, password hashes made by `slappasswd`,
//! and (for TLS) a test CA and server certificate made by `openssl`. Killed on drop.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::process::Running;
use super::{READY_DEADLINE, free_port};

/// The directory's suffix.
pub const SUFFIX: &str = "dc=example,dc=org";
/// The people's base.
pub const PEOPLE: &str = "ou=people,dc=example,dc=org";
/// The service account that searches.
pub const READER_DN: &str = "cn=reader,dc=example,dc=org";
/// Its password.
pub const READER_PW: &str = "reader-pw";
const ADMIN_DN: &str = "cn=admin,dc=example,dc=org";
const ADMIN_PW: &str = "admin-pw";

/// A running slapd.
pub struct Slapd {
    process: Option<Running>,
    /// The `ldap://` port (StartTLS offered when TLS is on).
    pub port: u16,
    /// The `ldaps://` port, when TLS is on.
    pub tls_port: Option<u16>,
    dir: tempfile::TempDir,
}

impl Slapd {
    /// Starts slapd without TLS.
    pub fn start() -> Slapd {
        Slapd::start_with(false)
    }

    /// Starts slapd with a test CA: StartTLS on the `ldap://` port and an `ldaps://` port.
    pub fn start_tls() -> Slapd {
        Slapd::start_with(true)
    }

    fn start_with(tls: bool) -> Slapd {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("db")).expect("db dir");
        if tls {
            make_certificates(dir.path());
        }
        write_config(dir.path(), tls);
        let mut slapd = Slapd {
            process: None,
            port: free_port(),
            tls_port: tls.then(free_port),
            dir,
        };
        slapd.run();
        let data = directory_ldif();
        slapd.ldap_tool("ldapadd", &data);
        slapd
    }

    /// Starts slapd again on the same ports and database (after [`Slapd::kill`]).
    pub fn run(&mut self) {
        let mut urls = format!("ldap://127.0.0.1:{}/", self.port);
        if let Some(p) = self.tls_port {
            urls.push_str(&format!(" ldaps://127.0.0.1:{p}/"));
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("slapd.log"))
            .expect("log");
        let mut cmd = Command::new("slapd");
        // `-d stats`: stay in the foreground (a daemonised slapd would escape the guard) and
        // log every operation (`BIND dn=...`), which the tests count.
        cmd.args(["-d", "stats", "-f"])
            .arg(self.dir.path().join("slapd.conf"))
            .args(["-h", &urls])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        self.process = Some(Running::start("slapd (Debian package slapd)", cmd));
        let end = Instant::now() + READY_DEADLINE;
        loop {
            if let Some(status) = self.process.as_mut().and_then(Running::exited) {
                panic!("slapd exited with {status}: {}", self.log());
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            assert!(Instant::now() < end, "slapd did not listen in time: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills slapd (the database stays for [`Slapd::run`]).
    pub fn kill(&mut self) {
        self.process = None;
    }

    /// Sends `signal` (`STOP`, `CONT`). After `STOP`, waits until every thread of slapd is
    /// stopped: kill(2) returns before a thread running on another core has stopped.
    pub fn signal(&self, signal: &str) {
        let process = self.process.as_ref().expect("slapd running");
        process.signal(signal);
        if signal == "STOP" {
            let tasks = format!("/proc/{}/task", process.pid());
            super::wait_until(Duration::from_secs(5), "slapd's threads to stop", || {
                std::fs::read_dir(&tasks).is_ok_and(|dir| {
                    dir.flatten().all(|task| {
                        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
                        // The state follows the parenthesised command name.
                        stat.rsplit(')')
                            .next()
                            .is_some_and(|rest| rest.trim_start().starts_with(['T', 't']))
                    })
                })
            });
        }
    }

    /// slapd's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("slapd.log")).unwrap_or_default()
    }

    /// How many simple binds to `dn` slapd has logged.
    pub fn binds_to(&self, dn: &str) -> usize {
        let needle = format!("BIND dn=\"{dn}\" method=128");
        self.log().matches(&needle).count()
    }

    /// `ldap://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// `ldaps://127.0.0.1:<tls port>`.
    pub fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.tls_port.expect("TLS on"))
    }

    /// The test CA's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Runs `ldapadd` / `ldapmodify` as the directory's admin with `ldif` on stdin.
    pub fn ldap_tool(&self, tool: &str, ldif: &str) {
        use std::io::Write;
        let mut child = Command::new(tool)
            .args(["-x", "-H", &self.url(), "-D", ADMIN_DN, "-w", ADMIN_PW])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {tool} (Debian package ldap-utils): {e}"));
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(ldif.as_bytes())
            .expect("write ldif");
        let out = child.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{tool} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A `userPassword` value made by OpenLDAP's own `slappasswd`.
pub fn slappasswd(scheme: &str, password: &str) -> String {
    let mut cmd = Command::new("slappasswd");
    cmd.args(["-h", scheme, "-s", password]);
    if scheme == "{CRYPT}" {
        cmd.args(["-c", "$6$%.16s"]);
    }
    let out = cmd.output().expect("slappasswd (Debian package slapd)");
    assert!(out.status.success(), "slappasswd failed");
    String::from_utf8(out.stdout).expect("utf-8").trim().to_owned()
}

/// The people of the test directory: alice (uid and mail), bob (routed), carol (disabled),
/// two entries sharing one mail address, erin whose hash is `{CRYPT}` (SHA-512), and the
/// users of the APOP and CRAM-MD5 examples of RFC 1939 and RFC 2195 with cleartext secrets.
fn directory_ldif() -> String {
    let ssha = |pw: &str| slappasswd("{SSHA}", pw);
    format!(
        "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n\
         dn: {READER_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: reader\nuserPassword: {reader}\n\n\
         dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n\n\
         dn: uid=alice,{PEOPLE}\nobjectClass: inetOrgPerson\nuid: alice\ncn: Alice\nsn: A\nmail: alice@example.org\nuserPassword: {alice}\n\n\
         dn: uid=bob,{PEOPLE}\nobjectClass: inetOrgPerson\nobjectClass: extensibleObject\nuid: bob\ncn: Bob\nsn: B\nmail: bob@example.org\nhost: 192.0.2.30\nipServicePort: 1143\nuserPassword: {bob}\n\n\
         dn: uid=carol,{PEOPLE}\nobjectClass: inetOrgPerson\nuid: carol\ncn: Carol\nsn: C\nemployeeType: disabled\nuserPassword: {carol}\n\n\
         dn: uid=dup1,{PEOPLE}\nobjectClass: inetOrgPerson\nuid: dup1\ncn: Dup1\nsn: D\nmail: shared@example.org\nuserPassword: {dup}\n\n\
         dn: uid=dup2,{PEOPLE}\nobjectClass: inetOrgPerson\nuid: dup2\ncn: Dup2\nsn: D\nmail: shared@example.org\nuserPassword: {dup}\n\n\
         dn: uid=erin,{PEOPLE}\nobjectClass: inetOrgPerson\nuid: erin\ncn: Erin\nsn: E\nuserPassword: {erin}\n\n\
         dn: uid=mrose,{PEOPLE}\nobjectClass: inetOrgPerson\nuid: mrose\ncn: M Rose\nsn: R\nuserPassword: {{PLAIN}}tanstaaf\n\n\
         dn: uid=tim,{PEOPLE}\nobjectClass: inetOrgPerson\nuid: tim\ncn: Tim\nsn: T\nuserPassword: {{CLEARTEXT}}tanstaaftanstaaf\n",
        reader = ssha(READER_PW),
        alice = ssha("alice-pw"),
        bob = ssha("bob-pw"),
        carol = ssha("carol-pw"),
        dup = ssha("dup-pw"),
        erin = slappasswd("{CRYPT}", "erin-pw"),
    )
}

fn write_config(dir: &Path, tls: bool) {
    let d = dir.display();
    let tls_lines = if tls {
        format!(
            "TLSCACertificateFile {d}/ca.pem\nTLSCertificateFile {d}/server.pem\nTLSCertificateKeyFile {d}/server.key\n"
        )
    } else {
        String::new()
    };
    let config = format!(
        "include /etc/ldap/schema/core.schema\ninclude /etc/ldap/schema/cosine.schema\n\
         include /etc/ldap/schema/inetorgperson.schema\ninclude /etc/ldap/schema/nis.schema\n\
         modulepath /usr/lib/ldap\nmoduleload back_mdb\npidfile {d}/slapd.pid\nargsfile {d}/slapd.args\n{tls_lines}\
         database mdb\nmaxsize 10485760\nsuffix \"{SUFFIX}\"\nrootdn \"{ADMIN_DN}\"\nrootpw {ADMIN_PW}\ndirectory {d}/db\n\
         access to attrs=userPassword by self read by dn.exact=\"{READER_DN}\" read by anonymous auth by * none\n\
         access to * by * read\n"
    );
    std::fs::write(dir.join("slapd.conf"), config).expect("slapd.conf");
}

/// A test CA and a server certificate for 127.0.0.1, made by `openssl`.
fn make_certificates(dir: &Path) {
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext file");
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let steps: [&[&str]; 3] = [
        &[
            &["req", "-x509"],
            &ec[..],
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=mailauthd test CA",
            ],
        ]
        .concat(),
        &[
            &["req"],
            &ec[..],
            &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"],
        ]
        .concat(),
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    ];
    for args in steps {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
