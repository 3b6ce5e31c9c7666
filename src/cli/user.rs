//! `mailauthd user add|passwd|del|list|verify`: manage a users file that nginx
//! (`auth_basic_user_file`), Apache (`htpasswd`), Dovecot (`passwd-file`) and mailauthd all
//! read. Every change goes through [`crate::source::edit`], so it is atomic.
//!
//! Exit codes: 0 done (or, for `verify`, the password matches); 1 refused (`add` of a user
//! that exists, `passwd`/`del`/`verify` of one that does not, `verify` with a wrong
//! password); 2 error (bad arguments, unreadable file, no password given).

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use zeroize::Zeroizing;

use crate::hash::{NewScheme, StoredHash, hash_password};
use crate::login::printable;
use crate::source::htpasswd::edit::{self, EditError};

/// Exit code: the command was refused (see the module doc).
const REFUSED: u8 = 1;

/// The `user` sub-subcommands.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user (the file is created if missing). Refused if the user exists.
    Add {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        password: PasswordArgs,
        /// A Dovecot passwd-file extra field for the line, e.g. `host=10.0.0.2`, `port=1143`,
        /// `destuser=alice2`, `proxy`; repeatable.
        #[arg(long = "field", value_name = "KEY[=VALUE]")]
        fields: Vec<String>,
    },
    /// Change a user's password; the rest of its line (passwd-file fields) is kept.
    Passwd {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Delete a user (every line of it).
    Del {
        #[command(flatten)]
        target: Target,
    },
    /// List the users, their password scheme (never the hash) and their routing fields
    /// (`pass=` shown as `pass=<set>`).
    List {
        /// The users file.
        #[arg(long, short)]
        file: PathBuf,
    },
    /// Check a password: exit 0 if it matches, 1 if not.
    Verify {
        #[command(flatten)]
        target: Target,
        /// Read the password from the first line of stdin instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
}

/// The file and the user a command works on.
#[derive(Debug, Args)]
pub struct Target {
    /// The users file.
    #[arg(long, short)]
    file: PathBuf,
    /// The user name.
    user: String,
}

/// How a new password is given and hashed.
#[derive(Debug, Args)]
pub struct PasswordArgs {
    /// Hash scheme: bcrypt (cost 12), bcrypt-N (cost N, 4..31), sha512-crypt, yescrypt,
    /// argon2id.
    #[arg(long, default_value = "bcrypt", value_parser = parse_scheme)]
    scheme: NewScheme,
    /// Read the password from the first line of stdin instead of prompting (twice).
    #[arg(long)]
    password_stdin: bool,
}

fn parse_scheme(s: &str) -> Result<NewScheme, String> {
    s.parse()
        .map_err(|e| format!("{e}; use bcrypt, bcrypt-N (4..31), sha512-crypt, yescrypt or argon2id"))
}

/// Runs one `user` command.
pub(super) fn run(command: UserCommand) -> anyhow::Result<ExitCode> {
    let result = match command {
        UserCommand::Add {
            target,
            password,
            fields,
        } => {
            edit::check_user_name(&target.user)?;
            for f in &fields {
                edit::check_field(f)?;
            }
            let text = edit::read_file(&target.file, true)?;
            // Checked again under the lock; this only saves typing a password in vain.
            if edit::find_user(&text, &target.user).is_some() {
                Err(EditError::UserExists(printable(target.user.as_bytes())))
            } else {
                let hash = new_hash(&password)?;
                edit::edit_file(&target.file, true, |t| {
                    Ok((edit::add_user_with_fields(t, &target.user, &hash, &fields)?, ()))
                })
                .map(|()| eprintln!("added user {}", printable(target.user.as_bytes())))
            }
        }
        UserCommand::Passwd { target, password } => {
            let text = edit::read_file(&target.file, false)?;
            if edit::find_user(&text, &target.user).is_none() {
                Err(EditError::UserAbsent(printable(target.user.as_bytes())))
            } else {
                let hash = new_hash(&password)?;
                edit::edit_file(&target.file, false, |t| {
                    Ok((edit::set_password(t, &target.user, &hash)?, ()))
                })
                .map(|()| eprintln!("changed the password of {}", printable(target.user.as_bytes())))
            }
        }
        UserCommand::Del { target } => edit::edit_file(&target.file, false, |t| edit::delete_user(t, &target.user))
            .map(|lines| {
                eprintln!("deleted user {} ({lines} line(s))", printable(target.user.as_bytes()));
            }),
        UserCommand::List { file } => {
            let text = edit::read_file(&file, false)?;
            let mut out = String::new();
            for line in edit::list_users(&text) {
                let name = printable(&text[line.name.clone()]);
                let scheme = scheme_of(&text[line.hash.clone()]);
                let routing = edit::routing_fields(&text, &line);
                if routing.is_empty() {
                    out.push_str(&format!("{name}\t{scheme}\n"));
                } else {
                    out.push_str(&format!("{name}\t{scheme}\t{}\n", routing.join(" ")));
                }
            }
            print!("{out}");
            Ok(())
        }
        UserCommand::Verify { target, password_stdin } => return verify(&target, password_stdin),
    };
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.is_refusal() => {
            eprintln!("mailauthd: {e}");
            Ok(ExitCode::from(REFUSED))
        }
        Err(e) => Err(e.into()),
    }
}

