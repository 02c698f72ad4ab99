//! `../shared/seed/fleet-mode.md`, line by line, against two real tenement servers
//! named east and west. Only the URLs and tokens differ from the page (the page's
//! example.com hosts are replaced by the test servers' addresses).

mod common;

use slum::local_fleet::LocalFleet;
use slum::{Server, SlumDb, Tenant};

type Result<T> = anyhow::Result<T>;

fn url_of(fleet: &LocalFleet, name: &str) -> String {
    fleet.server(name).expect("server").url()
}

fn token_of(fleet: &LocalFleet, name: &str) -> Option<String> {
    Some(fleet.server(name).expect("server").token.clone())
}

fn domain_of(fleet: &LocalFleet, name: &str) -> Option<String> {
    Some(fleet.server(name).expect("server").domain.clone())
}

/// "1. Initialize the Fleet Database", as a function returning `Result` like the
/// page's `main`.
async fn setup(path: impl AsRef<std::path::Path>, fleet: &LocalFleet) -> Result<SlumDb> {
    // Create/open the fleet database
    let db = SlumDb::init(path).await?;

    // Add buildings (tenement servers) to the fleet
    db.add_server(&Server {
        id: "east".into(),
        url: url_of(fleet, "east"),
        region: Some("us-east".into()),
        capacity_mb: 1024,
        token: token_of(fleet, "east"),
        domain: domain_of(fleet, "east"),
        ..Default::default()
    })
    .await?;

    db.add_server(&Server {
        id: "west".into(),
        url: url_of(fleet, "west"),
        region: Some("us-west".into()),
        capacity_mb: 1024,
        token: token_of(fleet, "west"),
        domain: domain_of(fleet, "west"),
        ..Default::default()
    })
    .await?;

    Ok(db)
}

#[tokio::test]
async fn the_seed_page_works_as_shown() -> Result<()> {
    let Some(fleet) = common::fleet_named(&["east", "west"]).await else {
        return Ok(());
    };
    // A SQLite file, or a postgres:// URL when the suite runs on PostgreSQL.
    let test_db = common::TestDb::new().await;
    let db = setup(test_db.url(), &fleet).await?;
    assert_eq!(db.list_servers().await?.len(), 2);

    // ## 2. Route Tenants to Servers
    // Assign a tenant to a specific server
    db.add_tenant(&Tenant {
        domain: "customer-1.example.com".into(),
        server_id: "east".into(),
        process: "api".into(),
        instance_id: "prod".into(),
        ..Default::default()
    })
    .await?;

    // Lookup where a tenant lives
    let tenant = db.get_tenant_by_domain("customer-1.example.com").await?;
    println!("Tenant is on server: {}", tenant.server_id);
    assert_eq!(tenant.server_id, "east");

    // ## 3. Orchestrate Spawn/Stop Across Fleet
    // Spawn instance across fleet
    db.spawn_instance(
        "customer-2",
        "api",
        "prod",
        "west", // target server
    )
    .await?;
    let west = fleet.server("west").expect("west");
    assert!(common::ask(west, "customer-2", "api")
        .await
        .contains("tenant=customer-2 process=api server=west"));

    // Stop instance (slum finds the right server)
    db.stop_instance("customer-2:prod").await?;

    // List all instances across all servers
    let instances = db.list_all_instances().await?;
    assert!(instances.is_empty(), "{instances:?}");

    // ## API / Server Management
    // Add server (east exists already: the page's snippet adds it afresh)
    let east_again = db
        .add_server(&Server {
            id: "east".into(),
            url: url_of(&fleet, "east"),
            capacity_mb: 2048,
            ..Default::default()
        })
        .await;
    assert!(matches!(east_again, Err(slum::Error::AlreadyExists { .. })));

    // Update server
    let mut updated_server = db.get_server("east").await?;
    updated_server.capacity_mb = 2048;
    db.update_server(&updated_server).await?;
    assert_eq!(db.get_server("east").await?.capacity_mb, 2048);

    // List servers
    let servers = db.list_servers().await?;
    assert_eq!(servers.len(), 2);

    // Get server stats
    let stats = db.get_server_stats("east").await?;
    assert!(stats.reachable);
    assert_eq!((stats.capacity_mb, stats.tenants), (2048, 1));

    // ## Tenant Management
    // Add tenant
    db.add_tenant(&Tenant {
        domain: "customer.example.com".into(),
        server_id: "east".into(),
        process: "api".into(),
        instance_id: "prod".into(),
        ..Default::default()
    })
    .await?;

    // Get tenant
    let tenant = db.get_tenant_by_domain("customer.example.com").await?;
    assert_eq!(tenant.name, "customer");

    // List tenants on server
    let tenants = db.list_tenants_on_server("east").await?;
    assert_eq!(tenants.len(), 2);

    // Reassign tenant to different server
    let mut updated_tenant = tenant.clone();
    updated_tenant.server_id = "west".into();
    db.update_tenant(&updated_tenant).await?;
    assert_eq!(db.list_tenants_on_server("west").await?.len(), 1);

    // ## Instance Management
    // Spawn on specific server
    db.spawn_instance("customer-3", "api", "prod", "east")
        .await?;

    // List instances on server
    let instances = db.list_instances_on_server("east").await?;
    assert_eq!(instances.len(), 1);
    assert_eq!(instances[0].instance.key(), "customer-3:prod");

    // Get instance status
    let status = db.get_instance_status("customer-3:prod").await?;
    assert_eq!(status.state, slum::InstanceState::Running);

    // Stop (slum finds server automatically)
    db.stop_instance("customer-3:prod").await?;
    assert!(db.list_instances_on_server("east").await?.is_empty());

    // ## Use Cases / Geographic Distribution
    let preferred_region: Option<String> = Some("us-west".into());
    let mut tenant = db.get_tenant_by_domain("customer-1.example.com").await?;
    if let Some(region) = preferred_region {
        // Find server in that region
        let server = db.find_server_in_region(&region).await?;
        // Reassign tenant
        tenant.server_id = server.id;
        db.update_tenant(&tenant).await?;
    }
    assert_eq!(
        db.get_tenant_by_domain("customer-1.example.com")
            .await?
            .server_id,
        "west"
    );

    // ## Load Balancing
    db.spawn_instance("busy", "api", "prod", "east").await?;
    let new_customer_id = "customer-5".to_owned();
    let servers = db.list_servers().await?;
    let least_used = servers
        .iter()
        .min_by_key(|s| s.used_capacity_mb())
        .expect("No servers available");

    db.spawn_instance(&new_customer_id, "api", "prod", &least_used.id)
        .await?;
    assert_eq!(least_used.id, "west", "east carries 'busy'");
    assert!(common::ask(west, "customer-5", "api")
        .await
        .contains("server=west"));

    // ## High Availability
    // Primary instance
    db.spawn_instance("customer-4", "api", "prod", "east")
        .await?;

    // Backup instance
    db.spawn_instance("customer-4", "api", "backup", "west")
        .await?;
    let east = fleet.server("east").expect("east");
    assert!(common::ask(east, "customer-4", "api")
        .await
        .contains("server=east"));
    assert!(common::ask(west, "customer-4", "api")
        .await
        .contains("server=west"));

    let all = db.list_all_instances().await?;
    let keys: Vec<String> = all.iter().map(|s| s.instance.key()).collect();
    assert_eq!(
        keys,
        [
            "busy:prod",
            "customer-4:backup",
            "customer-4:prod",
            "customer-5:prod"
        ]
    );
    assert!(all.iter().all(|s| s.state == slum::InstanceState::Running));
    Ok(())
}
