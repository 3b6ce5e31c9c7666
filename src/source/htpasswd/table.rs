//! The users table of one htpasswd file, in the syntax of nginx's `auth_basic_user_file`
//! (first match wins; lines as [`super::lines`] reads them), which is also the start of a
//! Dovecot passwd-file line (`user:hash:uid:gid:gecos:home:shell:extra_fields`).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, LazyLock};

use ipnet::IpNet;
use zeroize::Zeroizing;

use super::index::{Entry as IndexEntry, NameIndex};
use super::lines::{BOM, is_blank_or_comment, raw_lines, split_user_line};
use crate::hash::{HashError, StoredHash};
use crate::login::printable;
use crate::reason::Reason;
use crate::source::answer::{LineProblem, Severity, SourceRoute};

/// One user of a users file.
#[derive(Debug)]
pub(crate) struct User {
    /// The stored password hash.
    pub hash: Arc<StoredHash>,
    /// Dovecot `nologin` extra field: the user may not log in.
    pub nologin: bool,
    /// Dovecot `allow_nets=` extra field: the user may log in only from these networks.
    pub allow_nets: Option<Vec<IpNet>>,
    /// Dovecot's proxy fields (`host=`, `port=`, `destuser=`, `pass=`): where this user's
    /// logins go and as whom.
    pub route: SourceRoute,
    /// Every Dovecot extra field of the line, in order, including the ones mailauthd does
    /// not use (`quota_rule=...`, `userdb_mail=...`).
    pub extra_fields: Vec<ExtraField>,
}

/// One Dovecot passwd-file extra field: `key=value`, or a bare `key` (e.g. `nologin`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExtraField {
    /// The key, e.g. `allow_nets`.
    pub key: String,
    /// The value after `=`; `None` for a bare key.
    pub value: Option<String>,
}

impl fmt::Display for ExtraField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}={v}", self.key),
            None => f.write_str(&self.key),
        }
    }
}

impl User {
    /// The `cert_fingerprint=` extra field, lower case without `:`: the SHA-1 fingerprint of
    /// the client certificate that names this user for SASL EXTERNAL.
    pub(crate) fn cert_fingerprint(&self) -> Option<String> {
        self.extra_fields
            .iter()
            .find(|f| f.key == "cert_fingerprint")
            .and_then(|f| f.value.as_deref())
            .map(|v| v.chars().filter(|c| *c != ':').collect::<String>().to_ascii_lowercase())
    }

    /// Why this account may not log in from `client`, if it may not: Dovecot's `nologin`,
    /// or an `allow_nets` that does not hold the address. The one place that rule lives, for
    /// password and digest logins alike.
    pub(crate) fn refusal(&self, client: Option<IpAddr>) -> Option<Reason> {
        if self.nologin {
            Some(Reason::Nologin)
        } else if !self.allowed_from(client) {
            Some(Reason::NotAllowedFromNetwork)
        } else {
            None
        }
    }

    /// Whether the user may log in from `client` (per `allow_nets`).
    fn allowed_from(&self, client: Option<IpAddr>) -> bool {
        match (&self.allow_nets, client) {
            (None, _) => true,
            (Some(nets), Some(ip)) => nets.iter().any(|n| n.contains(&ip)),
            (Some(_), None) => false,
        }
    }
}

/// The users of one file, ready for lookups. The file's text is kept (zeroed when dropped)
/// and each line is parsed again when its user logs in: that costs about a microsecond per
/// login and keeps a million users in well under 100 MB. Every line was fully validated
/// when the table was built.
pub(crate) struct UserTable {
    text: Zeroizing<Vec<u8>>,
    entries: Vec<IndexEntry>,
    index: NameIndex,
    dummies: Dummies,
}

impl fmt::Debug for UserTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserTable")
            .field("users", &self.entries.len())
            .finish_non_exhaustive()
    }
}

impl UserTable {
    /// A table with no users (a source that could not be read yet).
    pub(crate) fn empty() -> UserTable {
        UserTable {
            text: Zeroizing::new(Vec::new()),
            entries: Vec::new(),
            index: NameIndex::default(),
            dummies: Dummies::default(),
        }
    }

    fn line_of(&self, entry: &IndexEntry) -> &[u8] {
        let start = entry.start as usize;
        &self.text[start..start + entry.len as usize]
    }

