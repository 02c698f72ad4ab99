//! Throw-away fleet databases on either backend, so that one test suite runs
//! against SQLite and against a real PostgreSQL.
//!
//! By default every [`TestDb`] is a SQLite file in a temp dir. With
//! `SLUM_TEST_BACKEND=postgres` it is a fresh database (`slum_t_<random>`) in the
//! PostgreSQL cluster whose admin URL is `SLUM_TEST_POSTGRES` (a throw-away
//! cluster: `scripts/with-postgres.sh` starts one), dropped again when the
//! `TestDb` is.
//!
//! Shared by the integration tests (`tests/common`) and the library's unit tests
//! (included by `src/lib.rs` under `cfg(test)`), so it names slum's types only
//! through `super`.
#![allow(dead_code)]

use std::path::PathBuf;

use sqlx::{Column, Connection, Executor, Row};

use super::store::{postgres::PostgresStore, sqlite::SqliteStore, Store};
use super::{FleetOptions, SlumDb};

/// The fleet database backend the tests run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    /// Databases are created through `admin_url`.
    Postgres {
        admin_url: String,
    },
}

impl Backend {
    /// The backend chosen by `SLUM_TEST_BACKEND` (`sqlite`, the default, or
    /// `postgres`, which needs `SLUM_TEST_POSTGRES`).
    pub fn from_env() -> Backend {
        match std::env::var("SLUM_TEST_BACKEND").as_deref() {
            Err(_) | Ok("") | Ok("sqlite") => Backend::Sqlite,
            Ok("postgres") => Backend::Postgres {
                admin_url: std::env::var("SLUM_TEST_POSTGRES").expect(
                    "SLUM_TEST_BACKEND=postgres needs SLUM_TEST_POSTGRES, the admin URL of a \
                     throw-away PostgreSQL cluster (scripts/with-postgres.sh starts one)",
                ),
            },
            Ok(other) => panic!("SLUM_TEST_BACKEND is 'sqlite' or 'postgres', not '{other}'"),
        }
    }
}

/// A fresh, empty fleet database; gone when this is dropped.
pub struct TestDb {
    url: String,
    storage: Storage,
}

enum Storage {
    Sqlite {
        /// The temp dir the file is in, unless the file is not ours.
        dir: Option<tempfile::TempDir>,
        path: PathBuf,
    },
    Postgres {
        /// Where to drop the database from, unless it is not ours.
        admin_url: Option<String>,
        name: String,
    },
}

