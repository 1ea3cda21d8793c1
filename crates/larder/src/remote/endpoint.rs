//! A server's URL with its credentials taken out: the user from the URL, the
//! password from the URL (a configuration file), `LARDER_PASSWORD`, or
//! `~/.netrc`, never from a command line that `ps` shows.

use crate::percent::decode_lossy;
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
    /// Reads `http(s)://[user[:password]@]host[:port][/path]`; `Err` says
    /// what is wrong with it.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let shown = redact(url);
        let (scheme, rest) =
            url.split_once("://").ok_or(format!("`{shown}` has no scheme (http://)"))?;
        if scheme != "http" && scheme != "https" {
            return Err(format!("`{shown}` is not an http:// or https:// URL"));
        }
        let (authority, path) = match rest.split_once('/') {
            Some((a, p)) => (a, p.trim_end_matches('/')),
            None => (rest, ""),
        };
        let (userinfo, host) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        if host.is_empty() || host.contains(['?', '#', ' ']) {
            return Err(format!("`{shown}` has no host"));
        }
        let (user, url_password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((user, pw)) => (Some(decode_lossy(user)), Some(decode_lossy(pw))),
                None => (Some(decode_lossy(u)), None),
            },
            None => (None, None),
        };
        let hostname = host.split(':').next().unwrap_or(host);
        let password = match user.as_deref() {
            Some(user) => url_password
                .or_else(|| std::env::var("LARDER_PASSWORD").ok().filter(|p| !p.is_empty()))
                .or_else(|| super::netrc::password(hostname, Some(user))),
            None => None,
        };
        let base = if path.is_empty() {
            format!("{scheme}://{host}")
        } else {
            format!("{scheme}://{host}/{path}")
        };
        Ok(Endpoint { base, user, password })
    }

    /// The base URL with the credentials in it, for tools that take them
    /// only that way (pip): hand it over in the environment, not in argv.
    pub fn with_credentials(&self) -> String {
        let Some(user) = &self.user else { return self.base.clone() };
        let (scheme, rest) = self.base.split_once("://").unwrap_or(("http", &self.base));
        let enc = |s: &str| -> String {
            s.bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect()
        };
        match &self.password {
            Some(pw) => format!("{scheme}://{}:{}@{rest}", enc(user), enc(pw)),
            None => format!("{scheme}://{}@{rest}", enc(user)),
        }
    }
}

/// `url` with any password in it replaced, for messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{hidden}@{host}{path}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let e = Endpoint::parse("http://alice:s3cret@cache.example:8000/base/").expect("parse");
        assert_eq!(e.base, "http://cache.example:8000/base");
        assert_eq!(e.user.as_deref(), Some("alice"));
        assert_eq!(e.password.as_deref(), Some("s3cret"));
        assert_eq!(e.with_credentials(), "http://alice:s3cret@cache.example:8000/base");
        let e = Endpoint::parse("https://cache.example").expect("parse");
        assert_eq!((e.base.as_str(), e.user), ("https://cache.example", None));
        assert!(Endpoint::parse("ftp://x").is_err());
        assert!(Endpoint::parse("http://").is_err());
        let e = Endpoint::parse("http://a@h:1").expect("parse");
        assert!(!format!("{e:?}").contains("s3cret"));
        // Escapes in the credentials are decoded, and round-trip.
        let e = Endpoint::parse("http://al%40ice:p%3Aw%2F@h/x").expect("parse");
        assert_eq!((e.user.as_deref(), e.password.as_deref()), (Some("al@ice"), Some("p:w/")));
        assert_eq!(e.with_credentials(), "http://al%40ice:p%3Aw%2F@h/x");
        // A password never shows in an error.
        let why = Endpoint::parse("ftp://bob:s3cret@h").expect_err("ftp");
        assert!(why.contains("bob:***@h") && !why.contains("s3cret"), "{why}");
    }
}