    fn name_of(&self, n: u32) -> &[u8] {
        let entry = &self.entries[n as usize];
        &self.line_of(entry)[..entry.name_len as usize]
    }

    /// Looks a user up by the exact bytes of the login.
    pub(crate) fn get(&self, user: &[u8]) -> Option<Arc<User>> {
        let n = self.index.find(user, |n| self.name_of(n))?;
        let entry = &self.entries[n as usize];
        let line_no = entry.line as usize;
        let fields = split_user_line(self.line_of(entry))?;
        let (stored, rest) = (fields.hash, fields.rest);
        // The line parsed when the table was built, so this cannot fail; the text is
        // immutable.
        let hash = StoredHash::parse(std::str::from_utf8(stored).ok()?).ok()?;
        let extra_fields = parse_extra_fields(rest);
        let applied = apply_extra_fields(&extra_fields, line_no, &mut |_, _, _| {});
        Some(Arc::new(User {
            hash: Arc::new(hash),
            nologin: applied.nologin,
            allow_nets: applied.allow_nets,
            route: applied.route,
            extra_fields,
        }))
    }

    /// How many users the table holds.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table holds no users.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The hash an unknown `user` is verified against, over a password nobody knows, so that
    /// it costs what a known user's wrong password costs: one of this file's schemes and
    /// costs, chosen by a keyed hash of the name (see [`Dummies`]).
    pub(crate) fn dummy_for(&self, user: &[u8]) -> Option<Arc<StoredHash>> {
        self.dummies.pick(user).cloned()
    }
}

#[cfg(test)]
/// Parses the text of a users file. Bad lines are skipped and reported; they never stop the
/// other users from loading.
pub(super) fn parse_users(text: &[u8], path: &Path) -> (UserTable, Vec<LineProblem>) {
    parse_users_owned(text.to_vec(), path)
}

/// As [`parse_users`], keeping `text` in the table without a copy.
pub(super) fn parse_users_owned(text: Vec<u8>, path: &Path) -> (UserTable, Vec<LineProblem>) {
    let text = Zeroizing::new(text);
    let lines = text.iter().filter(|&&b| b == b'\n').count() + 1;
    let mut entries: Vec<IndexEntry> = Vec::new();
    let mut index = NameIndex::with_capacity(lines);
    let mut labels = DummyCandidates::default();
    let mut problems = Vec::new();
    // Names whose first line was skipped, with that line's number.
    let mut skipped: HashMap<&[u8], usize> = HashMap::new();
    let mut problem = |line: usize, severity: Severity, message: String| {
        problems.push(LineProblem {
            path: path.to_owned(),
            line,
            severity,
            message,
        });
    };
    if text.starts_with(BOM) {
        problem(
            1,
            Severity::Warning,
            "the file starts with a UTF-8 byte-order mark (saved by a Windows editor?); it is \
             ignored here, but nginx and Dovecot read it as part of the first user name: save \
             the file without it"
                .to_owned(),
        );
    }
    for raw in raw_lines(&text) {
        let line_start = raw.content.start;
        let line_no = raw.number;
        let line = &text[raw.content.clone()];
        if is_blank_or_comment(line) {
            continue;
        }
        let Some(fields) = split_user_line(line) else {
            problem(
                line_no,
                Severity::Error,
                "no `:` after the user name; expected user:hash".to_owned(),
            );
            continue;
        };
        let (name, stored, rest) = (fields.name, fields.hash, fields.rest);
        if name.is_empty() {
            problem(line_no, Severity::Error, "empty user name".to_owned());
            continue;
        }
        // The first line of a name decides, as nginx and Dovecot read the file: a later line
        // never stands in for a skipped first one (it may hold an old password).
        if let Some(first) = skipped.get(name) {
            let message = format!(
                "user {} already defined on line {first}, which is skipped; this line is ignored too",
                printable(name)
            );
            problem(line_no, Severity::Warning, message);
            continue;
        }
        let parsed = parse_line_hash(stored).and_then(|hash| {
            match (
                u32::try_from(line.len()),
                u32::try_from(name.len()),
                u32::try_from(line_no),
            ) {
                (Ok(len), Ok(name_len), Ok(line32)) => Ok((hash, len, name_len, line32)),
                _ => Err((Severity::Error, "line too long; user skipped".to_owned())),
            }
        });
        let (hash, len, name_len, line32) = match parsed {
            Ok(parsed) => parsed,
            Err((severity, message)) => {
                problem(line_no, severity, message);
                let loaded = |n: u32| {
                    let e: &IndexEntry = &entries[n as usize];
                    &text[e.start as usize..e.start as usize + e.name_len as usize]
                };
                if index.find(name, loaded).is_none() {
                    skipped.entry(name).or_insert(line_no);
                }
                continue;
            }
        };
        // Problems in the extra fields are reported here, once; lookups parse them quietly.
        let _ = apply_extra_fields(&parse_extra_fields(rest), line_no, &mut problem);
        let n = entries.len() as u32;
        let name_of = |n: u32| {
            let e: &IndexEntry = &entries[n as usize];
            &text[e.start as usize..e.start as usize + e.name_len as usize]
        };
        match index.insert(name, n, name_of) {
            Err(first) => {
                let message = format!(
                    "user {} already defined on line {}; this line is ignored",
                    printable(name),
                    entries[first as usize].line
                );
                problem(line_no, Severity::Warning, message);
            }
            Ok(()) => {
                labels.count(hash);
                entries.push(IndexEntry {
                    start: line_start as u64,
                    len,
                    name_len,
                    line: line32,
                });
            }
        }
    }
    entries.shrink_to_fit();
    let dummies = labels.into_dummies();
    (
        UserTable {
            text,
            entries,
            index,
            dummies,
        },
        problems,
    )
}

