//! etcd's auth store: users (bcrypt passwords), roles, key-range permissions, `root`, auth
//! enabled or not — replicated as commands through Raft and kept in snapshots with the rest
//! of the store — and the simple tokens users authenticate for (member memory, as etcd's:
//! assigned through Raft so every member knows them, gone at a restart, refreshed on use).
//! Error texts are etcd's (rpctypes).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::pb::authpb::permission::Type as PermType;

pub const ROOT: &str = "root";

/// etcd's `--auth-token` (simple tokens, or JWT with its keys), `--auth-token-ttl` (simple
/// tokens: idle seconds before a token expires) and `--bcrypt-cost`.
#[derive(Clone, Debug)]
pub struct AuthSettings {
    pub token_ttl: Duration,
    pub bcrypt_cost: u32,
    /// `--auth-token jwt,...`: signed tokens instead of simple ones (`node::jwt`).
    pub jwt: Option<Arc<crate::node::jwt::Jwt>>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            token_ttl: Duration::from_secs(300),
            bcrypt_cost: 10,
            jwt: None,
        }
    }
}

pub fn denied() -> Error {
    Error::new(ErrorKind::PermissionDenied, "etcdserver: permission denied")
}

fn fail(kind: ErrorKind, text: &str) -> Error {
    Error::new(kind, text)
}

fn user_not_found() -> Error {
    fail(
        ErrorKind::FailedPrecondition,
        "etcdserver: user name not found",
    )
}

fn role_not_found() -> Error {
    fail(
        ErrorKind::FailedPrecondition,
        "etcdserver: role name not found",
    )
}

fn invalid_management() -> Error {
    fail(
        ErrorKind::InvalidArgument,
        "etcdserver: invalid auth management",
    )
}

pub fn auth_failed() -> Error {
    fail(
        ErrorKind::Auth,
        "etcdserver: authentication failed, invalid user ID or password",
    )
}

pub fn not_enabled() -> Error {
    fail(
        ErrorKind::FailedPrecondition,
        "etcdserver: authentication is not enabled",
    )
}

/// A permission of a role: read, write or both on a key or a range (`range_end` empty: the
/// key alone; `\0`: every key from `key` on).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Perm {
    pub kind: i32,
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct User {
    /// The bcrypt hash; empty for a user made with `--no-password` (certificate only).
    pub password: String,
    pub roles: BTreeSet<String>,
}

/// A change to the auth store, as proposed (passwords already hashed by the proposer, so
/// applying is deterministic and cheap).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum AuthCommand {
    Enable,
    Disable,
    UserAdd {
        name: String,
        hash: String,
    },
    UserDelete(String),
    UserChangePassword {
        name: String,
        hash: String,
    },
    UserGrantRole {
        user: String,
        role: String,
    },
    UserRevokeRole {
        user: String,
        role: String,
    },
    RoleAdd(String),
    RoleDelete(String),
    RoleGrantPermission {
        role: String,
        perm: Perm,
    },
    RoleRevokePermission {
        role: String,
        key: Vec<u8>,
        range_end: Vec<u8>,
    },
    /// A token assigned to `user` after the proposer checked the password.
    Authenticate {
        user: String,
        token: String,
    },
}

/// The simple tokens of a member: token → (user, last use).
#[derive(Clone, Default)]
pub struct Tokens(Arc<Mutex<HashMap<String, (String, Instant)>>>);

impl Tokens {
    /// The user of `token`, refreshing it; an unknown or expired token is an error.
    pub fn user(&self, token: &str, ttl: Duration) -> Result<String> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match map.get_mut(token) {
            Some((user, used)) if now.duration_since(*used) < ttl => {
                *used = now;
                Ok(user.clone())
            }
            Some(_) => {
                map.remove(token);
                Err(invalid_token())
            }
            None => Err(invalid_token()),
        }
    }

    fn insert(&self, token: String, user: String) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(token, (user, Instant::now()));
    }

    fn forget_user(&self, user: &str) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, (u, _)| u != user);
    }

    fn clear(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

pub fn invalid_token() -> Error {
    fail(ErrorKind::Auth, "etcdserver: invalid auth token")
}

/// A JWT issued before users or roles last changed.
pub fn old_revision() -> Error {
    fail(
        ErrorKind::InvalidArgument,
        "etcdserver: revision of auth store is old",
    )
}

pub fn user_empty() -> Error {
    fail(ErrorKind::Auth, "etcdserver: user name is empty")
}

#[derive(Clone, Default, Serialize, Deserialize)]
pub struct AuthStore {
    pub enabled: bool,
    /// Counts changes (etcd's auth revision).
    pub revision: u64,
    pub users: BTreeMap<String, User>,
    /// Role → its permissions, sorted by key.
    pub roles: BTreeMap<String, Vec<Perm>>,
    #[serde(skip)]
    pub tokens: Tokens,
}

impl std::fmt::Debug for AuthStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthStore")
            .field("enabled", &self.enabled)
            .field("revision", &self.revision)
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .field("roles", &self.roles)
            .finish()
    }
}