fn verify(target: &Target, password_stdin: bool) -> anyhow::Result<ExitCode> {
    let text = edit::read_file(&target.file, false)?;
    let name = printable(target.user.as_bytes());
    let Some(line) = edit::find_user(&text, &target.user) else {
        eprintln!("mailauthd: {}", EditError::UserAbsent(name));
        return Ok(ExitCode::from(REFUSED));
    };
    let stored = std::str::from_utf8(&text[line.hash.clone()]).unwrap_or_default();
    let hash = StoredHash::parse(stored).with_context(|| format!("cannot check the password of {name}"))?;
    let password = if password_stdin {
        password_from_stdin()?
    } else {
        prompt("Password: ")?
    };
    if hash.verify(&password) {
        println!("password for user {name} correct");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("password verification failed for user {name}");
        Ok(ExitCode::from(REFUSED))
    }
}

/// The scheme and cost of a stored hash, for `list`; never the hash itself.
fn scheme_of(stored: &[u8]) -> String {
    match std::str::from_utf8(stored).map(StoredHash::parse) {
        Ok(Ok(hash)) => hash.cost_label(),
        _ => "unsupported".to_owned(),
    }
}

/// Reads the new password and hashes it.
fn new_hash(args: &PasswordArgs) -> anyhow::Result<String> {
    let password = if args.password_stdin {
        password_from_stdin()?
    } else {
        let first = prompt("New password: ")?;
        let again = prompt("Re-type new password: ")?;
        if first != again {
            bail!("the two passwords differ; nothing changed");
        }
        first
    };
    if password.is_empty() {
        bail!("the password is empty; nothing changed");
    }
    hash_password(&args.scheme, &password).context("cannot hash the password")
}

/// The first line of stdin, without its line ending.
fn password_from_stdin() -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let mut all = Zeroizing::new(Vec::new());
    std::io::stdin()
        .read_to_end(&mut all)
        .context("cannot read the password from stdin")?;
    let end = all.iter().position(|&b| b == b'\n').unwrap_or(all.len());
    let mut line = Zeroizing::new(all[..end].to_vec());
    if line.ends_with(b"\r") {
        line.pop();
    }
    Ok(line)
}

/// Asks for a password on the terminal without echo.
fn prompt(text: &str) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    if !std::io::stdin().is_terminal() && std::fs::File::open("/dev/tty").is_err() {
        bail!("no terminal to ask for the password; use --password-stdin");
    }
    let password = Zeroizing::new(rpassword::prompt_password(text).context("cannot read the password")?);
    Ok(Zeroizing::new(password.as_bytes().to_vec()))
}
