//! What each command does.

use std::io::Write;

use anyhow::Context;
use figment::providers::Serialized;
use server::{Application, StartError};
use settings::{ServiceName, Settings};
use storage::Database;
use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command, DataDirArg, GraphqlArgs, OpenapiArgs, SeedArgs};
use crate::messages;

/// Demo data `brigade up` loads into a new data directory.
const DEMO: SeedArgs = SeedArgs {
    data: DataDirArg { data_dir: None },
    products: 3_000,
    users: 1_000,
    reviews: 6_000,
};

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    // Contracts need no configuration, database or logging.
    if let Command::Openapi(args) = &cli.command {
        return openapi(args);
    }
    if let Command::Asyncapi(args) = &cli.command {
        return messages::asyncapi(args);
    }
    if let Command::Graphql(args) = &cli.command {
        return graphql(args);
    }
    let mut figment = Settings::figment(cli.config.as_deref())?;
    let data_dir = match &cli.command {
        Command::Up(a) => &a.data,
        Command::Serve(a) => &a.data,
        Command::Seed(a) => &a.data,
        Command::Dlq(a) => &a.data,
        Command::Events(a) => &a.data,
        Command::Replay(a) => &a.data,
        Command::Keys(a) => &a.data,
        Command::InternalToken(a) => &a.data,
        Command::Slo(a) => &a.data,
        Command::Openapi(_) | Command::Asyncapi(_) | Command::Graphql(_) => &DEMO.data,
    };
    if let Some(dir) = &data_dir.data_dir {
        figment = figment.merge(Serialized::default("data_dir", dir));
    }
    if let Command::Serve(args) = &cli.command
        && let Some(port) = args.port
    {
        let service = ServiceName::from(args.service);
        figment = figment.merge(Serialized::default(
            &format!("services.{}.port", service.config_key()),
            port,
        ));
    }
    let settings = Settings::from_figment(figment)?;
    telemetry::init_logging(settings.log.format, &settings.log.filter)?;
    // Spans of every service this process runs, to the collector (off unless configured).
    if let (Command::Up(_) | Command::Serve(_), Some(endpoint)) =
        (&cli.command, &settings.telemetry.otlp_endpoint)
    {
        telemetry::trace::export_to(endpoint, settings.telemetry.otlp_timeout)?;
        tracing::info!(%endpoint, "exporting trace spans over OTLP");
    }

    match cli.command {
        Command::Up(args) => up(&settings, !args.no_seed && settings.seed_demo_data).await,
        Command::Serve(args) => serve(&settings, args.service.into()).await,
        Command::Openapi(args) => openapi(&args),
        Command::Asyncapi(args) => messages::asyncapi(&args),
        Command::Graphql(args) => graphql(&args),
        Command::Dlq(args) => messages::dlq(&settings, args.action).await,
        Command::Events(args) => messages::events(&settings, args.action).await,
        Command::Replay(args) => messages::replay(&settings, args.projection).await,
        Command::Keys(args) => keys(&settings, args.action).await,
        Command::Slo(args) => slo(&settings, args.json).await,
        Command::InternalToken(args) => {
            let signer = server::identity::Signer::for_settings(&settings)
                .context("reading the internal identity key")?;
            let token = signer.token_for(&args.client, args.ttl).with_context(|| {
                format!(
                    "{:?} cannot name a client (1-64 of A-Z a-z 0-9 _ : -)",
                    args.client
                )
            })?;
            println!("{}", token.to_str().unwrap_or_default());
            Ok(())
        }
        Command::Seed(args) => {
            let seeded = seed(&settings, &args).await?;
            println!(
                "seeded {} products, {} reviews, {} users into {}",
                seeded.0.products,
                seeded.0.reviews,
                seeded.1,
                settings.data_dir.display()
            );
            Ok(())
        }
    }
}