impl TestDb {
    /// A fresh database on the backend chosen by the environment. Nothing is in
    /// it yet, not even the schema: the first [`SlumDb::init`] makes that.
    pub async fn new() -> TestDb {
        match Backend::from_env() {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let path = dir.path().join("slum.db");
                TestDb {
                    url: path.to_str().expect("temp dir path is UTF-8").to_owned(),
                    storage: Storage::Sqlite {
                        dir: Some(dir),
                        path,
                    },
                }
            }
            Backend::Postgres { admin_url } => {
                let name = format!("slum_t_{:016x}", rand::random::<u64>());
                let mut admin = sqlx::PgConnection::connect(&admin_url)
                    .await
                    .expect("connect to SLUM_TEST_POSTGRES");
                admin
                    .execute(format!("CREATE DATABASE \"{name}\"").as_str())
                    .await
                    .expect("create test database");
                admin.close().await.expect("close admin connection");
                let mut url = url::Url::parse(&admin_url).expect("SLUM_TEST_POSTGRES is a URL");
                url.set_path(&name);
                TestDb {
                    url: url.into(),
                    storage: Storage::Postgres {
                        admin_url: Some(admin_url),
                        name,
                    },
                }
            }
        }
    }

    /// The database at `url` (made by another process's [`TestDb::new`]), left
    /// alone when this is dropped.
    pub fn existing(url: &str) -> TestDb {
        let storage = if super::store::postgres::is_postgres_url(url) {
            Storage::Postgres {
                admin_url: None,
                name: String::new(),
            }
        } else {
            Storage::Sqlite {
                dir: None,
                path: PathBuf::from(url),
            }
        };
        TestDb {
            url: url.to_owned(),
            storage,
        }
    }

    /// What [`SlumDb::init`] opens: a file path or a `postgres://` URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.storage, Storage::Postgres { .. })
    }

    /// The SQLite file, on that backend.
    pub fn sqlite_path(&self) -> Option<&std::path::Path> {
        match &self.storage {
            Storage::Sqlite { path, .. } => Some(path),
            Storage::Postgres { .. } => None,
        }
    }

    /// Opens the database with default settings.
    pub async fn open(&self) -> SlumDb {
        self.open_with(FleetOptions::default()).await
    }

    pub async fn open_with(&self, options: FleetOptions) -> SlumDb {
        SlumDb::init_with(&self.url, options)
            .await
            .expect("open the test fleet database")
    }

    /// The bare store, with a connection pool of its own (as another process
    /// would have).
    pub async fn open_store(&self) -> std::sync::Arc<dyn Store> {
        match &self.storage {
            Storage::Sqlite { path, .. } => {
                std::sync::Arc::new(SqliteStore::open(path).await.expect("open store"))
            }
            Storage::Postgres { .. } => {
                std::sync::Arc::new(PostgresStore::connect(&self.url).await.expect("open store"))
            }
        }
    }

    /// Every row of every fleet table as text, read straight from the database
    /// (not through slum), in the same format on both backends: the "database
    /// unchanged" check of rejected calls.
    pub async fn dump(&self) -> Vec<String> {
        // Key columns come first in each table: ordering by them is stable, and
        // both schemas compare text byte by byte.
        const TABLES: [&str; 7] = [
            "servers",
            "tenants",
            "instances",
            "certificates",
            "acme_http01",
            "acme_alpn01",
            "acme_account",
        ];
        let mut out = Vec::new();
        match &self.storage {
            Storage::Sqlite { path, .. } => {
                let mut conn =
                    sqlx::SqliteConnection::connect(&format!("sqlite:{}", path.display()))
                        .await
                        .expect("open for dump");
                for table in TABLES {
                    let rows = sqlx::query(&format!("SELECT * FROM {table} ORDER BY 1, 2"))
                        .fetch_all(&mut conn)
                        .await
                        .expect("dump");
                    out.extend(rows.iter().map(|row| format!("{table}: {}", row_text(row))));
                }
                conn.close().await.expect("close after dump");
            }
            Storage::Postgres { .. } => {
                let mut conn = sqlx::PgConnection::connect(&self.url)
                    .await
                    .expect("open for dump");
                for table in TABLES {
                    let rows = sqlx::query(&format!("SELECT * FROM {table} ORDER BY 1, 2"))
                        .fetch_all(&mut conn)
                        .await
                        .expect("dump");
                    out.extend(rows.iter().map(|row| format!("{table}: {}", row_text(row))));
                }
                conn.close().await.expect("close after dump");
            }
        }
        out
    }

    /// Each server's id, its `used_mb` counter and the sum it stands for (the
    /// memory of the instances placed on it or moving to it), read straight
    /// from the database, ordered by id.
    pub async fn used_mb_against_sum(&self) -> Vec<(String, i64, i64)> {
        let query = "SELECT s.id, s.used_mb, CAST(COALESCE((SELECT SUM(i.memory_mb) \
                     FROM instances i WHERE i.server_id = s.id OR i.moving_to = s.id), 0) \
                     AS BIGINT) FROM servers s ORDER BY s.id";
        match &self.storage {
            Storage::Sqlite { path, .. } => {
                let mut conn =
                    sqlx::SqliteConnection::connect(&format!("sqlite:{}", path.display()))
                        .await
                        .expect("open for the sum");
                let rows = sqlx::query_as(query).fetch_all(&mut conn).await;
                conn.close().await.expect("close after the sum");
                rows.expect("sum")
            }
            Storage::Postgres { .. } => {
                let mut conn = sqlx::PgConnection::connect(&self.url)
                    .await
                    .expect("open for the sum");
                let rows = sqlx::query_as(query).fetch_all(&mut conn).await;
                conn.close().await.expect("close after the sum");
                rows.expect("sum")
            }
        }
    }

    /// The versions of the migrations applied to the database, in order.
    pub async fn migration_versions(&self) -> Vec<i64> {
        let query = "SELECT version FROM _sqlx_migrations ORDER BY version";
        match &self.storage {
            Storage::Sqlite { path, .. } => {
                let mut conn =
                    sqlx::SqliteConnection::connect(&format!("sqlite:{}", path.display()))
                        .await
                        .expect("open");
                sqlx::query_scalar(query)
                    .fetch_all(&mut conn)
                    .await
                    .expect("migrations")
            }
            Storage::Postgres { .. } => {
                let mut conn = sqlx::PgConnection::connect(&self.url).await.expect("open");
                sqlx::query_scalar(query)
                    .fetch_all(&mut conn)
                    .await
                    .expect("migrations")
            }
        }
    }

    /// The versions of the migration files of this backend
    /// (`migrations/{sqlite,postgres}/NNNN_*.sql`), in order.
    pub fn migration_files(&self) -> Vec<i64> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(if self.is_postgres() {
                "postgres"
            } else {
                "sqlite"
            });
        let mut versions: Vec<i64> = std::fs::read_dir(&dir)
            .expect("migrations dir")
            .filter_map(|entry| {
                let name = entry.ok()?.file_name().into_string().ok()?;
                name.strip_suffix(".sql")?.split('_').next()?.parse().ok()
            })
            .collect();
        versions.sort_unstable();
        versions
    }
}

