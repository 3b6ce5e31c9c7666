//! A configured secret (admin token, HMAC key, a Redis URL with a password) that never
//! shows in `Debug` output, so a `{:?}` of the config cannot leak it.

use std::fmt;

use zeroize::Zeroizing;

/// A secret string; `Debug` prints `<redacted>`, the memory is zeroed on drop.
#[derive(Clone, PartialEq, Eq, Default)]
pub(crate) struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a secret.
    pub(crate) fn new(value: String) -> Secret {
        Secret(Zeroizing::new(value))
    }

    /// The secret itself, for the one place that uses it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("hunter2-token-value".to_owned());
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some(<redacted>)");
        assert_eq!(s.expose(), "hunter2-token-value");
    }
}