impl AuthStore {
    /// Applies `cmd` as etcd's auth store does.
    pub fn apply(&mut self, cmd: AuthCommand) -> Result<()> {
        use AuthCommand::*;
        match cmd {
            Enable => {
                if self.enabled {
                    return Ok(());
                }
                let root = self.users.get(ROOT).ok_or_else(|| {
                    fail(
                        ErrorKind::FailedPrecondition,
                        "etcdserver: root user does not exist",
                    )
                })?;
                if !root.roles.contains(ROOT) {
                    return Err(fail(
                        ErrorKind::FailedPrecondition,
                        "etcdserver: root user does not have root role",
                    ));
                }
                self.enabled = true;
            }
            Disable => {
                self.enabled = false;
                self.tokens.clear();
            }
            UserAdd { name, hash } => {
                if name.is_empty() {
                    return Err(fail(
                        ErrorKind::InvalidArgument,
                        "etcdserver: user name is empty",
                    ));
                }
                if self.users.contains_key(&name) {
                    return Err(fail(
                        ErrorKind::FailedPrecondition,
                        "etcdserver: user name already exists",
                    ));
                }
                self.users.insert(
                    name,
                    User {
                        password: hash,
                        roles: BTreeSet::new(),
                    },
                );
            }
            UserDelete(name) => {
                if self.enabled && name == ROOT {
                    return Err(invalid_management());
                }
                self.users.remove(&name).ok_or_else(user_not_found)?;
                self.tokens.forget_user(&name);
            }
            UserChangePassword { name, hash } => {
                self.users
                    .get_mut(&name)
                    .ok_or_else(user_not_found)?
                    .password = hash;
                self.tokens.forget_user(&name);
            }
            UserGrantRole { user, role } => {
                if role != ROOT && !self.roles.contains_key(&role) {
                    return Err(role_not_found());
                }
                let u = self.users.get_mut(&user).ok_or_else(user_not_found)?;
                u.roles.insert(role);
            }
            UserRevokeRole { user, role } => {
                if self.enabled && user == ROOT && role == ROOT {
                    return Err(invalid_management());
                }
                let u = self.users.get_mut(&user).ok_or_else(user_not_found)?;
                if !u.roles.remove(&role) {
                    return Err(fail(
                        ErrorKind::FailedPrecondition,
                        "etcdserver: role is not granted to the user",
                    ));
                }
            }
            RoleAdd(name) => {
                if name.is_empty() {
                    return Err(fail(
                        ErrorKind::InvalidArgument,
                        "etcdserver: role name is empty",
                    ));
                }
                if self.roles.contains_key(&name) {
                    return Err(fail(
                        ErrorKind::FailedPrecondition,
                        "etcdserver: role name already exists",
                    ));
                }
                self.roles.insert(name, Vec::new());
            }
            RoleDelete(name) => {
                if self.enabled && name == ROOT {
                    return Err(invalid_management());
                }
                self.roles.remove(&name).ok_or_else(role_not_found)?;
                for u in self.users.values_mut() {
                    u.roles.remove(&name);
                }
            }
            RoleGrantPermission { role, perm } => {
                let perms = self.roles.get_mut(&role).ok_or_else(role_not_found)?;
                match perms
                    .iter_mut()
                    .find(|p| p.key == perm.key && p.range_end == perm.range_end)
                {
                    Some(p) => p.kind = perm.kind,
                    None => {
                        perms.push(perm);
                        perms.sort_by(|a, b| (&a.key, &a.range_end).cmp(&(&b.key, &b.range_end)));
                    }
                }
            }
            RoleRevokePermission {
                role,
                key,
                range_end,
            } => {
                let perms = self.roles.get_mut(&role).ok_or_else(role_not_found)?;
                let before = perms.len();
                perms.retain(|p| !(p.key == key && p.range_end == range_end));
                if perms.len() == before {
                    return Err(fail(
                        ErrorKind::FailedPrecondition,
                        "etcdserver: permission is not granted to the role",
                    ));
                }
            }
            Authenticate { user, token } => {
                if !self.enabled {
                    return Err(not_enabled());
                }
                if !self.users.contains_key(&user) {
                    return Err(auth_failed());
                }
                self.tokens.insert(token, user);
                // Handing out a token changes nothing else.
                return Ok(());
            }
        }
        self.revision += 1;
        Ok(())
    }

    pub fn is_root(&self, user: &str) -> bool {
        self.users.get(user).is_some_and(|u| u.roles.contains(ROOT))
    }