/// `brigade slo`: every service's `/slo`, as a table or JSON. A service that does not
/// answer is shown as down (in JSON: `{"service", "down": true, "error"}`); the command
/// fails only when none does. Plain HTTP: a service behind TLS reads as down.
async fn slo(settings: &Settings, json: bool) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()?;
    let mut reports = Vec::new();
    for service in ServiceName::ALL {
        let mut addr = settings.services.get(service).addr();
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let answer = async {
            let response = client
                .get(format!("http://{addr}/slo"))
                .send()
                .await?
                .error_for_status()?;
            response.json::<serde_json::Value>().await
        }
        .await;
        reports.push((service, addr, answer));
    }
    if reports.iter().all(|(_, _, r)| r.is_err()) {
        anyhow::bail!(
            "no service answered at its configured address (is `brigade up` running with this configuration?)"
        );
    }
    let mut out = std::io::stdout().lock();
    if json {
        // A service that did not answer is named, with why.
        let all: Vec<serde_json::Value> = reports
            .into_iter()
            .map(|(service, addr, r)| {
                r.unwrap_or_else(|err| {
                    serde_json::json!({
                        "service": service.as_str(),
                        "down": true,
                        "error": format!("{addr}: {err}"),
                    })
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&all)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<17} {:<13} {:>12} {:>7} {:>12} {:>8} {:>8} {:>8} {:>8}  alert",
        "service", "slo", "objective", "window", "budget left", "burn 5m", "30m", "1h", "6h"
    )?;
    for (service, addr, report) in reports {
        let report = match report {
            Ok(report) => report,
            Err(err) => {
                let why = if err.is_connect() {
                    "not running".to_owned()
                } else {
                    err.to_string()
                };
                writeln!(out, "{service:<17} down at {addr}: {why}")?;
                continue;
            }
        };
        let window = report["objectives"]["window"].as_f64().unwrap_or_default();
        for slo in ["availability", "latency"] {
            let sli = &report[slo];
            let rate = |name: &str| {
                sli["burn"]
                    .as_array()
                    .and_then(|b| b.iter().find(|b| b["window"] == name))
                    .and_then(|b| b["rate"].as_f64())
                    .unwrap_or_default()
            };
            let objective = sli["objective"].as_f64().unwrap_or_default() * 100.0;
            let alert = match (sli["page"].as_bool(), sli["ticket"].as_bool()) {
                (Some(true), _) => "PAGE",
                (_, Some(true)) => "ticket",
                _ => "-",
            };
            let objective = if slo == "latency" {
                let threshold = report["objectives"]["latency_threshold"]
                    .as_f64()
                    .unwrap_or_default();
                format!(
                    "{objective}% ≤{}",
                    humantime::format_duration(std::time::Duration::from_millis(
                        (threshold * 1000.0) as u64
                    ))
                )
            } else {
                format!("{objective}%")
            };
            writeln!(
                out,
                "{:<17} {:<13} {:>12} {:>7} {:>11.1}% {:>8.2} {:>8.2} {:>8.2} {:>8.2}  {alert}",
                service.as_str(),
                slo,
                objective,
                humantime::format_duration(std::time::Duration::from_secs(window as u64))
                    .to_string(),
                sli["budget_remaining"].as_f64().unwrap_or_default() * 100.0,
                rate("5m"),
                rate("30m"),
                rate("1h"),
                rate("6h"),
            )?;
        }
    }
    Ok(())
}

/// `brigade keys …` on the gateway's database (made and migrated if new).
async fn keys(settings: &Settings, action: crate::cli::KeysAction) -> anyhow::Result<()> {
    use crate::cli::KeysAction;
    use gateway::keys::{KeyRecord, KeyStore, Scopes};
    let db = Database::open(
        &settings.database_url(ServiceName::Gateway),
        &settings.database,
        &[gateway::MIGRATIONS],
    )
    .await?;
    let store = KeyStore::new(db.clone());
    let describe = |r: &KeyRecord| {
        let scopes = if r.secret {
            "all scopes (secret key)".to_owned()
        } else {
            r.scopes
                .list()
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(",")
        };
        let state = match (r.revoked_at, r.expires_at) {
            (Some(_), _) => "revoked".to_owned(),
            (None, Some(at)) if at <= storage::now_millis() => "expired".to_owned(),
            (None, Some(at)) => format!("expires {}", rfc3339(at)),
            (None, None) => "active".to_owned(),
        };
        format!(
            "{}  {}  {}  {}  created {}  {}",
            r.id,
            r.redacted,
            r.name,
            scopes,
            rfc3339(r.created_at),
            state
        )
    };
    let result = async {
        match action {
            KeysAction::Create { name, scopes } => {
                let scopes = scopes
                    .map(|s| Scopes::parse(&s))
                    .transpose()
                    .map_err(anyhow::Error::msg)?;
                let made = store.create(&name, scopes).await?;
                println!("{}", describe(&made.record));
                println!("{}", made.key);
                eprintln!("keep the key now: it is not shown again (only its hash is stored)");
            }
            KeysAction::List => {
                for record in store.list().await? {
                    println!("{}", describe(&record));
                }
            }
            KeysAction::Revoke { id } => {
                let record = store.revoke(&id).await?;
                println!("{}", describe(&record));
            }
            KeysAction::Roll { id, expire_in } => {
                let made = store.roll(&id, expire_in).await?;
                println!("{}", describe(&made.record));
                println!("{}", made.key);
                eprintln!(
                    "keep the key now: it is not shown again; {id} stops working in {}",
                    humantime::format_duration(expire_in)
                );
            }
        }
        anyhow::Ok(())
    }
    .await;
    db.close().await;
    result
}

fn rfc3339(millis: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| millis.to_string())
}

