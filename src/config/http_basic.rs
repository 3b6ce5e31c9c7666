//! Validation of `kind = "http-basic"` sources: the URL, the timeouts, the request headers,
//! the routing headers and the circuit breaker.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderName, HeaderValue};
use toml::Spanned;

use super::Checker;
use super::source::{BasicMethod, HttpBasicConfig, RawSource, RouteHeaders};
use crate::login::MailProtocol;

/// The fields an `http-basic` source may have besides `kind` and `protocols`.
pub(super) const FIELDS: &[&str] = &[
    "url",
    "timeout",
    "method",
    "forward_client_ip",
    "max_in_flight",
    "headers",
    "server_header",
    "port_header",
    "breaker_failures",
    "breaker_cooldown",
];

/// Default `timeout`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default `max_in_flight`.
const DEFAULT_MAX_IN_FLIGHT: usize = 64;
/// Default `breaker_failures`.
const DEFAULT_BREAKER_FAILURES: usize = 5;
/// Default `breaker_cooldown`.
const DEFAULT_BREAKER_COOLDOWN: Duration = Duration::from_secs(10);
/// Default `server_header`.
const DEFAULT_SERVER_HEADER: &str = "X-Mail-Server";
/// Default `port_header`.
const DEFAULT_PORT_HEADER: &str = "X-Mail-Port";

/// Validates one `http-basic` entry; problems go to `c`.
pub(super) fn validate(
    raw: &RawSource,
    protocols: Option<Vec<MailProtocol>>,
    key: &dyn Fn(&str) -> String,
    c: &mut Checker<'_>,
) -> Option<HttpBasicConfig> {
    let url = match &raw.url {
        None => {
            c.problem(
                Some(raw.kind.span()),
                &key("url"),
                "an http-basic source needs url = \"http://...\"".to_owned(),
            );
            None
        }
        Some(v) => match check_url(v.get_ref()) {
            Ok(url) => Some(url),
            Err(msg) => {
                c.problem(Some(v.span()), &key("url"), msg);
                None
            }
        },
    };

    let timeout = c.duration(&raw.timeout, &key("timeout"), DEFAULT_TIMEOUT);
    if timeout.is_zero() || timeout > Duration::from_secs(60) {
        c.problem(
            raw.timeout.as_ref().map(Spanned::span),
            &key("timeout"),
            "must be more than 0 and at most 60s".to_owned(),
        );
    }

    let method = match raw
        .method
        .as_ref()
        .map(|m| (m.get_ref().to_ascii_uppercase(), m.span()))
    {
        None => BasicMethod::Get,
        Some((m, _)) if m == "GET" => BasicMethod::Get,
        Some((m, _)) if m == "HEAD" => BasicMethod::Head,
        Some((m, span)) => {
            c.problem(Some(span), &key("method"), format!("{m:?} is not \"GET\" or \"HEAD\""));
            BasicMethod::Get
        }
    };

    let forward_client_ip = raw
        .forward_client_ip
        .as_ref()
        .and_then(|v| header_name(v, &key("forward_client_ip"), c));

    let max_in_flight = c.count(
        &raw.max_in_flight,
        &key("max_in_flight"),
        1..=100_000,
        DEFAULT_MAX_IN_FLIGHT,
    );

    let mut headers = Vec::new();
    if let Some(table) = &raw.headers {
        for (name, value) in table.get_ref() {
            let span = Some(table.span());
            let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
                c.problem(span, &key("headers"), format!("{name:?} is not a valid header name"));
                continue;
            };
            if header == AUTHORIZATION {
                c.problem(
                    span,
                    &key("headers"),
                    "Authorization is built from each login; remove it".to_owned(),
                );
                continue;
            }
            match HeaderValue::from_str(value) {
                Ok(mut v) => {
                    // Extra headers may hold an API key: keep them out of debug output.
                    v.set_sensitive(true);
                    headers.push((header, v));
                }
                Err(_) => c.problem(
                    span,
                    &key("headers"),
                    format!("the value of {name:?} has a control character or a line break"),
                ),
            }
        }
    }

    let server = route_header(&raw.server_header, DEFAULT_SERVER_HEADER, &key("server_header"), c);
    let port = route_header(&raw.port_header, DEFAULT_PORT_HEADER, &key("port_header"), c);
    let route_headers = match (server, port) {
        (Some(Some(server)), Some(Some(port))) => Some(RouteHeaders { server, port }),
        (Some(None), Some(None)) => None,
        (Some(_), Some(_)) => {
            let span = raw
                .server_header
                .as_ref()
                .or(raw.port_header.as_ref())
                .map(Spanned::span);
            c.problem(
                span,
                &key("server_header"),
                "server_header and port_header are set or emptied together".to_owned(),
            );
            None
        }
        _ => None,
    };

    let breaker_failures = c.count(
        &raw.breaker_failures,
        &key("breaker_failures"),
        1..=10_000,
        DEFAULT_BREAKER_FAILURES,
    );
    let breaker_cooldown = c.duration(
        &raw.breaker_cooldown,
        &key("breaker_cooldown"),
        DEFAULT_BREAKER_COOLDOWN,
    );
    if breaker_cooldown.is_zero() {
        c.problem(
            raw.breaker_cooldown.as_ref().map(Spanned::span),
            &key("breaker_cooldown"),
            "must be more than 0".to_owned(),
        );
    }

    Some(HttpBasicConfig {
        url: url?,
        timeout,
        method,
        forward_client_ip,
        max_in_flight,
        headers,
        route_headers,
        breaker_failures: u32::try_from(breaker_failures).unwrap_or(u32::MAX),
        breaker_cooldown,
        protocols,
    })
}

