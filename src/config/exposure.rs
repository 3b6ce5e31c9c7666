//! Warnings about listeners reachable from other hosts. Neither is an error (a firewall or
//! a private network may stand in front), but both trust whoever can connect: the auth
//! listener believes the `Client-IP` a request names, and the admin listener serves
//! `/metrics` and `/readyz` without a token.

use std::net::SocketAddr;

use super::{Config, ListenAddr};

/// Whether only this host can connect to `addr`.
fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().to_canonical().is_loopback()
}

impl Config {
    /// One sentence per listener that is neither on loopback nor a unix socket, for
    /// `check-config` and the start-up log.
    pub(crate) fn exposure_warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if let ListenAddr::Tcp(addr) = &self.listen
            && !is_loopback(addr)
        {
            warnings.push(format!(
                "listen = \"{addr}\" is not a loopback address: the listener trusts Client-IP (whoever \
                 can connect chooses the address that is counted, banned and matched against \
                 allow_nets); keep it on loopback or a unix socket"
            ));
        }
        if let Some(addr) = self.admin.listen
            && !is_loopback(&addr)
        {
            warnings.push(format!(
                "admin.listen = \"{addr}\" is not a loopback address: /metrics and /readyz answer \
                 without a token; keep it on loopback"
            ));
        }
        if self.smtp.relay_refusal_wait_secs > 0 {
            warnings.push(
                "smtp.relay_refusal_wait is above 0: nginx before 1.29.1 / 1.28.1 leaks worker memory \
                 into later auth requests when Auth-Wait answers an smtp_auth none request \
                 (CVE-2025-53859); use it only with nginx 1.29.1+, 1.28.1+, or a distribution \
                 build with the fix (Debian 1.22.1-9+deb12u3)"
                    .to_owned(),
            );
        }
        warnings
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, ConfigOrigin};

    fn warnings(text: &str) -> Vec<String> {
        Config::from_toml(text, ConfigOrigin::BuiltIn, Path::new("/etc/mailauthd"))
            .expect("a valid config")
            .exposure_warnings()
    }

    #[test]
    fn listeners_off_loopback_are_named() {
        let w = warnings("listen = \"0.0.0.0:14380\"\n[admin]\nlisten = \"[::]:14381\"\n");
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].starts_with("listen = \"0.0.0.0:14380\" is not a loopback address"),
            "{w:?}"
        );
        assert!(w[0].contains("trusts Client-IP") && w[0].ends_with("keep it on loopback or a unix socket"));
        assert!(
            w[1].starts_with("admin.listen = \"[::]:14381\" is not a loopback address"),
            "{w:?}"
        );
        assert!(w[1].contains("/metrics and /readyz"));
        let w = warnings("listen = \"192.0.2.10:14380\"\n");
        assert_eq!(w.len(), 1, "{w:?}");
    }

    #[test]
    fn loopback_and_unix_listeners_are_not() {
        for text in [
            "",
            "listen = \"127.0.0.1:14380\"\n[admin]\nlisten = \"127.0.0.1:14381\"\n",
            "listen = \"127.8.9.10:14380\"\n",
            "listen = \"[::1]:14380\"\n[admin]\nlisten = \"[::1]:14381\"\n",
            "listen = \"[::ffff:127.0.0.1]:14380\"\n",
            "listen = \"unix:/run/mailauthd/auth.sock\"\n",
        ] {
            assert_eq!(warnings(text), Vec::<String>::new(), "{text}");
        }
    }
}