    /// Whether `user` may read (`write` false) or write the keys `[key, range_end)` (a
    /// single key when `range_end` is empty; from `key` on when it is `\0`): every key of
    /// it must lie in a permission of one of the user's roles.
    pub fn check(&self, user: &str, key: &[u8], range_end: &[u8], write: bool) -> Result<()> {
        let u = self.users.get(user).ok_or_else(denied)?;
        if u.roles.contains(ROOT) {
            return Ok(());
        }
        let wanted = if write {
            PermType::Write
        } else {
            PermType::Read
        };
        // The granted intervals as [start, end) with None for "to the end", merged.
        let mut spans: Vec<(&[u8], Option<Vec<u8>>)> = u
            .roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .flatten()
            .filter(|p| p.kind == wanted as i32 || p.kind == PermType::Readwrite as i32)
            .map(|p| (&p.key[..], span_end(&p.key, &p.range_end)))
            .collect();
        spans.sort_by(|a, b| a.0.cmp(b.0));
        let want_end = span_end(key, range_end);
        // Walk the sorted spans, extending coverage from `key`.
        let mut covered_to: Vec<u8> = key.to_vec();
        for (start, end) in spans {
            if start > &covered_to[..] {
                break;
            }
            match end {
                None => return Ok(()),
                Some(end) if end > covered_to => covered_to = end,
                Some(_) => {}
            }
            if want_end.as_ref().is_some_and(|w| *w <= covered_to) {
                return Ok(());
            }
        }
        Err(denied())
    }
}

/// The exclusive end of etcd's `[key, range_end)`: None for "every key from `key` on".
fn span_end(key: &[u8], range_end: &[u8]) -> Option<Vec<u8>> {
    match range_end {
        [] => {
            let mut k = key.to_vec();
            k.push(0);
            Some(k)
        }
        [0] => None,
        end => Some(end.to_vec()),
    }
}

/// A new simple token: random letters, as etcd's (with the auth revision after a dot).
pub fn new_token(revision: u64) -> String {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut raw = [0u8; 16];
    // Without an entropy source a member cannot hand out tokens safely at all.
    getrandom::fill(&mut raw).expect("the OS random source");
    let letters: String = raw
        .iter()
        .map(|b| LETTERS[*b as usize % LETTERS.len()] as char)
        .collect();
    format!("{letters}.{revision}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> AuthStore {
        let mut a = AuthStore::default();
        for cmd in [
            AuthCommand::UserAdd {
                name: "root".into(),
                hash: String::new(),
            },
            AuthCommand::UserGrantRole {
                user: "root".into(),
                role: "root".into(),
            },
            AuthCommand::UserAdd {
                name: "app".into(),
                hash: String::new(),
            },
            AuthCommand::RoleAdd("app".into()),
            AuthCommand::RoleGrantPermission {
                role: "app".into(),
                perm: Perm {
                    kind: PermType::Readwrite as i32,
                    key: b"/a/".to_vec(),
                    range_end: b"/a0".to_vec(),
                },
            },
            AuthCommand::RoleGrantPermission {
                role: "app".into(),
                perm: Perm {
                    kind: PermType::Read as i32,
                    key: b"/a0".to_vec(),
                    range_end: b"/c".to_vec(),
                },
            },
            AuthCommand::UserGrantRole {
                user: "app".into(),
                role: "app".into(),
            },
            AuthCommand::Enable,
        ] {
            a.apply(cmd).unwrap();
        }
        a
    }

    #[test]
    fn ranges_are_covered_by_the_union_of_permissions() {
        let a = store();
        assert!(a.check("app", b"/a/x", b"", true).is_ok());
        assert!(a.check("app", b"/a/", b"/a0", true).is_ok());
        // Two adjacent grants cover a range together for reading, not for writing.
        assert!(a.check("app", b"/a/", b"/b", false).is_ok());
        assert!(a.check("app", b"/a/", b"/b", true).is_err());
        assert!(a.check("app", b"/a/", b"/d", false).is_err());
        assert!(a.check("app", b"/a/", b"\0", false).is_err());
        assert!(a.check("app", b"/z", b"", false).is_err());
        assert!(a.check("root", b"/z", b"\0", true).is_ok());
        assert!(a.check("nobody", b"/a/x", b"", false).is_err());
    }

    #[test]
    fn root_is_protected_while_auth_is_on() {
        let mut a = store();
        assert!(a.apply(AuthCommand::UserDelete("root".into())).is_err());
        assert!(a
            .apply(AuthCommand::UserRevokeRole {
                user: "root".into(),
                role: "root".into()
            })
            .is_err());
        a.apply(AuthCommand::Disable).unwrap();
        a.apply(AuthCommand::UserDelete("root".into())).unwrap();
        let err = a.apply(AuthCommand::Enable).unwrap_err();
        assert_eq!(err.message, "etcdserver: root user does not exist");
    }

    #[test]
    fn tokens_die_with_their_user_and_with_auth_disable() {
        let mut a = store();
        let ttl = Duration::from_secs(60);
        a.apply(AuthCommand::Authenticate {
            user: "app".into(),
            token: "t1".into(),
        })
        .unwrap();
        assert_eq!(a.tokens.user("t1", ttl).unwrap(), "app");
        a.apply(AuthCommand::UserChangePassword {
            name: "app".into(),
            hash: String::new(),
        })
        .unwrap();
        assert!(a.tokens.user("t1", ttl).is_err());
        a.apply(AuthCommand::Authenticate {
            user: "app".into(),
            token: "t2".into(),
        })
        .unwrap();
        a.apply(AuthCommand::Disable).unwrap();
        assert!(a.tokens.user("t2", ttl).is_err());
        assert!(a
            .apply(AuthCommand::Authenticate {
                user: "app".into(),
                token: "t3".into()
            })
            .is_err());
    }
}
