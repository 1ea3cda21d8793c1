//! htpasswd files: `user:hash` lines, with the hashes Apache's `htpasswd`
//! writes: bcrypt (`$2y$`, `$2b$`, `$2a$`), MD5-crypt (`$apr1$`, and `$1$`),
//! and `{SHA}`.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine as _;
use larder::{Error, ErrorKind};
use md5::Digest as _;

/// One stored password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hash {
    /// `$2y$…`: bcrypt.
    Bcrypt(String),
    /// `$apr1$SALT$HASH` or `$1$SALT$HASH`: MD5-crypt, Apache's or the original.
    Md5Crypt { magic: &'static str, salt: String, hash: String },
    /// `{SHA}BASE64`: unsalted SHA-1.
    Sha1(Vec<u8>),
}

impl Hash {
    fn parse(text: &str) -> Option<Hash> {
        if text.starts_with("$2y$") || text.starts_with("$2b$") || text.starts_with("$2a$") {
            return Some(Hash::Bcrypt(text.to_string()));
        }
        for magic in ["$apr1$", "$1$"] {
            if let Some(rest) = text.strip_prefix(magic) {
                let (salt, hash) = rest.split_once('$')?;
                if salt.is_empty() || salt.len() > 8 || hash.len() != 22 {
                    return None;
                }
                return Some(Hash::Md5Crypt {
                    magic,
                    salt: salt.to_string(),
                    hash: hash.to_string(),
                });
            }
        }
        if let Some(b64) = text.strip_prefix("{SHA}") {
            let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
            return (bytes.len() == 20).then_some(Hash::Sha1(bytes));
        }
        None
    }

    /// How slow it is to check, in rank only: bcrypt by its cost, then
    /// MD5-crypt, then SHA.
    pub fn cost(&self) -> u32 {
        match self {
            // `$2y$12$…`: the cost is the third field.
            Hash::Bcrypt(text) => {
                100 + text.split('$').nth(2).and_then(|c| c.parse::<u32>().ok()).unwrap_or(0)
            }
            Hash::Md5Crypt { .. } => 1,
            Hash::Sha1(_) => 0,
        }
    }

    /// Whether `password` matches. Slow for bcrypt, on purpose.
    pub fn verify(&self, password: &str) -> bool {
        match self {
            Hash::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            Hash::Md5Crypt { magic, salt, hash } => constant_time_eq(
                md5_crypt(password.as_bytes(), salt.as_bytes(), magic).as_bytes(),
                hash.as_bytes(),
            ),
            Hash::Sha1(expected) => {
                let got = sha1::Sha1::digest(password.as_bytes());
                constant_time_eq(&got, expected)
            }
        }
    }
}

/// The users of an htpasswd file.
#[derive(Debug, Clone, Default)]
pub struct Htpasswd {
    users: HashMap<String, Hash>,
}

impl Htpasswd {
    /// Reads an htpasswd file; a line that is not `user:hash` with a known
    /// hash is an error naming the file and the line.
    pub fn load(path: &Path) -> Result<Htpasswd, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
        Htpasswd::parse(&text).map_err(|(line, why)| {
            Error::new(
                ErrorKind::Config,
                format!(
                    "{}:{line}: {why}; write it with `htpasswd -B` (bcrypt), or -m (apr1) or -s (SHA)",
                    path.display()
                ),
            )
        })
    }

    /// Parses htpasswd text; errors carry the 1-based line.
    pub fn parse(text: &str) -> Result<Htpasswd, (usize, String)> {
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                return Err((i + 1, "not `user:hash`".to_string()));
            };
            let Some(hash) = Hash::parse(hash) else {
                return Err((
                    i + 1,
                    format!(
                        "the password of {user} is in a form larder does not read (crypt or plain text?)"
                    ),
                ));
            };
            users.insert(user.to_string(), hash);
        }
        Ok(Htpasswd { users })
    }

    /// The stored hash of `user`.
    pub fn get(&self, user: &str) -> Option<&Hash> {
        self.users.get(user)
    }

    /// Whether the file names no user.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The hash slowest to check (bcrypt of the highest cost first), for
    /// timing every failure like the slowest known user's.
    pub fn costliest(&self) -> Option<&Hash> {
        self.users.values().max_by_key(|h| h.cost())
    }

    /// Whether `user` is in the file.
    pub fn contains(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }
}