/// The OpenAPI document of every service with a REST face, pretty-printed as committed.
fn openapi(args: &OpenapiArgs) -> anyhow::Result<()> {
    let documents = [
        ("catalog", catalog::rest::openapi()),
        ("accounts", accounts::rest::openapi()),
        ("orders", orders::rest::openapi()),
        ("payments-sandbox", payments::rest::openapi()),
        ("billing", billing::rest::openapi()),
    ];
    let mut texts = Vec::new();
    for (service, api) in documents {
        texts.push((service, serde_json::to_string_pretty(&api)? + "\n"));
    }
    // The gateway's: the owners' documents as committed, merged with the edge's contract
    // (after a change to an owner's, --write twice brings it along).
    texts.push((
        "gateway",
        serde_json::to_string_pretty(&gateway::public_api::openapi())? + "\n",
    ));
    for (service, text) in texts {
        if args.write {
            std::fs::create_dir_all(&args.dir)
                .with_context(|| format!("creating {}", args.dir.display()))?;
            let path = args.dir.join(format!("{service}.json"));
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            println!("wrote {}", path.display());
        } else {
            print!("{text}");
        }
    }
    Ok(())
}

/// The subgraphs of the services that own data, by name: what `graphql --write` puts
/// in `graphql/subgraphs/<name>.graphql`.
pub fn subgraphs() -> [(&'static str, String); 3] {
    [
        ("catalog", catalog::graphql::sdl()),
        ("accounts", accounts::graphql::sdl()),
        ("orders", orders::graphql::sdl()),
    ]
}

/// The gateway's GraphQL SDL and the services' subgraphs, as committed.
fn graphql(args: &GraphqlArgs) -> anyhow::Result<()> {
    if let Some(name) = &args.subgraph {
        let Some((_, sdl)) = subgraphs().into_iter().find(|(n, _)| n == name) else {
            anyhow::bail!(
                "no subgraph {name:?}: the services that own data are catalog, accounts and orders"
            );
        };
        print!("{sdl}");
        return Ok(());
    }
    if !args.write {
        print!("{}", gateway::graphql::sdl());
        return Ok(());
    }
    let dir = args
        .path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let mut files = vec![(args.path.clone(), gateway::graphql::sdl())];
    for (name, sdl) in subgraphs() {
        files.push((dir.join("subgraphs").join(format!("{name}.graphql")), sdl));
    }
    for (path, sdl) in files {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, sdl).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Builds one service: opens its database, migrates it, binds its port.
async fn build(service: ServiceName, settings: &Settings) -> Result<Application, StartError> {
    match service {
        ServiceName::Gateway => gateway::build(settings).await,
        ServiceName::Catalog => catalog::build(settings).await,
        ServiceName::Accounts => accounts::build(settings).await,
        ServiceName::Orders => orders::build(settings).await,
        ServiceName::Billing => billing::build(settings).await,
        ServiceName::PaymentsSandbox => payments::build(settings).await,
    }
}

/// The order `up` starts services in: a service's dependencies first, so each is told
/// where the others really listen (ports may be 0 until bound).
const START_ORDER: [ServiceName; 6] = [
    ServiceName::PaymentsSandbox,
    ServiceName::Accounts,
    ServiceName::Catalog,
    ServiceName::Orders,
    ServiceName::Billing,
    ServiceName::Gateway,
];

async fn up(settings: &Settings, seed_if_new: bool) -> anyhow::Result<()> {
    let mut bound = settings.clone();
    let mut apps = Vec::new();
    for service in START_ORDER {
        let app = build(service, &bound).await?;
        bound.services.get_mut(service).port = app.port();
        apps.push(app);
    }
    // The table lists services in their usual order.
    apps.sort_by_key(|a| ServiceName::ALL.iter().position(|s| *s == a.service()));
    if seed_if_new {
        let catalog = find(&apps, ServiceName::Catalog)?;
        let accounts = find(&apps, ServiceName::Accounts)?;
        if holds_no_data(catalog, accounts).await? {
            let (products, users) = seed_into(catalog, accounts, &DEMO).await?;
            tracing::info!(
                products = products.products,
                reviews = products.reviews,
                users,
                "demo data loaded into new databases"
            );
        }
    }
    print_table(settings, &apps);
    run_until_signal(apps).await
}

/// Whether catalog and accounts are both new: no products, no reviews, no users. Demo data
/// goes only into new databases (a new data directory, an existing empty one, or fresh
/// PostgreSQL databases), never beside data a user has: demo reviews name demo users, so
/// one service holding data is reason enough to seed neither.
async fn holds_no_data(catalog_db: &Database, accounts_db: &Database) -> anyhow::Result<bool> {
    let catalog = catalog::CatalogStore::new(catalog_db.clone());
    let accounts = accounts::AccountsStore::new(accounts_db.clone());
    Ok(catalog.product_count().await? == 0
        && catalog.review_count().await? == 0
        && accounts.user_count().await? == 0)
}

fn find(apps: &[Application], service: ServiceName) -> anyhow::Result<&Database> {
    apps.iter()
        .find(|a| a.service() == service)
        .map(Application::database)
        .with_context(|| format!("{service} was not started"))
}

async fn serve(settings: &Settings, service: ServiceName) -> anyhow::Result<()> {
    let app = build(service, settings).await?;
    print_table(settings, std::slice::from_ref(&app));
    run_until_signal(vec![app]).await
}

async fn seed(
    settings: &Settings,
    args: &SeedArgs,
) -> anyhow::Result<(catalog::seed::Seeded, usize)> {
    let catalog = Database::open(
        &settings.database_url(ServiceName::Catalog),
        &settings.database,
        catalog::ALL_MIGRATIONS,
    )
    .await?;
    let accounts = Database::open(
        &settings.database_url(ServiceName::Accounts),
        &settings.database,
        &[&accounts::MIGRATIONS],
    )
    .await?;
    let result = seed_into(&catalog, &accounts, args).await;
    catalog.close().await;
    accounts.close().await;
    result
}

async fn seed_into(
    catalog_db: &Database,
    accounts_db: &Database,
    args: &SeedArgs,
) -> anyhow::Result<(catalog::seed::Seeded, usize)> {
    let users = accounts::seed::seed(
        &accounts::AccountsStore::new(accounts_db.clone()),
        args.users,
    )
    .await
    .context("seeding accounts")?;
    let products = catalog::seed::seed(
        &catalog::CatalogStore::new(catalog_db.clone()),
        args.products,
        args.reviews,
        args.users,
    )
    .await
    .context("seeding catalog")?;
    Ok((products, users))
}

/// The wire faces of each service, for the table (every one also serves `/healthz`,
/// `/readyz`, `/metrics` and gRPC health and reflection).
fn serves(service: ServiceName) -> &'static str {
    match service {
        ServiceName::Catalog | ServiceName::Accounts | ServiceName::Orders => {
            "REST, gRPC, gRPC-Web, subgraph (gateway only)"
        }
        ServiceName::Billing => "REST (gateway only)",
        ServiceName::PaymentsSandbox => "REST",
        ServiceName::Gateway => "REST, gRPC, gRPC-Web, GraphQL: the door",
    }
}

/// What serves where, on stdout (logs go to stderr).
fn print_table(settings: &Settings, apps: &[Application]) {
    let mut out = String::new();
    out.push_str(&format!(
        "Brigade is up. Data: {}\n\n",
        settings.data_dir.display()
    ));
    let width = apps
        .iter()
        .map(|app| serves(app.service()).len())
        .max()
        .unwrap_or(0)
        .max("SERVES".len());
    out.push_str(&format!(
        "  {:<16} {:<24} {:<width$} {}\n",
        "SERVICE", "URL", "SERVES", "DATABASE"
    ));
    for app in apps {
        out.push_str(&format!(
            "  {:<16} {:<24} {:<width$} {}\n",
            app.service().as_str(),
            format!("http://{}", app.local_addr()),
            serves(app.service()),
            app.database().url(),
        ));
    }
    out.push_str(&format!("\n  Messaging: {}\n", messaging_line(settings)));
    out.push_str("\nPress Ctrl-C to stop.\n");
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
}

/// Where the queues and streams live; a broker URL is shown without its credentials.
fn messaging_line(settings: &Settings) -> String {
    use settings::MessagingBackend;
    let m = &settings.messaging;
    let host = |url: &Option<String>| {
        url.as_deref()
            .map(|u| match (u.split_once("://"), u.rsplit_once('@')) {
                (Some((scheme, _)), Some((_, rest))) => format!("{scheme}://{rest}"),
                _ => u.to_owned(),
            })
            .unwrap_or_else(|| "(no url)".to_owned())
    };
    match m.backend {
        MessagingBackend::Embedded => {
            format!("embedded, {}", settings.messaging_path().display())
        }
        MessagingBackend::Rabbitmq => format!("RabbitMQ at {}", host(&m.url)),
        MessagingBackend::Nats => format!("NATS JetStream at {}", host(&m.url)),
        MessagingBackend::Kafka => format!("Kafka at {}", host(&m.url)),
    }
}

/// Serves every app until SIGINT or SIGTERM, then shuts them all down gracefully.
async fn run_until_signal(apps: Vec<Application>) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    for app in apps {
        let service = app.service();
        let stopped = stop.clone().cancelled_owned();
        tasks.spawn(async move { (service, app.run_until_stopped(stopped).await) });
    }
    let signal = stop.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown requested");
        signal.cancel();
    });
    let mut failure = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((_, Ok(()))) => {}
            Ok((service, Err(err))) => {
                // One service failing takes the others down with it: a half-running
                // system is worse than a stopped one.
                stop.cancel();
                failure.get_or_insert_with(|| anyhow::anyhow!("{service} stopped: {err}"));
            }
            Err(err) => {
                stop.cancel();
                failure.get_or_insert_with(|| anyhow::anyhow!("a service task failed: {err}"));
            }
        }
    }
    match failure {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn the_messaging_line_never_shows_credentials() {
        let mut settings = Settings::default();
        settings.messaging.backend = settings::MessagingBackend::Rabbitmq;
        settings.messaging.url = Some("amqp://guest:s3cret@10.0.0.5:5672/%2f".to_owned());
        let line = messaging_line(&settings);
        assert_eq!(line, "RabbitMQ at amqp://10.0.0.5:5672/%2f");
        assert!(!line.contains("s3cret"));
        settings.messaging.backend = settings::MessagingBackend::Embedded;
        assert!(messaging_line(&settings).ends_with("messaging.db"));
    }
}
