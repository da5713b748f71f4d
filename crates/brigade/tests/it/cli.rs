//! Bad start-up input: one clear line naming the cause, a non-zero exit, no backtrace.

use std::process::Output;

use crate::helpers::brigade;

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The last non-log line of stderr: the error brigade printed.
fn error_line(output: &Output) -> String {
    let stderr = stderr_of(output);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("stack backtrace"), "{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("brigade: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    errors[0].to_owned()
}

#[tokio::test]
async fn an_unknown_config_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("brigade.toml");
    std::fs::write(&config, "[services.catalog]\nprot = 9000\n").unwrap();
    let output = brigade(dir.path())
        .arg("--config")
        .arg(&config)
        .args(["serve", "catalog"])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let line = error_line(&output);
    assert!(line.contains("prot"), "{line}");
}

#[tokio::test]
async fn a_malformed_environment_value_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let output = brigade(dir.path())
        .env("BRIGADE_SERVICES__ORDERS__PORT", "eighty")
        .args(["serve", "orders"])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let line = error_line(&output);
    assert!(
        line.to_lowercase().contains("services.orders.port"),
        "{line}"
    );
    assert!(
        line.contains("eighty") && line.contains("BRIGADE_"),
        "{line}"
    );
}

#[tokio::test]
async fn a_port_in_use_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let output = brigade(dir.path())
        .args(["serve", "billing", "--port", &port])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let line = error_line(&output);
    assert!(
        line.contains("already in use") && line.contains(&port),
        "{line}"
    );
}

#[tokio::test]
async fn an_unreachable_database_is_reported_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let output = brigade(dir.path())
        .env("BRIGADE_DATABASE__CONNECT_TIMEOUT", "2s")
        .env(
            "BRIGADE_SERVICES__ACCOUNTS__DATABASE_URL",
            "postgres://app:hunter2@127.0.0.1:1/accounts",
        )
        .args(["serve", "accounts", "--port", "0"])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let line = error_line(&output);
    assert!(line.contains("cannot open database"), "{line}");
    assert!(!stderr_of(&output).contains("hunter2"));
}

#[tokio::test]
async fn seed_loads_once() {
    let dir = tempfile::tempdir().unwrap();
    let run = || async {
        let output = brigade(dir.path())
            .args([
                "seed",
                "--products",
                "25",
                "--users",
                "5",
                "--reviews",
                "40",
            ])
            .output()
            .await
            .unwrap();
        assert!(output.status.success(), "{}", stderr_of(&output));
        String::from_utf8(output.stdout).unwrap()
    };
    assert!(
        run()
            .await
            .contains("seeded 25 products, 40 reviews, 5 users")
    );
    assert!(
        run()
            .await
            .contains("seeded 0 products, 0 reviews, 0 users")
    );
}

#[tokio::test]
async fn every_command_explains_itself() {
    for args in [
        &["--help"][..],
        &["up", "--help"],
        &["serve", "--help"],
        &["seed", "--help"],
    ] {
        let output = brigade(std::path::Path::new("."))
            .args(args)
            .output()
            .await
            .unwrap();
        assert!(output.status.success());
        let text = String::from_utf8(output.stdout).unwrap();
        assert!(text.contains("Usage: brigade"), "{text}");
    }
    let output = brigade(std::path::Path::new("."))
        .args(["up", "--help"])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.contains("--no-seed") && text.contains("SIGTERM"),
        "{text}"
    );
}

#[tokio::test]
async fn the_committed_asyncapi_document_matches_the_code() {
    let dir = tempfile::tempdir().unwrap();
    let output = brigade(dir.path()).arg("asyncapi").output().await.unwrap();
    assert!(output.status.success(), "{}", stderr_of(&output));
    let committed_path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../asyncapi/brigade.json");
    let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
    assert!(
        output.stdout == committed.as_bytes(),
        "asyncapi/brigade.json is out of date with the code. Regenerate it with \
         `cargo run -q -p brigade -- asyncapi --write` and review the diff."
    );
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(doc["asyncapi"], "3.0.0");
    for address in ["catalog-events", "order_processing", "order-events"] {
        assert!(
            doc["channels"]
                .as_object()
                .unwrap()
                .values()
                .any(|c| c["address"] == address),
            "{address} is documented"
        );
    }
}

