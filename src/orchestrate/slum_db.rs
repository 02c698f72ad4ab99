//! [`SlumDb`]: the library's front door, the API of the seed page.
//!
//! It is the fleet database ([`FleetDb`], whose records it dereferences to)
//! together with the HTTP client of the fleet's tenement servers, through
//! which the rest of this folder spawns, stops, lists, reconciles and moves
//! instances (`impl SlumDb` in [`orchestration`](super::orchestration),
//! [`relocation`](super::relocation), [`auto_placement`](super::auto_placement)
//! and [`tenant_move`](super::tenant_move)). The database knows nothing of
//! tenement servers; this is where the two meet. A `SlumDb` is cheap to clone
//! and safe to share between tasks.

use std::path::Path;
use std::sync::Arc;

use crate::error::Result;
use crate::fleet::db::{FleetDb, FleetOptions};
use crate::fleet::store::Store;
use crate::orchestrate::tenement::TenementClients;

/// The fleet database and orchestrator.
#[derive(Clone)]
pub struct SlumDb {
    fleet: FleetDb,
    pub(crate) tenement: TenementClients,
}

impl std::fmt::Debug for SlumDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlumDb")
            .field("options", &self.fleet.options)
            .finish_non_exhaustive()
    }
}

/// Every record call of the fleet database is a call of `SlumDb` too, as the
/// seed page has it (`db.add_server(...)`, `db.get_tenant_by_domain(...)`).
impl std::ops::Deref for SlumDb {
    type Target = FleetDb;

    fn deref(&self) -> &FleetDb {
        &self.fleet
    }
}

impl SlumDb {
    /// Opens the fleet database at `path`, creating the file and schema when
    /// missing and applying pending migrations. A `postgres://` (or
    /// `postgresql://`) URL opens that PostgreSQL database instead, for fleets
    /// where several routers share one; any other path is a SQLite file.
    pub async fn init(path: impl AsRef<Path>) -> Result<Self> {
        Self::init_with(path, FleetOptions::default()).await
    }

    /// [`SlumDb::init`] with explicit fleet settings.
    pub async fn init_with(path: impl AsRef<Path>, options: FleetOptions) -> Result<Self> {
        Ok(Self::over(FleetDb::open(path, options).await?))
    }

    /// A `SlumDb` over any [`Store`] backend.
    pub fn with_store(store: Arc<dyn Store>, options: FleetOptions) -> Self {
        Self::over(FleetDb::with_store(store, options))
    }

    /// A `SlumDb` over an open fleet database.
    pub fn over(fleet: FleetDb) -> Self {
        let tenement = TenementClients::new(&fleet.options);
        SlumDb { fleet, tenement }
    }

    /// The fleet database alone (what the router keeps its table in step with).
    pub fn fleet(&self) -> &FleetDb {
        &self.fleet
    }

    /// The shared tenement HTTP client.
    pub fn tenement_clients(&self) -> &TenementClients {
        &self.tenement
    }
}
