//! The local admin token file: where `slum serve` writes the first admin token
//! of a fleet database that has none (and `slum token reset --token-file` a new
//! one), and where the CLI on the same machine reads it.
//!
//! One file holds one fleet's token, so `slum serve` never overwrites a file
//! that holds a token: when the database has no token yet, a token already in
//! the file can only be another fleet's (or a lost database's), and overwriting
//! it would lock that fleet's operator out. It refuses to start instead, naming
//! the file and `--token-file`. The secret is written (mode 0600, in a directory
//! made 0700) before the token is recorded in the database, and taken back when
//! recording fails, so that no valid token exists that no file holds. Every
//! error names the file or directory at fault.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail};

use crate::fleet::api_tokens::{MintedToken, BOOTSTRAP};
use crate::fleet::db::FleetDb;

/// What to do with a token file that already holds a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Refuse (`slum serve`: it may be another fleet's).
    Keep,
    /// Replace it (`slum token reset --token-file`: the operator asked).
    #[cfg_attr(not(feature = "cli"), allow(dead_code))]
    Replace,
}

/// A secret written to a token file; [`Written::undo`] puts back what was
/// there before.
#[derive(Debug)]
pub struct Written {
    path: PathBuf,
    /// The file's contents before, when it existed.
    previous: Option<Vec<u8>>,
}

impl Written {
    /// Restores the file as it was before the write (removes it when there was
    /// none).
    pub fn undo(self) -> anyhow::Result<()> {
        let result = match &self.previous {
            Some(bytes) => std::fs::write(&self.path, bytes),
            None => std::fs::remove_file(&self.path),
        };
        result.map_err(|e| anyhow!("cannot restore the token file {}: {e}", self.path.display()))
    }
}

