//! The text format: tracing-subscriber's own "full" format, byte for byte, with the
//! one line per login (target `mailauthd::auth`) written by a short path.
//!
//! That line is written for every request, so its cost is part of every login's: the
//! general formatter walks each field through `fmt::Debug` and dynamic dispatch, about
//! three times what writing the known fields directly costs. The result is the same
//! bytes (a test compares the two), so the fail2ban filter and log readers see no change.
//! Every other event, and every event inside a span, goes to the general formatter.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{Format, FormatEvent, FormatFields, Full, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::registry::LookupSpan;

/// The target of the one line per login.
pub(crate) const DECISION_TARGET: &str = "mailauthd::auth";

/// The text format of `mailauthd serve`'s log.
#[derive(Debug, Default)]
pub(crate) struct TextFormat {
    full: Format<Full, SystemTime>,
}

impl<S, N> FormatEvent<S, N> for TextFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let meta = event.metadata();
        if meta.target() != DECISION_TARGET || ctx.lookup_current().is_some() {
            return self.full.format_event(ctx, writer, event);
        }
        // The line is put together here and handed over in one write: the writer is reached
        // through dynamic dispatch, a call per piece otherwise.
        let mut line = String::with_capacity(LINE_CAPACITY);
        if !push_now(&mut line) {
            // Before 1970 or after 9999: the general formatter's own text.
            let mut stamp = Writer::new(&mut line);
            if SystemTime.format_time(&mut stamp).is_err() {
                line.push_str("<unknown time>");
            }
        }
        // As the full format: the level right-aligned in five columns, then the target.
        line.push_str(match *meta.level() {
            Level::TRACE => " TRACE ",
            Level::DEBUG => " DEBUG ",
            Level::INFO => "  INFO ",
            Level::WARN => "  WARN ",
            Level::ERROR => " ERROR ",
        });
        line.push_str(meta.target());
        line.push_str(": ");
        event.record(&mut FieldWriter {
            line: &mut line,
            first: true,
        });
        line.push('\n');
        writer.write_str(&line)
    }
}

/// Room for an ordinary decision line, so that it is not reallocated while it is written.
const LINE_CAPACITY: usize = 320;

thread_local! {
    /// The second last written on this thread and its text, `YYYY-MM-DDTHH:MM:SS`.
    static STAMP: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((0, String::new())) };
}

/// The last second [`civil_time`] writes as the full format does (the end of year 9999).
const LAST_PLAIN_SECOND: u64 = 253_402_300_799;

/// Appends the wall-clock time as the full format writes it (`2026-11-29T18:11:08.562569Z`),
/// the date and time of day worked out once a second rather than for every line. False,
/// with nothing appended, for a time before 1970 or after 9999.
fn push_now(line: &mut String) -> bool {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    let Some(now) = since_epoch.ok().filter(|d| d.as_secs() <= LAST_PLAIN_SECOND) else {
        return false;
    };
    STAMP.with_borrow_mut(|(second, text)| {
        if *second != now.as_secs() || text.is_empty() {
            *second = now.as_secs();
            *text = civil_time(now.as_secs());
        }
        line.push_str(text);
    });
    let mut fraction = *b".000000Z";
    let mut micros = now.subsec_micros();
    for digit in fraction[1..7].iter_mut().rev() {
        *digit = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    line.push_str(std::str::from_utf8(&fraction).unwrap_or(".000000Z"));
    true
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC) of a Unix time, by Howard Hinnant's `civil_from_days`.
fn civil_time(unix: u64) -> String {
    let (days, second_of_day) = ((unix / 86_400) as i64, unix % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    )
}

/// Writes fields as the full format's default visitor does: the message as it is, every
/// other field as ` name=value`, strings in `Debug` quotes.
struct FieldWriter<'a> {
    line: &'a mut String,
    first: bool,
}

impl FieldWriter<'_> {
    fn name(&mut self, field: &Field) {
        if !std::mem::take(&mut self.first) {
            self.line.push(' ');
        }
        self.line.push_str(field.name());
        self.line.push('=');
    }

    /// The message, written by `write`. The full format escapes terminal control
    /// characters in a message; the decision lines' messages are fixed words, so a message
    /// with anything else is written again, escaped.
    fn message(&mut self, write: impl FnOnce(&mut String) -> fmt::Result) {
        self.first = false;
        let start = self.line.len();
        if write(self.line).is_err() {
            // Nothing of a message that could not be written.
            self.line.truncate(start);
            return;
        }
        if !self.line.as_bytes()[start..].iter().all(|b| (0x20..0x7f).contains(b)) {
            let escaped = escape_controls(&self.line[start..]);
            self.line.truncate(start);
            self.line.push_str(&escaped);
        }
    }
}