/// A user line's stored hash, or why the line is skipped (and how bad that is).
fn parse_line_hash(stored: &[u8]) -> Result<StoredHash, (Severity, String)> {
    let Ok(stored) = std::str::from_utf8(stored) else {
        return Err((Severity::Error, "the hash is not ASCII text".to_owned()));
    };
    match StoredHash::parse(stored) {
        Ok(hash) => Ok(hash),
        Err(HashError::Unprefixed) => Err((
            Severity::Warning,
            "hash has no known scheme prefix (an unprefixed value is never taken as a plaintext \
             password); skipped"
                .to_owned(),
        )),
        Err(e @ (HashError::UnknownScheme(_) | HashError::Unsupported { .. })) => {
            Err((Severity::Warning, format!("{e}; user skipped")))
        }
        Err(e @ HashError::Malformed { .. }) => Err((Severity::Error, format!("{e}; user skipped"))),
    }
}

/// Splits the Dovecot passwd-file extra fields (`uid:gid:gecos:home:shell:extra`) into
/// `key[=value]` words, when the line has them. An nginx-style comment after the hash (fewer
/// than six more colons) has none.
pub(super) fn parse_extra_fields(rest: Option<&[u8]>) -> Vec<ExtraField> {
    // Fields 3..7 are uid, gid, gecos, home, shell; the extra fields follow the 7th colon.
    let Some(extra) = rest.and_then(|r| r.splitn(6, |&b| b == b':').nth(5)) else {
        return Vec::new();
    };
    String::from_utf8_lossy(extra)
        .split_ascii_whitespace()
        .map(|field| match field.split_once('=') {
            Some((key, value)) => ExtraField {
                key: key.to_owned(),
                value: Some(value.to_owned()),
            },
            None => ExtraField {
                key: field.to_owned(),
                value: None,
            },
        })
        .collect()
}

/// What the extra fields of one line change for mailauthd.
#[derive(Default)]
struct Applied {
    nologin: bool,
    allow_nets: Option<Vec<IpNet>>,
    route: SourceRoute,
}