/// Compares without stopping at the first difference.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// MD5-crypt as FreeBSD wrote it and Apache adopted with the magic `$apr1$`:
/// returns the 22-character hash part.
fn md5_crypt(password: &[u8], salt: &[u8], magic: &str) -> String {
    let mut alt = md5::Md5::new();
    alt.update(password);
    alt.update(salt);
    alt.update(password);
    let alt = alt.finalize();

    let mut ctx = md5::Md5::new();
    ctx.update(password);
    ctx.update(magic.as_bytes());
    ctx.update(salt);
    let mut left = password.len();
    while left > 0 {
        let n = left.min(16);
        ctx.update(&alt[..n]);
        left -= n;
    }
    let mut i = password.len();
    while i > 0 {
        if i & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..1.min(password.len())]);
        }
        i >>= 1;
    }
    let mut result = ctx.finalize();

    for round in 0..1000 {
        let mut c = md5::Md5::new();
        if round & 1 == 1 {
            c.update(password);
        } else {
            c.update(result);
        }
        if round % 3 != 0 {
            c.update(salt);
        }
        if round % 7 != 0 {
            c.update(password);
        }
        if round & 1 == 1 {
            c.update(result);
        } else {
            c.update(password);
        }
        result = c.finalize();
    }

    const ITOA64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(22);
    let mut push = |value: u32, count: usize| {
        let mut v = value;
        for _ in 0..count {
            out.push(ITOA64[(v & 0x3f) as usize] as char);
            v >>= 6;
        }
    };
    let r = |i: usize| u32::from(result[i]);
    push((r(0) << 16) | (r(6) << 8) | r(12), 4);
    push((r(1) << 16) | (r(7) << 8) | r(13), 4);
    push((r(2) << 16) | (r(8) << 8) | r(14), 4);
    push((r(3) << 16) | (r(9) << 8) | r(15), 4);
    push((r(4) << 16) | (r(10) << 8) | r(5), 4);
    push(r(11), 2);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(line: &str, password: &str, expected: bool) {
        let file = Htpasswd::parse(line).expect("parse");
        let user = line.split(':').next().expect("user");
        assert_eq!(file.get(user).expect("user").verify(password), expected, "{line}");
    }

    #[test]
    fn the_three_kinds_of_hash() {
        // Known answers: apr1 from the htpasswd-verify docs, SHA from `htpasswd -s`.
        check("user:$apr1$lZL6V/ci$eIMz/iKDkbtys/uU7LEK00", "password", true);
        check("user:$apr1$lZL6V/ci$eIMz/iKDkbtys/uU7LEK00", "Password", false);
        check("user:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "password", true);
        check("user:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "wrong", false);
        let bcrypt = bcrypt::hash("s3cret", 4).expect("hash");
        check(&format!("alice:{bcrypt}"), "s3cret", true);
        check(&format!("alice:{bcrypt}"), "s3cre", false);
        // The original MD5-crypt, as `openssl passwd -1 -salt saltsalt password` prints.
        check("bob:$1$saltsalt$qjXMvbEw8oaL.CzflDtaK/", "password", true);
    }

    #[test]
    fn unreadable_lines_name_their_line() {
        assert_eq!(
            Htpasswd::parse("# users\nalice:plain\n").expect_err("plain"),
            (
                2,
                "the password of alice is in a form larder does not read (crypt or plain text?)"
                    .to_string()
            )
        );
        assert_eq!(Htpasswd::parse("nobody\n").expect_err("no colon").0, 1);
    }

    #[test]
    fn an_unknown_user_is_timed_against_the_costliest_hash() {
        let (cheap, dear) =
            (bcrypt::hash("pw", 4).expect("hash"), bcrypt::hash("pw", 6).expect("hash"));
        let text = format!("a:{{SHA}}qUqP5cyxm6YcTAhz05Hph5gvu9M=\nb:{dear}\nc:{cheap}\n");
        let file = Htpasswd::parse(&text).expect("parse");
        match file.costliest() {
            Some(Hash::Bcrypt(h)) => assert_eq!(h, &dear),
            other => panic!("{other:?}"),
        }
    }
}
