//! Passwords from `~/.netrc` (or the file `NETRC` names), as curl and pip
//! read them: `machine HOST login USER password SECRET`, or `default …`.

use crate::env::Environment;

/// The password for `user` (or any login, if `None`) on `host`, from the
/// netrc file `env` names.
pub(crate) fn password(env: &Environment, host: &str, user: Option<&str>) -> Option<String> {
    let text = std::fs::read_to_string(env.netrc()?).ok()?;
    lookup(&text, host, user)
}

/// Finds the password for `host` (and `user`) in netrc text.
fn lookup(text: &str, host: &str, user: Option<&str>) -> Option<String> {
    let mut tokens = text.split_whitespace();
    let mut entries: Vec<(Option<String>, Option<String>, Option<String>)> = Vec::new();
    while let Some(token) = tokens.next() {
        match token {
            "machine" => entries.push((tokens.next().map(str::to_string), None, None)),
            "default" => entries.push((None, None, None)),
            "login" => {
                if let Some(e) = entries.last_mut() {
                    e.1 = tokens.next().map(str::to_string);
                }
            }
            "password" => {
                if let Some(e) = entries.last_mut() {
                    e.2 = tokens.next().map(str::to_string);
                }
            }
            "account" => {
                tokens.next();
            }
            "macdef" => break, // macros run to the end of the file here
            _ => {}
        }
    }
    let fits = |login: &Option<String>| user.is_none() || login.as_deref() == user;
    let exact =
        entries.iter().find(|(machine, login, _)| machine.as_deref() == Some(host) && fits(login));
    let default = entries.iter().find(|(machine, login, _)| machine.is_none() && fits(login));
    exact.or(default).and_then(|(_, _, password)| password.clone())
}

#[cfg(test)]
mod tests {
    use super::lookup;

    #[test]
    fn entries() {
        let text = "machine cache.example login alice password s3cret\n\
                    machine cache.example login bob password other\n\
                    default login anyone password fallback\n";
        assert_eq!(lookup(text, "cache.example", Some("alice")).as_deref(), Some("s3cret"));
        assert_eq!(lookup(text, "cache.example", Some("bob")).as_deref(), Some("other"));
        assert_eq!(lookup(text, "cache.example", None).as_deref(), Some("s3cret"));
        assert_eq!(lookup(text, "elsewhere", Some("anyone")).as_deref(), Some("fallback"));
        assert_eq!(lookup(text, "elsewhere", Some("carol")), None);
    }
}