/// `column=value` for each column of a row; integers and text print the same on
/// both backends (booleans as 0 and 1), NULL as `NULL`.
fn row_text<R>(row: &R) -> String
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<bool>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    (0..row.columns().len())
        .map(|i| {
            let value: Option<String> = row
                .try_get::<Option<String>, _>(i)
                .or_else(|_| {
                    row.try_get::<Option<i64>, _>(i)
                        .map(|v| v.map(|n| n.to_string()))
                })
                // PostgreSQL's booleans, written as SQLite stores them.
                .or_else(|_| {
                    row.try_get::<Option<bool>, _>(i)
                        .map(|v| v.map(|b| u8::from(b).to_string()))
                })
                .expect("a text, integer or boolean column");
            format!(
                "{}={}",
                row.columns()[i].name(),
                value.unwrap_or_else(|| "NULL".into())
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Storage::Postgres {
            admin_url: Some(admin_url),
            name,
        } = &self.storage
        else {
            return;
        };
        let (admin_url, name) = (admin_url.clone(), name.clone());
        // Drop cannot await, and may run on the test's runtime: drop the database
        // from a thread (and runtime) of its own. FORCE ends the connections the
        // test's pools still hold.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut admin = sqlx::PgConnection::connect(&admin_url)
                    .await
                    .map_err(|e| e.to_string())?;
                admin
                    .execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str())
                    .await
                    .map_err(|e| format!("{name}: {e}"))?;
                admin.close().await.map_err(|e| e.to_string())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: test database not dropped: {e}"),
            Err(_) => eprintln!("warning: test database not dropped: the dropping thread panicked"),
        }
    }
}

/// A fresh fleet database, opened; the [`TestDb`] keeps it alive.
pub async fn temp_db() -> (TestDb, SlumDb) {
    temp_db_with(FleetOptions::default()).await
}

pub async fn temp_db_with(options: FleetOptions) -> (TestDb, SlumDb) {
    let test_db = TestDb::new().await;
    let db = test_db.open_with(options).await;
    (test_db, db)
}
