//! A server's URL with its credentials taken out: the user from the URL, the
//! password from the URL (a configuration file), `LARDER_PASSWORD`, or
//! `~/.netrc`, never from a command line that `ps` shows. URLs are read by
//! the `url` crate, so IPv6 hosts (`http://[::1]:8000`) and escapes in the
//! credentials are handled as browsers and curl handle them.

use url::{Host, Url};

use crate::env::Environment;
use crate::percent::{decode_lossy, encode_component};

/// Where a server is, and who to be there.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `scheme://host[:port][/path]`, without credentials or a final `/`.
    pub base: String,
    /// The user the URL names.
    pub user: Option<String>,
    /// That user's password, wherever it came from.
    pub password: Option<String>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("base", &self.base)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "…"))
            .finish()
    }
}

impl Endpoint {
    /// [`Endpoint::parse_in`] the process's environment, for callers that
    /// have no configuration at hand.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        Endpoint::parse_in(url, &Environment::from_process())
    }

    /// Reads `http(s)://[user[:password]@]host[:port][/path]`, the password
    /// (for a user the URL names) from the URL, else `LARDER_PASSWORD`, else
    /// the netrc file, as `env` gives them; `Err` says what is wrong with it.
    pub fn parse_in(url: &str, env: &Environment) -> Result<Endpoint, String> {
        let shown = redact(url);
        if !url.contains("://") {
            return Err(format!("`{shown}` has no scheme (http://)"));
        }
        let parsed = Url::parse(url).map_err(|e| match e {
            url::ParseError::EmptyHost => format!("`{shown}` has no host"),
            e => format!("`{shown}` is not a URL: {e}"),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!("`{shown}` is not an http:// or https:// URL"));
        }
        let Some(host) = parsed.host() else { return Err(format!("`{shown}` has no host")) };
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(format!(
                "`{shown}` has a query or fragment; give http(s)://HOST[:PORT][/PATH]"
            ));
        }
        let user = Some(decode_lossy(parsed.username())).filter(|u| !u.is_empty());
        let url_password = parsed.password().map(decode_lossy);
        let password = match user.as_deref() {
            Some(user) => url_password
                .or_else(|| env.password().map(str::to_string))
                .or_else(|| super::netrc::password(env, &netrc_name(&host), Some(user))),
            None => None,
        };
        let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
        let path = parsed.path().trim_end_matches('/');
        let base = format!("{}://{host}{port}{path}", parsed.scheme());
        Ok(Endpoint { base, user, password })
    }

    /// The base URL with the credentials in it, for tools that take them
    /// only that way (pip): hand it over in the environment, not in argv.
    pub fn with_credentials(&self) -> String {
        let Some(user) = &self.user else { return self.base.clone() };
        let (scheme, rest) = self.base.split_once("://").unwrap_or(("http", &self.base));
        match &self.password {
            Some(pw) => {
                format!("{scheme}://{}:{}@{rest}", encode_component(user), encode_component(pw))
            }
            None => format!("{scheme}://{}@{rest}", encode_component(user)),
        }
    }
}

/// A host as `~/.netrc` names it: a name, or an address without brackets.
fn netrc_name(host: &Host<&str>) -> String {
    match host {
        Host::Domain(name) => name.to_string(),
        Host::Ipv4(addr) => addr.to_string(),
        Host::Ipv6(addr) => addr.to_string(),
    }
}

/// `url` with any password in it replaced, for messages.
pub fn redact(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => match parsed.set_password(Some("***")) {
            Ok(()) => parsed.to_string(),
            Err(()) => redact_text(url),
        },
        Ok(_) => url.to_string(),
        // Not a URL the parser takes, but it may still hold a password.
        Err(_) => redact_text(url),
    }
}

