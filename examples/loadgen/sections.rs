//! BENCHMARKS.md is written by three benches: `bench/run` writes the file, `bench/state` and
//! `bench/ldap` each own a section between their markers, which the others keep.

use std::path::Path;

/// The markers of every section a bench other than `bench/run` owns.
pub const SECTIONS: [(&str, &str); 2] = [
    ("<!-- state-bench:begin -->", "<!-- state-bench:end -->"),
    ("<!-- ldap-bench:begin -->", "<!-- ldap-bench:end -->"),
];

/// The owned sections found in `text`, in order, each followed by a blank line.
pub fn owned_sections(text: &str) -> String {
    let mut kept = String::new();
    for (begin, end) in SECTIONS {
        if let (Some(b), Some(e)) = (text.find(begin), text.find(end))
            && e > b
        {
            kept.push('\n');
            kept.push_str(&text[b..e + end.len()]);
            kept.push('\n');
        }
    }
    kept
}

/// Replaces the section between `begin` and `end` in `file` with `section` (which carries
/// the markers), or appends it when the file has none.
pub fn write_section(file: &Path, begin: &str, end: &str, section: &str) {
    let old = std::fs::read_to_string(file).unwrap_or_default();
    let new = match (old.find(begin), old.find(end)) {
        (Some(b), Some(e)) if e > b => format!(
            "{}{}{}",
            &old[..b],
            section.trim_end_matches('\n'),
            &old[e + end.len()..]
        ),
        _ => format!("{}\n\n{}\n", old.trim_end(), section.trim_end_matches('\n')),
    };
    std::fs::write(file, new).expect("write report");
}
