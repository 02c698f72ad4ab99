//! The demo fleet: three real tenement servers (each in its own network
//! namespace), a fleet database on the embedded SQLite default, a few tenants
//! spawned across the fleet, and a request to each answered by the right server.
//! Ctrl-C tears it all down. Run it with `sudo scripts/run-fleet.sh`.

use std::path::PathBuf;

use anyhow::Context;
use slum::local_fleet::{find_ten, FleetSpec, LocalFleet};
use slum::{Server, SlumDb, Tenant};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let app = std::env::var_os("SLUM_DEMO_APP")
        .map(PathBuf::from)
        .context("SLUM_DEMO_APP is not set; use scripts/run-fleet.sh")?;
    let ten = find_ten()?;
    println!("starting 3 tenement servers...");
    let fleet = LocalFleet::start(&FleetSpec::new(3, ten, app)).await?;
    let dir = tempfile::tempdir()?;
    let db = SlumDb::init(dir.path().join("slum.db")).await?;
    for (s, region) in fleet.servers.iter().zip(["eu-west", "eu-west", "us-east"]) {
        db.add_server(&Server {
            region: Some(region.into()),
            ..s.record()
        })
        .await?;
        println!("  server {} at {} ({region})", s.name, s.url());
    }
    let tenants = [
        ("acme.example.com", "s1"),
        ("globex.example.com", "s2"),
        ("initech.example.com", "s3"),
        ("umbrella.example.com", "s1"),
    ];
    for (domain, server) in tenants {
        db.add_tenant(&Tenant {
            domain: domain.into(),
            server_id: server.into(),
            process: "api".into(),
            instance_id: "prod".into(),
            ..Default::default()
        })
        .await?;
        let t = db.get_tenant_by_domain(domain).await?;
        db.spawn_instance(&t.name, &t.process, &t.instance_id, &t.server_id)
            .await?;
    }
    let http = reqwest::Client::builder().no_proxy().build()?;
    println!("\nrequests:");
    for (domain, _) in tenants {
        let t = db.get_tenant_by_domain(domain).await?;
        let inst = db.get_instance(&t.instance_key()).await?;
        let server = db.get_server(&inst.server_id).await?;
        let host = format!("{}.{}.{}", t.name, t.process, server.routing_domain());
        let body = http
            .get(format!("{}/", server.url))
            .header("host", &host)
            .send()
            .await?
            .text()
            .await?;
        println!(
            "  {domain:<22} -> {:<4} answered: {}",
            server.id,
            body.trim()
        );
    }
    println!("\ninstances:");
    for s in db.list_all_instances().await? {
        println!(
            "  {:<16} on {:<3} {:<8} {} MB",
            s.instance.key(),
            s.instance.server_id,
            s.state,
            s.instance.memory_mb
        );
    }
    println!("\nservers:");
    for s in db.list_servers().await? {
        let stats = db.get_server_stats(&s.id).await?;
        println!(
            "  {:<3} {:<8} reachable={} running={} used {} of {} MB",
            s.id,
            s.region.as_deref().unwrap_or("-"),
            stats.reachable,
            stats.running.unwrap_or(0),
            stats.used_mb,
            stats.capacity_mb
        );
    }
    println!("\nfleet is up; Ctrl-C to tear it down");
    tokio::signal::ctrl_c().await?;
    drop(fleet);
    println!("torn down");
    Ok(())
}
