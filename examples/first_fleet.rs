//! A first fleet through the library: one tenement server, one customer domain
//! routed to it, read back. Needs no network; given a real `ten serve` (`TEN_URL`,
//! its admin token in `TEN_TOKEN`), it also starts and stops the tenant there.

use std::path::Path;

use slum::{Server, SlumDb, Tenant};

// `pub`: tests/readme.rs runs it too.
#[tokio::main]
pub async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ten = std::env::var("TEN_URL").ok();
    let url = ten.as_deref().unwrap_or("http://east.example.com");
    let token = std::env::var("TEN_TOKEN").ok();
    let db = first_fleet(&dir.path().join("slum.db"), url, token).await?;

    let tenant = db.get_tenant_by_domain("customer-1.example.com").await?;
    let server = db.get_server(&tenant.server_id).await?;
    let (key, free) = (tenant.instance_key(), server.free_capacity_mb());
    println!(
        "{} -> {key} on {}, {free} MB free",
        tenant.domain, server.id
    );

    // Spawning asks the tenement server, so only when there is one.
    if ten.is_some() {
        let instance = db
            .spawn_instance("customer-1", "api", "prod", "east")
            .await?;
        println!("started {} on {}", instance.tenant, instance.server_id);
        db.stop_instance("customer-1:prod").await?;
    }
    Ok(())
}

/// Creates the fleet database at `path` with the tenement server `east` at `url`
/// and the domain `customer-1.example.com` routed to its instance `prod`.
pub async fn first_fleet(path: &Path, url: &str, token: Option<String>) -> anyhow::Result<SlumDb> {
    let db = SlumDb::init(path).await?;
    db.add_server(&Server {
        id: "east".into(),
        url: url.into(),
        region: Some("us-east".into()),
        capacity_mb: 1024,
        token,
        ..Default::default()
    })
    .await?;
    db.add_tenant(&Tenant {
        domain: "customer-1.example.com".into(),
        server_id: "east".into(),
        process: "api".into(),
        instance_id: "prod".into(),
        ..Default::default()
    })
    .await?;
    Ok(db)
}