/// Each owning service's committed subgraph (`graphql/subgraphs/`) is the one it serves,
/// federation keys included: a change to one without the other fails here.
#[tokio::test]
async fn the_committed_subgraphs_match_the_code() {
    let dir = tempfile::tempdir().unwrap();
    for (service, keys) in [
        (
            "catalog",
            &[
                "type Product @key(fields: \"id\")",
                "type User @key(fields: \"id\", resolvable: false)",
            ][..],
        ),
        ("accounts", &["type User @key(fields: \"id\")"][..]),
        (
            "orders",
            &[
                "type Order @key(fields: \"id\")",
                "type User @key(fields: \"id\")",
                "type Product @key(fields: \"id\", resolvable: false)",
            ][..],
        ),
    ] {
        let output = brigade(dir.path())
            .args(["graphql", "--subgraph", service])
            .output()
            .await
            .unwrap();
        assert!(output.status.success(), "{}", stderr_of(&output));
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("../../graphql/subgraphs/{service}.graphql"));
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            output.stdout == committed.as_bytes(),
            "graphql/subgraphs/{service}.graphql is out of date with the code. Regenerate it \
             with `cargo run -q -p brigade -- graphql --write` and review the diff."
        );
        assert!(
            committed.contains("specs.apollo.dev/federation/v2"),
            "{committed}"
        );
        for key in keys {
            assert!(
                committed.contains(key),
                "{service} declares {key}:\n{committed}"
            );
        }
    }
    let unknown = brigade(dir.path())
        .args(["graphql", "--subgraph", "billing"])
        .output()
        .await
        .unwrap();
    assert!(!unknown.status.success());
    assert!(error_line(&unknown).contains("catalog, accounts and orders"));
}

/// `brigade dlq list` shows a dead letter with its reason, and `redrive` puts it back on
/// its queue, on the embedded store a running system would use.
#[tokio::test]
async fn dlq_list_shows_the_reason_and_redrive_puts_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let settings = settings::MessagingSettings::default();
    let broker = messaging::embedded::open(&dir.path().join("messaging.db"), &settings)
        .await
        .unwrap();
    let options = messaging::QueueOptions::default();
    broker
        .queues
        .declare("order_processing", &options)
        .await
        .unwrap();
    let sent = messaging::Envelope::new(
        "ProcessOrder",
        serde_json::json!({"order_id": "ORD-12345", "total": 1999.98}),
    );
    broker
        .queues
        .publish("order_processing", &sent)
        .await
        .unwrap();
    let mut consumer = broker.queues.consume("order_processing", 1).await.unwrap();
    let delivery = tokio::time::timeout(std::time::Duration::from_secs(10), consumer.next())
        .await
        .unwrap()
        .unwrap();
    delivery.reject("card declined for good").await.unwrap();
    drop(consumer);

    let list = brigade(dir.path())
        .args(["dlq", "list", "order_processing"])
        .output()
        .await
        .unwrap();
    assert!(list.status.success(), "{}", stderr_of(&list));
    let line: serde_json::Value =
        serde_json::from_slice(list.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(line["id"], sent.id.to_string());
    assert_eq!(line["reason"], "card declined for good");
    assert_eq!(line["attempts"], 1);
    assert!(
        line["body"].as_str().unwrap().contains("ORD-12345"),
        "{line}"
    );

    let redrive = brigade(dir.path())
        .args(["dlq", "redrive", "order_processing"])
        .output()
        .await
        .unwrap();
    assert!(redrive.status.success(), "{}", stderr_of(&redrive));
    assert!(String::from_utf8_lossy(&redrive.stdout).contains("moved 1"));
    let stats = broker.queues.stats("order_processing").await.unwrap();
    assert_eq!((stats.ready, stats.dead), (1, 0));
}