/// [`redact`] for text `url` cannot parse: whatever sits between `:` and
/// the last `@` of the authority goes.
fn redact_text(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{scheme}://{user}:***@{host}{path}")
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> Environment {
        Environment::default()
    }

    /// Regression: the netrc lookup of an IPv6 host used `[`, so it missed.
    #[test]
    fn passwords_come_from_the_environment_then_netrc() {
        let dir = tempfile::tempdir().expect("tempdir");
        let netrc = dir.path().join("netrc");
        std::fs::write(&netrc, "machine ::1 login alice password from-netrc\n").expect("write");
        let env = Environment::from_vars([("NETRC", netrc.display().to_string())]);
        let e = Endpoint::parse_in("http://alice@[::1]:8000", &env).expect("parse");
        assert_eq!(e.password.as_deref(), Some("from-netrc"));
        let env = Environment::from_vars([
            ("NETRC", netrc.display().to_string()),
            ("LARDER_PASSWORD", "from-env".to_string()),
        ]);
        let e = Endpoint::parse_in("http://alice@[::1]:8000", &env).expect("parse");
        assert_eq!(e.password.as_deref(), Some("from-env"));
        let e = Endpoint::parse_in("http://alice:in-url@[::1]:8000", &env).expect("parse");
        assert_eq!(e.password.as_deref(), Some("in-url"));
    }

    #[test]
    fn urls() {
        let e = Endpoint::parse_in("http://alice:s3cret@cache.example:8000/base/", &none())
            .expect("parse");
        assert_eq!(e.base, "http://cache.example:8000/base");
        assert_eq!(e.user.as_deref(), Some("alice"));
        assert_eq!(e.password.as_deref(), Some("s3cret"));
        assert_eq!(e.with_credentials(), "http://alice:s3cret@cache.example:8000/base");
        let e = Endpoint::parse_in("https://cache.example", &none()).expect("parse");
        assert_eq!((e.base.as_str(), e.user), ("https://cache.example", None));
        assert!(Endpoint::parse_in("ftp://x", &none()).is_err());
        assert!(Endpoint::parse_in("http://", &none()).is_err());
        assert!(Endpoint::parse_in("cache.example:8000", &none()).is_err());
        let e = Endpoint::parse_in("http://a@h:1", &none()).expect("parse");
        assert!(!format!("{e:?}").contains("s3cret"));
        // Escapes in the credentials are decoded, and round-trip.
        let e = Endpoint::parse_in("http://al%40ice:p%3Aw%2F@h/x", &none()).expect("parse");
        assert_eq!((e.user.as_deref(), e.password.as_deref()), (Some("al@ice"), Some("p:w/")));
        assert_eq!(e.with_credentials(), "http://al%40ice:p%3Aw%2F@h/x");
        // A password never shows in an error.
        let why = Endpoint::parse_in("ftp://bob:s3cret@h", &none()).expect_err("ftp");
        assert!(why.contains("bob:***@h") && !why.contains("s3cret"), "{why}");
    }

    /// Regression: the host was cut at its first `:`, so an IPv6 address
    /// lost its port into its name and the netrc lookup missed.
    #[test]
    fn ipv6_hosts_keep_their_port_and_their_name() {
        let e = Endpoint::parse_in("http://alice:pw@[::1]:8000/cache", &none()).expect("parse");
        assert_eq!(e.base, "http://[::1]:8000/cache");
        assert_eq!(e.password.as_deref(), Some("pw"));
        let url = Url::parse("http://[::1]:8000").expect("url");
        assert_eq!(netrc_name(&url.host().expect("host")), "::1");
        assert_eq!(redact("http://bob:s3cret@[::1]:8000/x"), "http://bob:***@[::1]:8000/x");
    }

    #[test]
    fn passwords_are_redacted_in_any_url() {
        assert_eq!(redact("s3://key:secret@bucket/prefix"), "s3://key:***@bucket/prefix");
        assert_eq!(redact("http://bob@h:8000"), "http://bob@h:8000");
        assert_eq!(redact("http://h:8000"), "http://h:8000");
        assert_eq!(redact("weird://bob:pw@"), "weird://bob:***@");
    }
}