/// What the extra fields change for mailauthd: `nologin`, `allow_nets` and Dovecot's proxy
/// fields (`host=`, `port=`, `destuser=`, `pass=`; `proxy` and `proxy_maybe` are accepted:
/// every login goes through nginx's proxy anyway). Any other key is reported (the user
/// still loads). A proxy field that cannot be used makes the user's logins fail
/// temporarily rather than go to another backend.
fn apply_extra_fields(
    fields: &[ExtraField],
    line_no: usize,
    problem: &mut impl FnMut(usize, Severity, String),
) -> Applied {
    let mut applied = Applied::default();
    let Applied {
        nologin,
        allow_nets,
        route,
    } = &mut applied;
    for field in fields {
        let value = field.value.as_deref().unwrap_or("");
        let mut unusable = None;
        match field.key.as_str() {
            "nologin" => *nologin = true,
            "proxy" | "proxy_maybe" => {}
            // Read where a certificate is matched (SASL EXTERNAL).
            "cert_fingerprint" => {}
            "host" => match value.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
                Ok(ip) => route.host = Some(ip),
                Err(_) => {
                    unusable = Some(format!(
                        "host={value:?} is not an IP address (a name is never resolved per login)"
                    ));
                }
            },
            "port" => match value.parse::<u16>() {
                Ok(p) if p > 0 => route.port = Some(p),
                _ => unusable = Some(format!("port={value:?} is not a port from 1 to 65535")),
            },
            "destuser" if !value.is_empty() && !value.contains(|c: char| c.is_whitespace() || c.is_control()) => {
                route.destuser = Some(value.to_owned());
            }
            "destuser" => unusable = Some(format!("destuser={value:?} is empty or has spaces")),
            "pass" if !value.is_empty() => route.pass = Some(Zeroizing::new(value.as_bytes().to_vec())),
            // The value is a password: never repeated in a message.
            "pass" => unusable = Some("pass= is empty".to_owned()),
            "allow_nets" => {
                // Several allow_nets fields narrow nothing down: their lists add up, as a
                // reader of the line would expect.
                let nets: &mut Vec<IpNet> = allow_nets.get_or_insert_with(Vec::new);
                for net in field
                    .value
                    .as_deref()
                    .unwrap_or("")
                    .split(',')
                    .filter(|n| !n.is_empty())
                {
                    match net.parse::<IpNet>().or_else(|_| net.parse::<IpAddr>().map(IpNet::from)) {
                        Ok(n) => nets.push(n),
                        Err(_) => {
                            // An unreadable allow-list must not open the account to everyone:
                            // the entry is dropped, the (possibly empty) list still applies.
                            problem(
                                line_no,
                                Severity::Warning,
                                format!("allow_nets: {net:?} is not an address or CIDR; ignored"),
                            );
                        }
                    }
                }
            }
            key => problem(
                line_no,
                Severity::Warning,
                format!("unknown extra field {key:?} (kept, not used)"),
            ),
        }
        if let Some(why) = unusable {
            problem(
                line_no,
                Severity::Warning,
                format!("{why}; this user's logins get a temporary failure"),
            );
            route.unusable.get_or_insert(why);
        }
    }
    applied
}

/// Counts scheme-and-cost labels while a file loads, keeping one hash of each.
#[derive(Default)]
struct DummyCandidates {
    counts: HashMap<String, (usize, StoredHash)>,
}

impl DummyCandidates {
    fn count(&mut self, hash: StoredHash) {
        match self.counts.entry(hash.cost_label()) {
            Entry::Occupied(mut seen) => seen.get_mut().0 += 1,
            Entry::Vacant(slot) => {
                slot.insert((1, hash));
            }
        }
    }

    /// One dummy per label, weighted by how many users have it, in label order (so a name
    /// keeps its label across reloads of a file with the same mix).
    fn into_dummies(self) -> Dummies {
        let mut labels: Vec<(String, (usize, StoredHash))> = self.counts.into_iter().collect();
        labels.sort_by(|a, b| a.0.cmp(&b.0));
        let mut total = 0u64;
        let choices = labels
            .into_iter()
            .map(|(_, (count, hash))| {
                total += count as u64;
                (total, Arc::new(hash.dummy_like()))
            })
            .collect();
        Dummies { choices, total }
    }
}

/// The key of the hash that picks an unknown name's dummy: random per process, so nobody
/// outside can tell which names land on which label, and fixed for the process, so the same
/// name always costs the same.
static DUMMY_KEY: LazyLock<RandomState> = LazyLock::new(RandomState::new);

/// What an unknown user is verified against. An unknown name must cost what a known one
/// costs, in a file of mixed schemes too (older `htpasswd -m` entries and newer bcrypt ones):
/// a single dummy of one scheme would make every unknown name stand out from the users of
/// the others. So each unknown name gets one of the file's own scheme-and-cost labels, chosen
/// by a keyed hash of the name weighted by how many users have each label: over many names
/// the times follow the file's mix, and one name always gets the same label.
#[derive(Debug, Default)]
struct Dummies {
    /// Each label's dummy, after the running total of users up to and including it.
    choices: Vec<(u64, Arc<StoredHash>)>,
    /// Users counted.
    total: u64,
}

