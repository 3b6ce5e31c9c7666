//! htpasswd users files, in the syntax of nginx's `auth_basic_user_file`
//! (`user:hash[:anything]`, `#` comments, blank lines, first match wins, CRLF tolerated),
//! which is also the start of a Dovecot passwd-file line
//! (`user:hash:uid:gid:gecos:home:shell:extra_fields`).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ipnet::IpNet;

use crate::hash::{HashError, StoredHash, Weight};

/// One user of a users file.
#[derive(Debug)]
pub struct User {
    /// The stored password hash.
    pub hash: Arc<StoredHash>,
    /// Line number in the file, for messages.
    pub line: usize,
    /// Dovecot `nologin` extra field: the user may not log in.
    pub nologin: bool,
    /// Dovecot `allow_nets=` extra field: the user may log in only from these networks.
    pub allow_nets: Option<Vec<IpNet>>,
}

impl User {
    /// Whether the user may log in from `client` (per `allow_nets`).
    pub fn allowed_from(&self, client: Option<IpAddr>) -> bool {
        match (&self.allow_nets, client) {
            (None, _) => true,
            (Some(nets), Some(ip)) => nets.iter().any(|n| n.contains(&ip)),
            (Some(_), None) => false,
        }
    }
}

/// How serious a problem with a line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The line is skipped, the rest of the file is fine (an unsupported scheme, a
    /// duplicate user, an unknown extra field).
    Warning,
    /// The line is broken (no hash, a malformed hash): on a reload, the last good table is
    /// kept.
    Error,
}

/// A problem with one line of a users file. Never contains a hash or a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineProblem {
    /// The file.
    pub path: PathBuf,
    /// 1-based line number.
    pub line: usize,
    /// Warning or error.
    pub severity: Severity,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for LineProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.path.display(), self.line, self.message)
    }
}

/// The users of one file, ready for lookups.
#[derive(Debug)]
pub struct UserTable {
    users: HashMap<Vec<u8>, Arc<User>>,
    dummy: Option<Arc<StoredHash>>,
}

impl UserTable {
    /// A table with no users (a source that could not be read yet).
    pub fn empty() -> UserTable {
        UserTable {
            users: HashMap::new(),
            dummy: None,
        }
    }

    /// Looks a user up by the exact bytes of the login.
    pub fn get(&self, user: &[u8]) -> Option<&Arc<User>> {
        self.users.get(user)
    }

    /// How many users the table holds.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether the table holds no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// A hash of the most common scheme and cost in this file, over a password nobody knows:
    /// an unknown user is verified against it, so it costs as much as a wrong password.
    pub fn dummy(&self) -> Option<&Arc<StoredHash>> {
        self.dummy.as_ref()
    }
}

/// Parses the text of a users file. Bad lines are skipped and reported; they never stop the
/// other users from loading.
pub fn parse_users(text: &[u8], path: &Path) -> (UserTable, Vec<LineProblem>) {
    let mut users: HashMap<Vec<u8>, Arc<User>> = HashMap::new();
    let mut problems = Vec::new();
    let mut problem = |line: usize, severity: Severity, message: String| {
        problems.push(LineProblem {
            path: path.to_owned(),
            line,
            severity,
            message,
        });
    };
    for (index, raw_line) in text.split(|&b| b == b'\n').enumerate() {
        let line_no = index + 1;
        let line = raw_line.strip_suffix(b"\r").unwrap_or(raw_line);
        if line.is_empty() || line.starts_with(b"#") {
            continue;
        }
        let mut fields = line.splitn(3, |&b| b == b':');
        let name = fields.next().unwrap_or_default();
        let Some(stored) = fields.next() else {
            problem(
                line_no,
                Severity::Error,
                "no `:` after the user name; expected user:hash".to_owned(),
            );
            continue;
        };
        let rest = fields.next();
        if name.is_empty() {
            problem(line_no, Severity::Error, "empty user name".to_owned());
            continue;
        }
        let Ok(stored) = std::str::from_utf8(stored) else {
            problem(line_no, Severity::Error, "the hash is not ASCII text".to_owned());
            continue;
        };
        let hash = match StoredHash::parse(stored) {
            Ok(hash) => hash,
            Err(HashError::UnknownScheme(scheme)) => {
                let message = if scheme.is_empty() || !stored.starts_with(['{', '$']) {
                    "hash has no known scheme prefix (an unprefixed value is never taken as a \
                     plaintext password); skipped"
                        .to_owned()
                } else {
                    format!("unsupported password scheme {scheme}; user skipped")
                };
                problem(line_no, Severity::Warning, message);
                continue;
            }
            Err(e @ HashError::Malformed { .. }) => {
                problem(line_no, Severity::Error, format!("{e}; user skipped"));
                continue;
            }
        };
        let (nologin, allow_nets) = parse_extra_fields(rest, line_no, &mut problem);
        match users.entry(name.to_vec()) {
            Entry::Occupied(first) => {
                let message = format!(
                    "user {} already defined on line {}; this line is ignored",
                    printable(name),
                    first.get().line
                );
                problem(line_no, Severity::Warning, message);
            }
            Entry::Vacant(slot) => {
                slot.insert(Arc::new(User {
                    hash: Arc::new(hash),
                    line: line_no,
                    nologin,
                    allow_nets,
                }));
            }
        }
    }
    let dummy = dummy_for(&users);
    (UserTable { users, dummy }, problems)
}

