//! The built-in user directory (`oauth.local_users`), for trying the bridge without an identity
//! provider and for small deployments. Passwords are kept only as bcrypt hashes; checking a
//! username that does not exist costs the same bcrypt as checking one that does, so the form's
//! timing does not tell which usernames exist.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;

use crate::identity::Identity;
use crate::password_hash::{COSTS, cost_of, is_bcrypt_hash};
use crate::secret::SecretString;

/// Why the directory could not be built.
#[derive(Debug, thiserror::Error)]
pub enum LocalUsersError {
    #[error("local user {username:?}: password_hash is not a bcrypt hash of cost 4 to 16")]
    NotABcryptHash { username: String },
}

struct LocalUser {
    password_hash: Arc<str>,
    identity: Identity,
}

pub struct LocalUsers {
    /// By lowercased username.
    users: HashMap<String, LocalUser>,
    /// Checked when the username is unknown, at the cost of the real hashes (validation makes
    /// them all the same, so no answer is faster than another).
    dummy_hash: Arc<str>,
    /// One bcrypt per core at a time, off the async runtime.
    bcrypt_slots: Arc<tokio::sync::Semaphore>,
}

impl LocalUsers {
    /// Builds the directory; validation has checked every hash's shape.
    pub fn from_config(configs: &[LocalUserConfig]) -> Result<Self, LocalUsersError> {
        let mut users = HashMap::new();
        let mut highest_cost = 4;
        for config in configs {
            let hash = config.password_hash.expose();
            if !is_bcrypt_hash(hash) || !COSTS.contains(&cost_of(hash)) {
                return Err(LocalUsersError::NotABcryptHash {
                    username: config.username.clone(),
                });
            }
            highest_cost = highest_cost.max(cost_of(hash));
            let identity = Identity {
                subject: config
                    .subject
                    .clone()
                    .unwrap_or_else(|| config.username.clone()),
                email: config.email.clone(),
                // The operator wrote the address into the configuration: there is no one else
                // to verify it.
                email_verified: config.email.as_ref().map(|_| true),
                name: config.name.clone(),
                groups: config.groups.clone(),
            };
            users.insert(
                config.username.to_lowercase(),
                LocalUser {
                    password_hash: Arc::from(hash),
                    identity,
                },
            );
        }
        let dummy_hash = crate::password_hash::dummy_hash(highest_cost);
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Ok(LocalUsers {
            users,
            dummy_hash: Arc::from(dummy_hash),
            bcrypt_slots: Arc::new(tokio::sync::Semaphore::new(cores)),
        })
    }

    /// The subject of the user `username` names, if one does: for the audit trail of a refused
    /// login, which must not quote what was typed.
    pub fn subject_of(&self, username: &str) -> Option<&str> {
        self.users
            .get(&username.to_lowercase())
            .map(|user| user.identity.subject.as_str())
    }

    /// The user's identity when the password is theirs; `None` for a wrong password and for an
    /// unknown username alike, after the same amount of work.
    pub async fn authenticate(&self, username: &str, password: &SecretString) -> Option<Identity> {
        let user = self.users.get(&username.to_lowercase());
        let hash = user.map_or_else(
            || Arc::clone(&self.dummy_hash),
            |u| Arc::clone(&u.password_hash),
        );
        let slot = Arc::clone(&self.bcrypt_slots).acquire_owned().await.ok()?;
        let password = password.clone();
        let matches = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            crate::password_hash::verify(&password, &hash)
        })
        .await
        .unwrap_or(false);
        match (user, matches) {
            (Some(user), true) => Some(user.identity.clone()),
            _ => None,
        }
    }
}

/// One user of the built-in directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalUserConfig {
    /// What the user types; matched without regard to case.
    pub username: String,
    /// A bcrypt hash (`$2b$…`), from `mcp-oauth-bridge hash-secret`.
    pub password_hash: SecretString,
    /// `sub` of the tokens; defaults to the username.
    pub subject: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
}