/// `brigade replay analytics` on a new data directory: it makes billing's database and the
/// stream, clears the (empty) projection, moves the group, and says so; `--help` warns of
/// the race with a running billing; a bad `--from` is one clear line.
#[tokio::test]
async fn replay_analytics_clears_the_projection_and_moves_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let output = brigade(dir.path())
        .args(["replay", "analytics", "--from", "earliest"])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", stderr_of(&output));
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.contains("cleared the analytics projection")
            && text.contains("0 orders, 0 products, 0 applied events")
            && text.contains("moved group analytics on order-events to earliest"),
        "{text}"
    );
    assert!(dir.path().join("billing.db").exists());

    let output = brigade(dir.path())
        .args(["replay", "--help"])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("analytics"), "{text}");
    let output = brigade(dir.path())
        .args(["replay", "analytics", "--help"])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("billing stopped"), "{text}");

    let output = brigade(dir.path())
        .args(["replay", "analytics", "--from", "yesterday"])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(
        error_line(&output).contains("--from"),
        "{}",
        stderr_of(&output)
    );
}

/// `brigade keys`: a key is printed once, at creation; the list shows its redacted form,
/// never the key; revoking and rolling say what they did; bad input is one line.
#[tokio::test]
async fn keys_are_made_listed_revoked_and_rolled_and_shown_only_once() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let mut cmd = brigade(dir.path());
        cmd.arg("keys").args(args);
        cmd.output()
    };
    let made = run(&[
        "create",
        "--name",
        "ci",
        "--scopes",
        "catalog:write, orders:read",
    ])
    .await
    .unwrap();
    assert!(made.status.success(), "{}", stderr_of(&made));
    let stdout = String::from_utf8(made.stdout.clone()).unwrap();
    let key = stdout.lines().last().unwrap().to_owned();
    assert!(key.starts_with("bgd_rk_") && key.len() == 45, "{stdout}");
    let id = stdout.split_whitespace().next().unwrap().to_owned();
    assert!(id.starts_with("key_"), "{stdout}");
    assert!(stdout.contains("catalog:write,orders:read"), "{stdout}");
    assert!(stderr_of(&made).contains("not shown again"));

    let listed = run(&["list"]).await.unwrap();
    let list = String::from_utf8(listed.stdout).unwrap();
    assert!(list.contains(&id) && list.contains("active"), "{list}");
    assert!(!list.contains(&key), "the list shows a key: {list}");
    assert!(
        list.contains(&format!("bgd_rk_…{}", &key[key.len() - 4..])),
        "{list}"
    );
    // Only the hash is stored.
    let db = std::fs::read(dir.path().join("gateway.db")).unwrap();
    assert!(
        !db.windows(key.len()).any(|w| w == key.as_bytes()),
        "the key is in the database"
    );

    let rolled = run(&["roll", &id, "--expire-in", "1h"]).await.unwrap();
    assert!(rolled.status.success(), "{}", stderr_of(&rolled));
    let rolled_out = String::from_utf8(rolled.stdout).unwrap();
    let new_key = rolled_out.lines().last().unwrap();
    assert!(
        new_key.starts_with("bgd_rk_") && new_key != key,
        "{rolled_out}"
    );
    let list = String::from_utf8(run(&["list"]).await.unwrap().stdout).unwrap();
    assert!(
        list.lines()
            .any(|l| l.contains(&id) && l.contains("expires")),
        "{list}"
    );

    let revoked = run(&["revoke", &id]).await.unwrap();
    assert!(revoked.status.success());
    assert!(
        String::from_utf8(revoked.stdout)
            .unwrap()
            .contains("revoked")
    );
    let again = run(&["roll", &id]).await.unwrap();
    assert!(!again.status.success());
    assert!(
        error_line(&again).contains("revoked"),
        "{}",
        stderr_of(&again)
    );

    let unknown = run(&["create", "--name", "x", "--scopes", "catalog:delete"])
        .await
        .unwrap();
    assert!(!unknown.status.success());
    assert!(error_line(&unknown).contains("\"catalog:delete\""));
    let missing = run(&["revoke", "key_nope"]).await.unwrap();
    assert!(!missing.status.success());
    assert!(error_line(&missing).contains("key_nope"));
}