/// An `http`/`https` URL with a host and without user info (the credentials come from
/// each login).
fn check_url(text: &str) -> Result<reqwest::Url, String> {
    // A URL that fails to parse is not echoed: it may hold a password.
    let url =
        reqwest::Url::parse(text).map_err(|e| format!("not a URL ({e}); write e.g. \"http://127.0.0.1:8080/auth\""))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("the URL must not carry a user or password; each login sends its own".to_owned());
    }
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{text:?}: the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{text:?} has no host"));
    }
    if url.fragment().is_some() {
        return Err(format!("{text:?}: remove the #fragment"));
    }
    Ok(url)
}

fn header_name(value: &Spanned<String>, key: &str, c: &mut Checker<'_>) -> Option<HeaderName> {
    match HeaderName::from_bytes(value.get_ref().as_bytes()) {
        Ok(name) if name != AUTHORIZATION => Some(name),
        _ => {
            c.problem(
                Some(value.span()),
                key,
                format!("{:?} is not a header name this source can use", value.get_ref()),
            );
            None
        }
    }
}

/// `Some(None)`: emptied (routing off); `Some(Some(name))`: in use; `None`: invalid.
fn route_header(
    value: &Option<Spanned<String>>,
    default: &str,
    key: &str,
    c: &mut Checker<'_>,
) -> Option<Option<HeaderName>> {
    match value {
        None => HeaderName::from_bytes(default.as_bytes()).ok().map(Some),
        Some(v) if v.get_ref().is_empty() => Some(None),
        Some(v) => header_name(v, key, c).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::super::{Config, ConfigError, ConfigOrigin, SourceConfig};
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(
            text,
            ConfigOrigin::File(PathBuf::from("/etc/mailauthd.toml")),
            Path::new("/etc"),
        )
    }

    fn only_source(text: &str) -> HttpBasicConfig {
        let config = load(text).unwrap_or_else(|e| panic!("{e}"));
        match config.sources.as_slice() {
            [SourceConfig::HttpBasic(h)] => (**h).clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_apply_to_a_bare_url() {
        let h = only_source("[[source]]\nkind = \"http-basic\"\nurl = \"http://127.0.0.1:8080/auth\"\n");
        assert_eq!(h.url.as_str(), "http://127.0.0.1:8080/auth");
        assert_eq!(h.timeout, Duration::from_secs(2));
        assert_eq!(h.method, BasicMethod::Get);
        assert_eq!(h.forward_client_ip, None);
        assert_eq!(h.max_in_flight, 64);
        assert!(h.headers.is_empty());
        let route = h.route_headers.expect("routing is on by default");
        assert_eq!(route.server.as_str(), "x-mail-server");
        assert_eq!(route.port.as_str(), "x-mail-port");
        assert_eq!(h.breaker_failures, 5);
        assert_eq!(h.breaker_cooldown, Duration::from_secs(10));
        assert_eq!(h.protocols, None);
    }

    #[test]
    fn every_option_is_read() {
        let h = only_source(
            "[[source]]\nkind = \"http-basic\"\nurl = \"https://sso.example/check?x=1\"\ntimeout = \"500ms\"\n\
             method = \"head\"\nforward_client_ip = \"X-Real-IP\"\nmax_in_flight = 8\n\
             headers = { \"X-Api-Key\" = \"k1\", \"Host\" = \"intranet\" }\nserver_header = \"\"\nport_header = \"\"\n\
             breaker_failures = 2\nbreaker_cooldown = \"1s\"\nprotocols = [\"imap\", \"smtp\"]\n",
        );
        assert_eq!(h.timeout, Duration::from_millis(500));
        assert_eq!(h.method, BasicMethod::Head);
        assert_eq!(h.forward_client_ip.as_ref().map(HeaderName::as_str), Some("x-real-ip"));
        assert_eq!(h.max_in_flight, 8);
        let names: Vec<_> = h.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["host", "x-api-key"]);
        assert_eq!(h.route_headers, None);
        assert_eq!(h.breaker_failures, 2);
        assert_eq!(h.protocols, Some(vec![MailProtocol::Imap, MailProtocol::Smtp]));
    }

    #[test]
    fn a_field_of_another_kind_is_an_error_naming_it() {
        let err = load(
            "[[source]]\nkind = \"htpasswd\"\npath = \"u\"\nurl = \"http://x/\"\n\
             [[source]]\nkind = \"http-basic\"\nurl = \"http://127.0.0.1/\"\npath = \"users\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("/etc/mailauthd.toml:4: source[0].url: not allowed for kind = \"htpasswd\""),
            "{err}"
        );
        assert!(
            err.contains("/etc/mailauthd.toml:8: source[1].path: not allowed for kind = \"http-basic\""),
            "{err}"
        );
    }

    #[test]
    fn bad_values_are_all_reported() {
        let err = load(
            "[[source]]\nkind = \"http-basic\"\nurl = \"ftp://u:p@host/\"\ntimeout = \"0s\"\nmethod = \"POST\"\n\
             forward_client_ip = \"bad name\"\nmax_in_flight = 0\nheaders = { \"Authorization\" = \"Basic x\" }\n\
             server_header = \"\"\nbreaker_failures = 0\nbreaker_cooldown = \"0s\"\n",
        )
        .unwrap_err();
        let ConfigError::Invalid { problems, .. } = &err else {
            panic!("{err}")
        };
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "source[0].url",
                "source[0].timeout",
                "source[0].method",
                "source[0].forward_client_ip",
                "source[0].max_in_flight",
                "source[0].headers",
                "source[0].server_header",
                "source[0].breaker_failures",
                "source[0].breaker_cooldown",
            ],
            "{err}"
        );
    }

    #[test]
    fn a_url_with_credentials_is_refused_without_echoing_them() {
        let err = load("[[source]]\nkind = \"http-basic\"\nurl = \"http://admin:s3cret@127.0.0.1/\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("must not carry a user or password"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn a_missing_url_is_reported() {
        let err = load("[[source]]\nkind = \"http-basic\"\n").unwrap_err().to_string();
        assert!(err.contains("source[0].url: an http-basic source needs url"), "{err}");
    }
}