/// Every problem of `oauth.local_users`, with its field path.
pub(crate) fn validate_configs(users: &[LocalUserConfig], problems: &mut Vec<String>) {
    let mut usernames = std::collections::HashSet::new();
    let mut subjects = std::collections::HashSet::new();
    let mut costs = std::collections::BTreeSet::new();
    for (i, user) in users.iter().enumerate() {
        let field = format!("oauth.local_users[{i}]");
        let username = user.username.trim();
        if username.is_empty()
            || username != user.username
            || user.username.chars().any(char::is_control)
        {
            problems.push(format!(
                "{field}.username: must be non-empty, printable, without surrounding spaces"
            ));
        } else if !usernames.insert(user.username.to_lowercase()) {
            problems.push(format!(
                "{field}.username: {:?} is listed twice (usernames ignore case)",
                user.username
            ));
        }
        let hash = user.password_hash.expose();
        let cost = cost_of(hash);
        if !is_bcrypt_hash(hash) {
            problems.push(format!(
                "{field}.password_hash: must be a bcrypt hash ($2b$…); make one with `mcp-oauth-bridge hash-secret`"
            ));
        } else if !COSTS.contains(&cost) {
            problems.push(format!(
                "{field}.password_hash: bcrypt cost {cost} is outside 4 to 16 (hash-secret uses 12)"
            ));
        } else {
            costs.insert(cost);
        }
        let subject = user.subject.as_deref().unwrap_or(&user.username);
        if subject.trim().is_empty() {
            problems.push(format!("{field}.subject: must not be empty"));
        } else if !subjects.insert(subject.to_owned()) {
            // Two people with one `sub` would share consents and look like one user downstream.
            problems.push(format!(
                "{field}.subject: {subject:?} is already another user's subject"
            ));
        }
    }
    if costs.len() > 1 {
        problems.push(format!(
            "oauth.local_users: every password_hash must have the same bcrypt cost (found {costs:?}), or the time an answer takes tells which usernames exist"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(username: &str, password: &str) -> LocalUserConfig {
        LocalUserConfig {
            username: username.into(),
            password_hash: SecretString::new(bcrypt::hash(password, 4).unwrap()),
            subject: None,
            email: Some(format!("{username}@example.com")),
            name: Some("Demo User".into()),
            groups: vec!["mcp-users".into()],
        }
    }

    #[test]
    fn bcrypt_hashes_are_recognised_by_shape() {
        let real = bcrypt::hash("pw", 4).unwrap();
        assert!(is_bcrypt_hash(&real));
        assert!(is_bcrypt_hash(&real.replacen("$2b$", "$2y$", 1)));
        assert!(!is_bcrypt_hash("hunter2"));
        assert!(!is_bcrypt_hash(&real[..59]));
        assert!(!is_bcrypt_hash(&real.replacen("$2b$", "$3b$", 1)));
        assert!(!is_bcrypt_hash(&format!("{}!", &real[..59])));
    }

    #[tokio::test]
    async fn the_right_password_yields_the_configured_identity() {
        let users = LocalUsers::from_config(&[config("Demo", "correct horse")]).unwrap();
        let identity = users
            .authenticate("demo", &SecretString::new("correct horse"))
            .await
            .expect("username matching ignores case");
        assert_eq!(identity.subject, "Demo");
        assert_eq!(identity.email.as_deref(), Some("Demo@example.com"));
        assert_eq!(identity.email_verified, Some(true));
        assert_eq!(identity.groups, vec!["mcp-users"]);
        for (username, password) in [("demo", "wrong"), ("nobody", "correct horse"), ("demo", "")] {
            assert!(
                users
                    .authenticate(username, &SecretString::new(password))
                    .await
                    .is_none(),
                "{username}/{password}"
            );
        }
        let long = "x".repeat(100);
        assert!(
            users
                .authenticate("demo", &SecretString::new(long))
                .await
                .is_none()
        );
    }

    #[test]
    fn costs_are_read_from_the_hash_and_odd_bytes_never_panic() {
        assert_eq!(cost_of(&bcrypt::hash("pw", 5).unwrap()), 5);
        let odd = format!("$2b$1é{}", "a".repeat(53));
        assert!(!is_bcrypt_hash(&odd));
        assert!(!is_bcrypt_hash(&format!("$2é{}", "a".repeat(56))));
        assert_eq!(cost_of("$2b"), 0);
    }

    #[tokio::test]
    async fn an_unknown_username_costs_a_bcrypt_like_a_known_one() {
        let mut slow = config("demo", "pw");
        slow.password_hash = SecretString::new(bcrypt::hash("pw", 10).unwrap());
        let users = LocalUsers::from_config(&[slow]).unwrap();
        let timed = |username: &'static str| {
            let users = &users;
            async move {
                let started = std::time::Instant::now();
                users
                    .authenticate(username, &SecretString::new("wrong"))
                    .await;
                started.elapsed()
            }
        };
        let known = timed("demo").await;
        let unknown = timed("nobody").await;
        // Cost 10 is tens of milliseconds; without the dummy check the unknown name would be
        // answered in microseconds.
        assert!(
            unknown * 3 > known,
            "unknown {unknown:?} vs known {known:?}"
        );
    }
}