impl Visit for FieldWriter<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message(|line| {
                line.push_str(value);
                Ok(())
            });
            return;
        }
        self.name(field);
        // `Debug` of a str: quoted, with `"`, `\` and everything not printable escaped.
        // Printable ASCII without those is written as it is.
        if value
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
        {
            self.line.push('"');
            self.line.push_str(value);
            self.line.push('"');
        } else {
            let _ = write!(self.line, "{value:?}");
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.name(field);
        self.line.push_str(itoa::Buffer::new().format(value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.message(|line| write!(line, "{value:?}"));
        } else {
            self.name(field);
            let _ = write!(self.line, "{value:?}");
        }
    }
}

/// The full format's escaping of a message: terminal control characters as escapes.
fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if ('\u{80}'..='\u{9f}').contains(&c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::{DECISION_TARGET, TextFormat, civil_time};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The decision lines with awkward values, as `log_decision` writes them.
    fn emit() {
        let protocol = "imap";
        for user in [
            "alice",
            "",
            "a\"b",
            "back\\slash",
            "new\nline",
            "é✓",
            "esc\u{1b}[31m",
            "tab\there",
            "\u{85}",
        ] {
            tracing::info!(target: DECISION_TARGET, client_ip = "192.0.2.7", result = "ok", reason = "ok", protocol = %protocol, method = %"plain", user, scheme = "sha1", source = "htpasswd:/etc/u", backend = "192.0.2.1:143", micros = 42u64, "login accepted");
            tracing::warn!(target: DECISION_TARGET, client_ip = "unix:", result = "invalid", reason = "wrong-password", protocol = %protocol, method = %"plain", user, scheme = "-", source = "-", micros = 0u64, "login refused");
        }
        tracing::error!(target: DECISION_TARGET, detail = ?Some(3), "an error line");
        // As `server::bad_request` writes it: a Display value (its texts are mailauthd's own,
        // with quotes but never a line end).
        let error = "header \"Auth-User\" repeated";
        tracing::warn!(target: DECISION_TARGET, result = "bad-request", reason = %error, "malformed auth request");
        tracing::info!(target: "mailauthd::other", user = "x", "another target");
    }

    /// What one subscriber writes for [`emit`], each line without its timestamp.
    fn written(fast: bool) -> Vec<String> {
        let buffer = Buffer::default();
        let make = {
            let buffer = buffer.clone();
            move || buffer.clone()
        };
        let builder = tracing_subscriber::fmt()
            .with_writer(make)
            .with_max_level(tracing::Level::TRACE);
        if fast {
            tracing::subscriber::with_default(builder.event_format(TextFormat::default()).finish(), emit);
        } else {
            tracing::subscriber::with_default(builder.finish(), emit);
        }
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        // The timestamps differ by the microseconds between the two runs: compared to the
        // minute (the test retries when a minute turns meanwhile), and checked for shape.
        text.lines()
            .map(|l| {
                let (stamp, rest) = l.split_once(' ').unwrap_or((l, ""));
                assert!(
                    stamp.len() == 27 && stamp.as_bytes()[19] == b'.' && stamp.ends_with('Z'),
                    "{stamp}"
                );
                format!("{} {rest}", &stamp[..16])
            })
            .collect()
    }

    #[test]
    fn civil_time_is_utc_as_date_prints_it() {
        // `date -u -d @N +%Y-%m-%dT%H:%M:%S` for each N.
        for (unix, text) in [
            (0, "1970-01-01T00:00:00"),
            (951_782_399, "2000-02-28T23:59:59"),
            (951_782_400, "2000-02-29T00:00:00"),
            (1_709_251_199, "2024-02-29T23:59:59"),
            (1_795_953_600, "2026-11-29T12:00:00"),
            (4_102_444_799, "2099-12-31T23:59:59"),
            (4_107_542_400, "2100-03-01T00:00:00"),
            (253_402_300_799, "9999-12-31T23:59:59"),
        ] {
            assert_eq!(civil_time(unix), text, "{unix}");
        }
    }

    #[test]
    fn decision_lines_are_the_full_formats_bytes() {
        let (mut general, mut short) = (written(false), written(true));
        for _ in 0..3 {
            if general.first().map(|l| &l[..16]) == short.last().map(|l| &l[..16]) {
                break;
            }
            (general, short) = (written(false), written(true));
        }
        assert_eq!(general.len(), 21, "{general:#?}");
        assert_eq!(general, short);
        // Spot checks that the comparison sees real lines.
        assert!(general[0][17..].starts_with(" INFO mailauthd::auth: login accepted client_ip=\"192.0.2.7\""));
        assert!(general.iter().any(|l| l.contains(r#"user="new\nline""#)));
    }
}