/// Reads the Dovecot passwd-file extra fields (`uid:gid:gecos:home:shell:extra`), when
/// present. Only `nologin` and `allow_nets` change what mailauthd does.
fn parse_extra_fields(
    rest: Option<&[u8]>,
    line_no: usize,
    problem: &mut impl FnMut(usize, Severity, String),
) -> (bool, Option<Vec<IpNet>>) {
    let Some(rest) = rest else {
        return (false, None);
    };
    // Fields 3..7 are uid, gid, gecos, home, shell; the extra fields follow the 7th colon.
    let Some(extra) = rest.splitn(6, |&b| b == b':').nth(5) else {
        return (false, None);
    };
    let (mut nologin, mut allow_nets) = (false, None);
    for field in String::from_utf8_lossy(extra).split_ascii_whitespace() {
        let (key, value) = field.split_once('=').unwrap_or((field, ""));
        match key {
            "nologin" => nologin = true,
            "allow_nets" => {
                let mut nets = Vec::new();
                for net in value.split(',').filter(|n| !n.is_empty()) {
                    match net.parse::<IpNet>().or_else(|_| net.parse::<IpAddr>().map(IpNet::from)) {
                        Ok(n) => nets.push(n),
                        Err(_) => {
                            // An unreadable allow-list must not open the account to everyone.
                            problem(
                                line_no,
                                Severity::Warning,
                                format!("allow_nets: {net:?} is not an address or CIDR; ignored"),
                            );
                        }
                    }
                }
                allow_nets = Some(nets);
            }
            _ => problem(
                line_no,
                Severity::Warning,
                format!("unknown extra field {key:?} (kept, not used)"),
            ),
        }
    }
    (nologin, allow_nets)
}

/// Picks the hash unknown users are verified against: the most common scheme and cost
/// among the slow ones (bcrypt, sha-crypt, argon2, ...), or among all when the file has only
/// cheap ones. Cheap hashes leak little through timing, and a file's one argon2 user must
/// not make every unknown user cost 64 MiB.
fn dummy_for(users: &HashMap<Vec<u8>, Arc<User>>) -> Option<Arc<StoredHash>> {
    let mut counts: HashMap<String, (usize, &Arc<StoredHash>)> = HashMap::new();
    for user in users.values() {
        counts.entry(user.hash.cost_label()).or_insert((0, &user.hash)).0 += 1;
    }
    let slow = |h: &StoredHash| h.weight() != Weight::Cheap;
    let any_slow = counts.values().any(|(_, h)| slow(h));
    // Ties are broken by label so the choice does not depend on hash-map order.
    let (_, (_, hash)) = counts
        .iter()
        .filter(|(_, (_, h))| !any_slow || slow(h))
        .max_by(|a, b| a.1.0.cmp(&b.1.0).then_with(|| b.0.cmp(a.0)))?;
    Some(Arc::new(hash.dummy_like()))
}

/// A user name as it may appear in a message: control bytes escaped.
pub fn printable(name: &[u8]) -> String {
    String::from_utf8_lossy(name).escape_debug().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BCRYPT_5: &str = "$2y$05$rcgjDkWl7dqP4DknoBqZUOCfnChJ7uiA4U3uuMWypOPEMz8gED8DC";

    fn parse(text: &str) -> (UserTable, Vec<LineProblem>) {
        parse_users(text.as_bytes(), Path::new("users.htpasswd"))
    }

    #[test]
    fn nginx_syntax_comments_crlf_and_first_match() {
        let (table, problems) = parse("# demo\r\n\r\nalice:{PLAIN}one:comment\r\nbob:{PLAIN}two\nalice:{PLAIN}three\n");
        assert_eq!(table.len(), 2);
        assert!(table.get(b"alice").unwrap().hash.verify(b"one"));
        assert!(table.get(b"bob").unwrap().hash.verify(b"two"));
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].line, 5);
        assert_eq!(problems[0].severity, Severity::Warning);
    }

    #[test]
    fn unprefixed_and_unknown_hashes_are_skipped_with_file_and_line() {
        let (table, problems) = parse("plain:secret\nodd:{NOPE}x\nok:{PLAIN}p\nbroken\n");
        assert_eq!(table.len(), 1);
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert!(
            text[0].starts_with("users.htpasswd:1: hash has no known scheme prefix"),
            "{text:?}"
        );
        assert!(
            text[1].starts_with("users.htpasswd:2: unsupported password scheme"),
            "{text:?}"
        );
        assert_eq!(problems[2].severity, Severity::Error);
        assert!(
            !text.iter().any(|t| t.contains("secret")),
            "a hash or password leaked: {text:?}"
        );
    }

    #[test]
    fn dovecot_extra_fields() {
        let (table, problems) = parse(
            "a:{PLAIN}p:1000:1000::/home/a::nologin\nb:{PLAIN}p:::::: allow_nets=10.0.0.0/8,192.0.2.1 quota=1G\n",
        );
        assert!(table.get(b"a").unwrap().nologin);
        let b = table.get(b"b").unwrap();
        assert!(b.allowed_from(Some("10.1.2.3".parse().unwrap())));
        assert!(b.allowed_from(Some("192.0.2.1".parse().unwrap())));
        assert!(!b.allowed_from(Some("192.0.2.2".parse().unwrap())));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].message.contains("quota"));
    }

    #[test]
    fn dummy_follows_the_most_common_slow_scheme() {
        let (table, _) = parse(&format!("a:{BCRYPT_5}\nc:{{PLAIN}}x\nd:{{PLAIN}}y\n"));
        let dummy = table.dummy().unwrap();
        assert_eq!(dummy.cost_label(), table.get(b"a").unwrap().hash.cost_label());
        assert!(!dummy.verify(b"x"));
    }
}
