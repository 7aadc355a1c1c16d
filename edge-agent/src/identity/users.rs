//! The users file: `{"users": [{"name", "role", "password_hash"}]}`, JSON,
//! mode 0600, replaced atomically (written to a temporary file in the same
//! directory, fsynced, renamed over the old one), so the daemon reading it
//! sees the old or the new list, never half of one.
//!
//! The daemon re-reads the file when its identity (inode, size, modification
//! time) changes; it checks on every login and every authenticated request,
//! so `edge-agent user remove` takes effect on the next request without a
//! restart.

use super::Role;
use super::password::{dummy_hash, verify_password};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    pub role: Role,
    pub password_hash: String,
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    users: Vec<User>,
}

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("users file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("users file {path} is not valid: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("no user {0:?}")]
    Unknown(String),
    #[error("user {0:?} exists already (use `user passwd` to change the password)")]
    Exists(String),
    #[error("{0:?} is not a user name: 1 to 64 characters, letters, digits, '.', '-', '_', '@'")]
    BadName(String),
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// User names: short, printable, nothing a log line or a header could misread.
pub fn valid_user_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'@'))
}

/// What identifies one version of the file on disk.
type Stamp = (u64, u64, u64, std::time::SystemTime);

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.len(), m.modified().ok()?))
}

/// The users file, cached and re-read when it changes.
pub struct UserStore {
    path: PathBuf,
    cache: Mutex<(Option<Stamp>, Vec<User>)>,
}

impl UserStore {
    pub fn new(path: PathBuf) -> UserStore {
        UserStore {
            path,
            cache: Mutex::new((None, Vec::new())),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file as it is now; a missing file is no users.
    pub fn load(&self) -> Result<Vec<User>, UserError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(UserError::Io {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let file: UsersFile = serde_json::from_str(&text).map_err(|e| UserError::Invalid {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        Ok(file.users)
    }

    /// The current users, re-read if the file changed. A file that cannot be
    /// read or parsed counts as no users (every protected route then
    /// refuses) and is logged: failing open would be worse.
    pub fn current(&self) -> Vec<User> {
        let now = stamp(&self.path);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.0.is_none() || cache.0 != now {
            let users = match self.load() {
                Ok(u) => u,
                Err(e) => {
                    metrics::counter!(crate::metric_names::EDGE_AUTH_USERS_FILE_ERRORS_TOTAL)
                        .increment(1);
                    tracing::error!(error = %e, "cannot read the users file; no local user can log in until it is fixed");
                    Vec::new()
                }
            };
            *cache = (now, users);
        }
        cache.1.clone()
    }

    pub fn get(&self, name: &str) -> Option<User> {
        self.current().into_iter().find(|u| u.name == name)
    }

    /// The user if the password is theirs. Costs one argon2 verification
    /// whether or not the user exists.
    pub fn authenticate(&self, name: &str, password: &str) -> Option<User> {
        match self.get(name) {
            Some(u) if verify_password(password, &u.password_hash) => Some(u),
            Some(_) => None,
            None => {
                let _ = verify_password(password, dummy_hash());
                None
            }
        }
    }

    /// Applies `change` to the file's users and writes the result atomically.
    fn update(
        &self,
        change: impl FnOnce(&mut Vec<User>) -> Result<(), UserError>,
    ) -> Result<(), UserError> {
        let mut users = self.load()?;
        change(&mut users)?;
        self.write(&users)
    }

    fn write(&self, users: &[User]) -> Result<(), UserError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let io = |source| UserError::Io {
            path: self.path.clone(),
            source,
        };
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "users.json".into());
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let text = serde_json::to_vec_pretty(&UsersFile {
            users: users.to_vec(),
        })
        .map_err(|e| UserError::Invalid {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        let result = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            // The rename is durable once the directory is synced.
            std::fs::File::open(&dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(io)
    }

    pub fn add(&self, name: &str, role: Role, password: &str) -> Result<(), UserError> {
        if !valid_user_name(name) {
            return Err(UserError::BadName(name.into()));
        }
        let password_hash = super::hash_password(password).map_err(UserError::Hash)?;
        self.update(|users| {
            if users.iter().any(|u| u.name == name) {
                return Err(UserError::Exists(name.into()));
            }
            users.push(User {
                name: name.into(),
                role,
                password_hash,
            });
            Ok(())
        })
    }

    pub fn remove(&self, name: &str) -> Result<(), UserError> {
        self.update(|users| {
            let before = users.len();
            users.retain(|u| u.name != name);
            if users.len() == before {
                return Err(UserError::Unknown(name.into()));
            }
            Ok(())
        })
    }

    pub fn set_password(&self, name: &str, password: &str) -> Result<(), UserError> {
        let password_hash = super::hash_password(password).map_err(UserError::Hash)?;
        self.update(|users| match users.iter_mut().find(|u| u.name == name) {
            Some(u) => {
                u.password_hash = password_hash;
                Ok(())
            }
            None => Err(UserError::Unknown(name.into())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn add_remove_passwd_and_the_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let store = UserStore::new(dir.path().join("state/users.json"));
        assert!(store.current().is_empty());
        store.add("ann", Role::Operator, "pw-1").unwrap();
        assert!(matches!(
            store.add("ann", Role::Viewer, "x"),
            Err(UserError::Exists(_))
        ));
        assert!(matches!(
            store.add("a b", Role::Viewer, "x"),
            Err(UserError::BadName(_))
        ));
        let mode = std::fs::metadata(store.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            store.authenticate("ann", "pw-1").map(|u| u.role),
            Some(Role::Operator)
        );
        assert!(store.authenticate("ann", "pw-2").is_none());
        assert!(store.authenticate("bob", "pw-1").is_none());
        // Another process (the CLI) changes the file: seen without a restart.
        let other = UserStore::new(store.path().to_path_buf());
        other.set_password("ann", "pw-2").unwrap();
        assert!(store.authenticate("ann", "pw-2").is_some());
        other.remove("ann").unwrap();
        assert!(store.get("ann").is_none());
        assert!(matches!(other.remove("ann"), Err(UserError::Unknown(_))));
        // No temporary files left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("state"))
            .unwrap()
            .collect();
        assert_eq!(names.len(), 1);
    }
}
