//! Who may read and write: HTTP Basic checked against an htpasswd file, with
//! anonymous reads when asked for and users limited to reading.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use sha2::Digest as _;

use crate::htpasswd::{Hash, Htpasswd};

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// What the server answers a request's credentials with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// 401: no credentials, or wrong ones.
    Unauthorized,
    /// 403: a known user who may not do this.
    Forbidden(String),
}

/// Users and what they may do.
#[derive(Debug)]
pub struct Auth {
    users: Htpasswd,
    read_only: HashSet<String>,
    anonymous_read: bool,
    /// Credentials that verified, by a hash of user and password, so that
    /// bcrypt's deliberate slowness is paid once per client, not per request.
    verified: Mutex<HashMap<[u8; 32], String>>,
    /// The costliest stored hash, verified on every failure that cost less,
    /// so that an unknown user or a wrong password for a user with a cheap
    /// hash takes as long as the slowest wrong password: timing tells nobody
    /// which users exist.
    decoy: Option<Hash>,
    /// Decoy verifications spent.
    decoys: std::sync::atomic::AtomicU64,
    /// Slow password checks at once: no more than the cores, so a flood of
    /// wrong passwords cannot take every blocking thread the store needs.
    checking: tokio::sync::Semaphore,
}

/// How many verified credentials are remembered before starting afresh.
const REMEMBERED: usize = 4096;

impl Auth {
    pub fn new(users: Htpasswd, read_only: HashSet<String>, anonymous_read: bool) -> Auth {
        let decoy = users.costliest().cloned();
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Auth {
            users,
            read_only,
            anonymous_read,
            verified: Mutex::default(),
            decoy,
            decoys: std::sync::atomic::AtomicU64::new(0),
            checking: tokio::sync::Semaphore::new(cores),
        }
    }

    /// Decides on a request with the `Authorization` header `header`.
    pub async fn check(self: &Arc<Self>, header: Option<&str>, access: Access) -> Decision {
        let credentials = header.and_then(parse_basic);
        let Some((user, password)) = credentials else {
            return if access == Access::Read && self.anonymous_read {
                Decision::Allow
            } else {
                Decision::Unauthorized
            };
        };
        let user = match self.remembered(&user, &password) {
            Some(user) => user,
            None => {
                let Ok(_permit) = self.checking.acquire().await else {
                    return Decision::Unauthorized;
                };
                let auth = self.clone();
                let verified = tokio::task::spawn_blocking(move || auth.verify(user, password))
                    .await
                    .ok()
                    .flatten();
                match verified {
                    Some(user) => user,
                    None => return Decision::Unauthorized,
                }
            }
        };
        if access == Access::Write && self.read_only.contains(&user) {
            return Decision::Forbidden(format!("{user} may only read"));
        }
        Decision::Allow
    }

    fn fingerprint(user: &str, password: &str) -> [u8; 32] {
        let mut h = sha2::Sha256::new();
        h.update(user.as_bytes());
        h.update([0]);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    fn remembered(&self, user: &str, password: &str) -> Option<String> {
        let verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        verified.get(&Auth::fingerprint(user, password)).cloned()
    }

    /// Checks a password (slowly, for bcrypt): the user if it is right.
    fn verify(&self, user: String, password: String) -> Option<String> {
        let (ok, spent) = match self.users.get(&user) {
            Some(hash) => (hash.verify(&password), Some(hash.cost())),
            None => (false, None),
        };
        if !ok {
            if let Some(decoy) = &self.decoy
                && spent.is_none_or(|cost| cost < decoy.cost())
            {
                let _ = decoy.verify(&password);
                self.decoys.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            return None;
        }
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if verified.len() >= REMEMBERED {
            verified.clear();
        }
        verified.insert(Auth::fingerprint(&user, &password), user.clone());
        Some(user)
    }
}

/// `Basic BASE64(user:password)` → (user, password).
pub fn parse_basic(header: &str) -> Option<(String, String)> {
    let (scheme, value) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(value.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(anonymous_read: bool) -> Arc<Auth> {
        let hash = bcrypt::hash("pw", 4).expect("hash");
        let users = Htpasswd::parse(&format!("alice:{hash}\nreader:{hash}\n")).expect("parse");
        Arc::new(Auth::new(users, HashSet::from(["reader".to_string()]), anonymous_read))
    }

    fn basic(user: &str, password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    }

    #[tokio::test]
    async fn decisions() {
        let closed = auth(false);
        let open_reads = auth(true);
        let check = |a: &Arc<Auth>, header: Option<String>, access| {
            let a = a.clone();
            async move { a.check(header.as_deref(), access).await }
        };
        assert_eq!(check(&closed, None, Access::Read).await, Decision::Unauthorized);
        assert_eq!(check(&open_reads, None, Access::Read).await, Decision::Allow);
        assert_eq!(check(&open_reads, None, Access::Write).await, Decision::Unauthorized);
        assert_eq!(
            check(&closed, Some(basic("alice", "pw")), Access::Write).await,
            Decision::Allow
        );
        // Remembered the second time, and still right.
        assert_eq!(
            check(&closed, Some(basic("alice", "pw")), Access::Write).await,
            Decision::Allow
        );
        assert_eq!(
            check(&closed, Some(basic("alice", "bad")), Access::Read).await,
            Decision::Unauthorized
        );
        assert_eq!(
            check(&closed, Some(basic("mallory", "pw")), Access::Read).await,
            Decision::Unauthorized
        );
        assert_eq!(
            check(&closed, Some(basic("reader", "pw")), Access::Read).await,
            Decision::Allow
        );
        assert_eq!(
            check(&closed, Some(basic("reader", "pw")), Access::Write).await,
            Decision::Forbidden("reader may only read".into())
        );
        assert_eq!(
            check(&closed, Some("Bearer x".into()), Access::Read).await,
            Decision::Unauthorized
        );
    }

    /// A wrong password for a user with a cheap hash, and an unknown user,
    /// both spend a verification of the costliest hash; a wrong password for
    /// a user with the costliest hash has spent it already.
    #[tokio::test]
    async fn every_failure_costs_the_costliest_hash() {
        let bcrypt = bcrypt::hash("pw", 4).expect("hash");
        let users = Htpasswd::parse(&format!(
            "sha:{{SHA}}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\napr:$apr1$lZL6V/ci$eIMz/iKDkbtys/uU7LEK00\nslow:{bcrypt}\n"
        ))
        .expect("parse");
        let auth = Arc::new(Auth::new(users, HashSet::new(), false));
        let decoys = || auth.decoys.load(std::sync::atomic::Ordering::Relaxed);
        let mut spent = 0;
        for (user, password, decoy) in [
            ("sha", "wrong", true),
            ("apr", "wrong", true),
            ("nobody", "pw", true),
            ("slow", "wrong", false),
            ("sha", "password", false),
        ] {
            auth.check(Some(&basic(user, password)), Access::Read).await;
            spent += u64::from(decoy);
            assert_eq!(decoys(), spent, "{user}:{password}");
        }
    }
}