impl Dummies {
    /// The dummy for `name`: `None` for a file without users.
    fn pick(&self, name: &[u8]) -> Option<&Arc<StoredHash>> {
        if self.total == 0 {
            return None;
        }
        let point = DUMMY_KEY.hash_one(name) % self.total;
        let at = self.choices.partition_point(|(upto, _)| *upto <= point);
        self.choices.get(at).map(|(_, hash)| hash)
    }
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
        // A password pasted where the hash belongs is never repeated in a warning.
        let (leaky, leaky_problems) = parse("a:$ecretpassw0rd-very-long\nb:{my secret pw}rest\n");
        assert_eq!(leaky.len(), 0);
        let shown: Vec<String> = leaky_problems.iter().map(ToString::to_string).collect();
        assert!(
            !shown
                .iter()
                .any(|t| t.contains("ecretpassw0rd") || t.contains("secret pw")),
            "{shown:?}"
        );
        assert!(
            text[1].starts_with("users.htpasswd:2: unknown scheme {NOPE}; user skipped"),
            "{text:?}"
        );
        assert_eq!(problems[2].severity, Severity::Error);
        assert!(
            !text.iter().any(|t| t.contains("secret")),
            "a hash or password leaked: {text:?}"
        );
    }

    /// Found by the `users_file` fuzz target and the edit property tests (FUZZING.md): a
    /// broken first line of bob let a later line of bob load, so bob's older password
    /// logged in where nginx and Dovecot (first line decides) refuse every password.
    #[test]
    fn a_skipped_first_line_is_not_replaced_by_a_later_line_of_the_same_name() {
        let (table, problems) = parse("alice:{PLAIN}a\nbob:$apr1$x\nbob:{PLAIN}old\ncarol:$2y$10$cut\n");
        assert!(table.get(b"bob").is_none(), "bob loaded from line 3");
        assert!(table.get(b"alice").is_some_and(|u| u.hash.verify(b"a")));
        assert_eq!(table.len(), 1);
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(problems.len(), 3, "{text:?}");
        assert!(
            text[1].starts_with("users.htpasswd:3: user bob already defined on line 2, which is skipped"),
            "{text:?}"
        );
        assert_eq!(problems[1].severity, Severity::Warning);
        // A loaded first line still wins over a later broken one, as before.
        let (table, problems) = parse("bob:{PLAIN}new\nbob:$apr1$x\n");
        assert!(table.get(b"bob").is_some_and(|u| u.hash.verify(b"new")));
        assert_eq!(problems.len(), 1);
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
        let fields: Vec<String> = b.extra_fields.iter().map(ToString::to_string).collect();
        assert_eq!(fields, ["allow_nets=10.0.0.0/8,192.0.2.1", "quota=1G"]);
        assert!(
            table
                .get(b"a")
                .unwrap()
                .extra_fields
                .iter()
                .any(|f| f.key == "nologin" && f.value.is_none())
        );
    }

    #[test]
    fn dovecot_proxy_fields_are_routing_facts() {
        let (table, problems) = parse(
            "a:{PLAIN}p:::::: proxy host=192.0.2.7 port=1143 destuser=a2 pass=s3cret\n\
             b:{PLAIN}p:::::: proxy_maybe host=[2001:db8::1]\n\
             c:{PLAIN}p:::::: host=store.example.org\n\
             d:{PLAIN}p:::::: port=0\n",
        );
        let a = table.get(b"a").unwrap();
        assert_eq!(a.route.host, Some("192.0.2.7".parse().unwrap()));
        assert_eq!((a.route.port, a.route.destuser.as_deref()), (Some(1143), Some("a2")));
        assert_eq!(a.route.pass.as_deref().map(Vec::as_slice), Some(&b"s3cret"[..]));
        assert_eq!(table.len(), 4, "{problems:?}");
        assert_eq!(
            table.get(b"b").unwrap().route.host,
            Some("2001:db8::1".parse().unwrap())
        );
        // `proxy`, `proxy_maybe` and the fields themselves are known: only the unusable ones
        // are warned about, with their line.
        let lines: Vec<usize> = problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, [3, 4], "{problems:?}");
        assert!(
            table
                .get(b"c")
                .unwrap()
                .route
                .unusable
                .as_deref()
                .unwrap()
                .contains("store.example.org")
        );
        assert!(table.get(b"d").unwrap().route.unusable.is_some());
        assert!(!problems.iter().any(|p| p.message.contains("s3cret")));
    }

    #[test]
    fn unreadable_allow_nets_refuse_everyone_and_comments_are_not_fields() {
        let (table, problems) = parse("a:{PLAIN}p:::::: allow_nets=nonsense\nb:{PLAIN}p:an nginx comment: nologin\n");
        let a = table.get(b"a").unwrap();
        assert!(!a.allowed_from(Some("127.0.0.1".parse().unwrap())));
        assert!(!a.allowed_from(None));
        assert_eq!(problems.len(), 1, "{problems:?}");
        let b = table.get(b"b").unwrap();
        assert!(!b.nologin && b.extra_fields.is_empty());
        assert!(b.allowed_from(None));
    }

    #[test]
    fn unknown_names_get_dummies_in_the_files_own_mix_and_keep_theirs() {
        // 300 bcrypt-5 users and 700 md5-crypt ones (`openssl passwd -1 -salt saltsalt x`).
        let mut text = String::new();
        for n in 0..300 {
            text.push_str(&format!("b{n}:{BCRYPT_5}\n"));
        }
        for n in 0..700 {
            text.push_str(&format!("m{n}:$1$saltsalt$4px9i58NU2Z2/vZOUlGjq.\n"));
        }
        let (table, problems) = parse(&text);
        assert!(problems.is_empty(), "{problems:?}");
        let label = |t: &UserTable, name: &str| t.dummy_for(name.as_bytes()).unwrap().cost_label();
        let bcrypt = table.get(b"b0").unwrap().hash.cost_label();
        let md5 = table.get(b"m0").unwrap().hash.cost_label();
        assert_ne!(bcrypt, md5);
        let names = 20_000;
        let mut on_bcrypt = 0;
        for n in 0..names {
            let l = label(&table, &format!("nobody{n}"));
            assert!(l == bcrypt || l == md5, "{l}");
            on_bcrypt += usize::from(l == bcrypt);
        }
        // 30 % expected; a binomial over 20 000 names stays within ±2 % (6 sigma).
        let share = on_bcrypt as f64 / f64::from(names);
        assert!((0.28..=0.32).contains(&share), "{share}");
        // The same name always gets the same label, in this table and in another load of
        // the same file.
        let (again, _) = parse(&text);
        for n in 0..200 {
            let name = format!("nobody{n}");
            let first = label(&table, &name);
            assert_eq!(label(&table, &name), first);
            assert_eq!(label(&again, &name), first);
        }
        // A dummy never accepts a password of the file.
        assert!(!table.dummy_for(b"nobody").unwrap().verify(b"x"));
        assert!(parse("# nobody\n").0.dummy_for(b"x").is_none());
    }

    #[test]
    fn a_byte_order_mark_is_warned_about_and_the_first_user_still_loads() {
        let (table, problems) = parse("\u{feff}alice:{PLAIN}a1\nbob:{PLAIN}b1\n");
        assert_eq!(table.len(), 2);
        assert!(table.get(b"alice").unwrap().hash.verify(b"a1"));
        assert!(table.get("\u{feff}alice".as_bytes()).is_none());
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].severity, Severity::Warning);
        assert!(
            problems[0]
                .to_string()
                .starts_with("users.htpasswd:1: the file starts with a UTF-8 byte-order mark"),
            "{problems:?}"
        );
    }

    #[test]
    fn every_user_of_a_large_file_is_found_and_no_other() {
        let mut text = String::new();
        for n in 0..5000 {
            text.push_str(&format!("u{n}:{{PLAIN}}p{n}\r\n"));
        }
        text.push_str("last:{PLAIN}end");
        let (table, problems) = parse(&text);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(table.len(), 5001);
        for n in 0..5000 {
            let user = table.get(format!("u{n}").as_bytes()).unwrap();
            assert!(user.hash.verify(format!("p{n}").as_bytes()), "u{n}");
        }
        assert!(table.get(b"last").unwrap().hash.verify(b"end"));
        for absent in [&b"u5000"[..], b"u", b"", b"u1:", b"last:", b"u1\r"] {
            assert!(table.get(absent).is_none(), "{absent:?}");
        }
    }
}