/// Writes `secret` to `path`, mode 0600, creating its directory (0700) when
/// missing. A file holding anything but blanks is refused with
/// [`Existing::Keep`], replaced with [`Existing::Replace`].
pub fn write(path: &Path, secret: &str, existing: Existing) -> anyhow::Result<Written> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let shown = path.display();
    let previous = match std::fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => bail!(
            "cannot read the token file {shown}: {e}; give another path with --token-file \
             (or SLUM_TOKEN_FILE)"
        ),
    };
    let holds_token = previous
        .as_ref()
        .is_some_and(|b| !b.iter().all(u8::is_ascii_whitespace));
    if holds_token && existing == Existing::Keep {
        bail!(
            "the token file {shown} already holds a token that this fleet database does not \
             know (another fleet's?); not overwriting it. Start with --token-file PATH (or \
             SLUM_TOKEN_FILE=PATH) to write this fleet's admin token elsewhere, and give the \
             CLI the same SLUM_TOKEN_FILE; or remove {shown} if its fleet is gone"
        );
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| {
                anyhow!(
                    "cannot create the directory {} for the token file {shown}: {e}; \
                     give a writable path with --token-file (or SLUM_TOKEN_FILE)",
                    dir.display()
                )
            })?;
    }
    let cannot_write = |e: std::io::Error| {
        anyhow!(
            "cannot write the admin token to {shown}: {e}; give a writable path with \
             --token-file (or SLUM_TOKEN_FILE)"
        )
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(0o600);
    if previous.is_some() {
        options.truncate(true);
    } else {
        // Nobody else's file is ever truncated: a file created meanwhile fails.
        options.create_new(true);
    }
    let mut file = options.open(path).map_err(cannot_write)?;
    // `mode` applies only to a file this call creates; an existing one may be
    // readable by others.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(cannot_write)?;
    file.write_all(secret.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(cannot_write)?;
    Ok(Written {
        path: path.to_owned(),
        previous,
    })
}

/// When `db` has no API token: writes a fresh admin token to `path`, then
/// records it (see the module's comment). `database` names the database in
/// messages.
pub async fn bootstrap(db: &FleetDb, path: &Path, database: &str) -> anyhow::Result<()> {
    if !db.list_api_tokens().await?.is_empty() {
        return Ok(());
    }
    write_and_record(db, path, database).await
}

/// [`bootstrap`] once the database was seen without a token.
async fn write_and_record(db: &FleetDb, path: &Path, database: &str) -> anyhow::Result<()> {
    let minted = MintedToken::new(BOOTSTRAP)?;
    let written = write(path, minted.secret(), Existing::Keep)
        .map_err(|e| anyhow!("the fleet database {database} has no API token yet: {e:#}"))?;
    if let Err(e) = db.record_api_token(&minted).await {
        let undone = written.undo();
        // Several routers started at once on a new shared database: one of
        // them recorded the first admin token meanwhile (names are unique),
        // and its token file holds it. This router starts without one.
        let raced = matches!(
            &e,
            crate::error::Error::AlreadyExists {
                kind: crate::error::Kind::Token,
                ..
            }
        );
        if raced && undone.is_ok() {
            tracing::info!(
                "another router wrote this fleet's first admin token meanwhile, to its own \
                 token file; {} was not kept",
                path.display()
            );
            return Ok(());
        }
        bail!(
            "cannot record the admin token written to {} ({}): {e}",
            path.display(),
            match undone {
                Ok(()) => "the file was removed".to_owned(),
                Err(u) => format!("{u:#}"),
            }
        );
    }
    tracing::info!(path = %path.display(), "no API token existed: wrote an admin token");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_token_file_is_private_and_never_overwritten_unless_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config/slum/token");
        let written = write(&path, "slum_first", Existing::Keep).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "slum_first");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("config/slum")), 0o700);

        let e = write(&path, "slum_second", Existing::Keep)
            .unwrap_err()
            .to_string();
        assert!(e.contains(&path.display().to_string()), "{e}");
        assert!(e.contains("--token-file"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "slum_first");

        // Asked to, it replaces the token; undone, the old one is back.
        let replaced = write(&path, "slum_third", Existing::Replace).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "slum_third");
        replaced.undo().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "slum_first");
        written.undo().unwrap();
        assert!(!path.exists());

        // An empty (or blank) file holds no token: it is used, and made private.
        std::fs::write(&path, "\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write(&path, "slum_fourth", Existing::Keep).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "slum_fourth");
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn an_unwritable_token_path_fails_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        // A file where a directory should be: fails even for root.
        let blocker = dir.path().join("home");
        std::fs::write(&blocker, "").unwrap();
        let path = blocker.join(".config/slum/token");
        let e = format!("{:#}", write(&path, "slum_x", Existing::Keep).unwrap_err());
        assert!(
            e.contains(&blocker.join(".config/slum").display().to_string()),
            "{e}"
        );
        assert!(e.contains("--token-file"), "{e}");
        let e = format!(
            "{:#}",
            write(dir.path(), "slum_x", Existing::Keep).unwrap_err()
        );
        assert!(e.contains(&dir.path().display().to_string()), "{e}");
    }

    #[tokio::test]
    async fn bootstrap_records_nothing_when_the_file_cannot_be_written() {
        let (_test_db, db) = crate::test_db::temp_db().await;
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("home");
        std::fs::write(&blocker, "").unwrap();
        let e = bootstrap(db.fleet(), &blocker.join("token"), "fleet.db")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains(&blocker.display().to_string()), "{e}");
        assert!(db.list_api_tokens().await.unwrap().is_empty());

        let path = dir.path().join("token");
        bootstrap(db.fleet(), &path, "fleet.db").await.unwrap();
        let secret = std::fs::read_to_string(&path).unwrap();
        assert!(db.verify_api_token(&secret).await.unwrap().is_some());
        // With a token in the database, the file is left alone.
        std::fs::write(&path, "edited").unwrap();
        bootstrap(db.fleet(), &path, "fleet.db").await.unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "edited");
    }

    /// Two routers started at once on a new shared database both see it
    /// without a token: the second to record its admin token starts all the
    /// same, without a file, and the first's token stands.
    #[tokio::test]
    async fn a_router_that_loses_the_bootstrap_race_starts_without_a_file() {
        let (_test_db, db) = crate::test_db::temp_db().await;
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("a/token");
        bootstrap(db.fleet(), &first, "fleet").await.unwrap();
        let second = dir.path().join("b/token");
        write_and_record(db.fleet(), &second, "fleet")
            .await
            .unwrap();
        assert!(!second.exists(), "the loser's file is taken back");
        let tokens = db.list_api_tokens().await.unwrap();
        assert_eq!(tokens.len(), 1, "{tokens:?}");
        let secret = std::fs::read_to_string(&first).unwrap();
        assert!(db.verify_api_token(&secret).await.unwrap().is_some());
    }
}
