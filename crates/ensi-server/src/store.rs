//! Session ids and the on-disk layout of sessions.
//!
//! ```text
//! data_dir/
//!   tmp/<id>/keys.bin        an upload in progress (staging); wiped at every start
//!   tmp/<id>/session.json
//!   sessions/<id>/keys.bin   evaluation keys exactly as uploaded
//!   sessions/<id>/session.json   {"created_unix": ..., "key_bytes": ...}
//! ```
//!
//! A session is built whole in `tmp/<id>/` and then moved into `sessions/` with one `rename` of
//! the directory. `tmp/` and `sessions/` are on the same file system, so the rename is atomic: a
//! reader (or a server restarted after a crash) sees either no `sessions/<id>` or a complete one,
//! never a half-written key file. The key file is flushed to disk before the rename so that a
//! power loss cannot leave a complete-looking directory over a truncated file.

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use rand_core::{OsRng, TryRngCore};

/// Name of the key file inside a session directory.
const KEYS_FILE: &str = "keys.bin";
/// Name of the metadata file inside a session directory.
const META_FILE: &str = "session.json";

/// A session id: 128 bits from the operating system's RNG, written as 32 lowercase hex digits.
///
/// Ids come from URLs and name directories, so parsing accepts exactly that form and nothing
/// else: no `/`, no `..`, no other length, hence no path traversal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct SessionId([u8; 16]);

impl SessionId {
    /// A fresh random id.
    pub(crate) fn random() -> io::Result<Self> {
        let mut bytes = [0u8; 16];
        OsRng
            .try_fill_bytes(&mut bytes)
            .map_err(|e| io::Error::other(format!("OS random generator: {e}")))?;
        Ok(SessionId(bytes))
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The text is not 32 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadSessionId;

impl FromStr for SessionId {
    type Err = BadSessionId;

    fn from_str(s: &str) -> Result<Self, BadSessionId> {
        fn nibble(c: u8) -> Result<u8, BadSessionId> {
            match c {
                b'0'..=b'9' => Ok(c - b'0'),
                b'a'..=b'f' => Ok(c - b'a' + 10),
                // Upper case is refused so that one session has one spelling, hence one path.
                _ => Err(BadSessionId),
            }
        }
        let s = s.as_bytes();
        if s.len() != 32 {
            return Err(BadSessionId);
        }
        let mut bytes = [0u8; 16];
        for (i, pair) in s.chunks_exact(2).enumerate() {
            bytes[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
        }
        Ok(SessionId(bytes))
    }
}

/// The two directories under `data_dir`.
#[derive(Debug)]
pub(crate) struct Store {
    sessions_dir: PathBuf,
    tmp_dir: PathBuf,
}

impl Store {
    /// Creates the layout if needed, deletes leftovers of uploads that a previous run did not
    /// finish, and returns the sessions already stored.
    pub(crate) fn open(data_dir: &Path) -> io::Result<(Store, HashSet<SessionId>)> {
        let store = Store {
            sessions_dir: data_dir.join("sessions"),
            tmp_dir: data_dir.join("tmp"),
        };
        fs::create_dir_all(&store.sessions_dir)?;
        // Anything in tmp/ belongs to an upload that died with the previous process: it never
        // became a session, and nobody can resume it.
        if store.tmp_dir.exists() {
            fs::remove_dir_all(&store.tmp_dir)?;
        }
        fs::create_dir_all(&store.tmp_dir)?;

        let mut sessions = HashSet::new();
        for entry in fs::read_dir(&store.sessions_dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let id = name.to_str().and_then(|n| n.parse::<SessionId>().ok());
            match id {
                Some(id) if entry.path().join(KEYS_FILE).is_file() => {
                    sessions.insert(id);
                }
                // Only a person can have put this here; leave it alone rather than guess.
                _ => eprintln!(
                    "ensi-server: ignoring {} (not a session directory)",
                    entry.path().display()
                ),
            }
        }
        Ok((store, sessions))
    }

    /// Where the keys of a stored session are.
    pub(crate) fn keys_path(&self, id: SessionId) -> PathBuf {
        self.sessions_dir.join(id.to_string()).join(KEYS_FILE)
    }

    /// Creates the staging directory of a new session.
    pub(crate) fn stage(&self, id: SessionId) -> io::Result<Staging> {
        let dir = self.tmp_dir.join(id.to_string());
        fs::create_dir(&dir)?;
        Ok(Staging {
            dir,
            final_dir: self.sessions_dir.join(id.to_string()),
            committed: false,
        })
    }
}

/// A session being built in `tmp/<id>/`. Dropping it without [`Staging::commit`] deletes it,
/// which is what makes every failure path (size limit, bad keys, client gone, the request
/// future cancelled at any `.await`) clean up without a line of its own.
#[derive(Debug)]
pub(crate) struct Staging {
    dir: PathBuf,
    final_dir: PathBuf,
    committed: bool,
}

impl Staging {
    /// Where the upload writes the keys.
    pub(crate) fn keys_path(&self) -> PathBuf {
        self.dir.join(KEYS_FILE)
    }

    /// Writes `session.json` and moves the directory into `sessions/` in one rename.
    pub(crate) fn commit(mut self, key_bytes: u64) -> io::Result<()> {
        let created_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let meta = serde_json::json!({ "created_unix": created_unix, "key_bytes": key_bytes });
        fs::write(self.dir.join(META_FILE), meta.to_string())?;
        fs::rename(&self.dir, &self.final_dir)?;
        self.committed = true;
        // Make the rename itself durable; best effort, as not every file system allows
        // opening a directory.
        if let Some(parent) = self.final_dir.parent() {
            if let Ok(d) = fs::File::open(parent) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            if let Err(e) = fs::remove_dir_all(&self.dir) {
                eprintln!("ensi-server: could not remove {}: {e}", self.dir.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_round_trips_and_rejects_everything_else() {
        let id = SessionId::random().unwrap();
        let text = id.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(text.parse::<SessionId>(), Ok(id));
        assert_ne!(SessionId::random().unwrap(), id);
        for bad in [
            "",
            "../../etc",
            "..",
            &text[..31],
            &format!("{text}0"),
            "0123456789ABCDEF0123456789abcdef",
            "0123456789abcdef0123456789abcdeg",
            "0123456789abcdef/123456789abcdef",
        ] {
            assert_eq!(bad.parse::<SessionId>(), Err(BadSessionId), "{bad:?}");
        }
    }
}
