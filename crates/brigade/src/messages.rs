//! The messaging commands: `asyncapi`, `dlq list|redrive`, `events tail`, `replay
//! analytics`.
//!
//! `replay analytics` empties billing's analytics projection, then resets group
//! `analytics` (`billing::analytics::replay`, whose module doc has the details). The one
//! race: a member of a running billing may commit an event it took before the reset. The
//! projection still ends the same (clear and event writes are serialized on one row, and
//! the result depends only on which events were applied), and the embedded store,
//! RabbitMQ and NATS discard the member's late stream commit; Kafka refuses the reset
//! while billing runs, after the clear. Run it with billing stopped to leave no doubt.

use std::io::Write;

use anyhow::Context;
use messaging::StartFrom;
use settings::Settings;

use crate::cli::{AsyncapiArgs, DlqAction, EventsAction, ReplayProjection};

/// Every channel of every service.
pub fn channels() -> Vec<messaging::asyncapi::Channel> {
    let mut all = catalog::events::channels();
    all.extend(orders::events::channels());
    all
}

/// The AsyncAPI document, pretty-printed as committed.
pub fn asyncapi_text() -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(&messaging::asyncapi::document(&channels()))? + "\n")
}

pub fn asyncapi(args: &AsyncapiArgs) -> anyhow::Result<()> {
    let text = asyncapi_text()?;
    if args.write {
        if let Some(dir) = args.path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&args.path, text)
            .with_context(|| format!("writing {}", args.path.display()))?;
        println!("wrote {}", args.path.display());
    } else {
        print!("{text}");
    }
    Ok(())
}

pub async fn dlq(settings: &Settings, action: DlqAction) -> anyhow::Result<()> {
    let broker = messaging::connect(settings)
        .await
        .context("connecting to the messaging backend")?;
    let mut out = std::io::stdout().lock();
    match action {
        DlqAction::List { queue, limit } => {
            let letters = broker.queues.dead_letters(&queue, limit).await?;
            for letter in &letters {
                let dead_at = time::OffsetDateTime::from(letter.dead_at)
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default();
                let line = serde_json::json!({
                    "id": letter.id,
                    "type": letter.kind,
                    "reason": letter.reason,
                    "attempts": letter.attempts,
                    "dead_at": dead_at,
                    "body": String::from_utf8_lossy(&letter.body),
                });
                writeln!(out, "{line}")?;
            }
            eprintln!("{} dead letter(s) in {queue}", letters.len());
        }
        DlqAction::Redrive { queue, limit } => {
            let moved = broker.queues.redrive(&queue, limit).await?;
            writeln!(out, "moved {moved} dead letter(s) back onto {queue}")?;
        }
    }
    Ok(())
}

/// `earliest`, `latest`, a position, or an RFC 3339 time.
pub fn parse_start(raw: &str) -> anyhow::Result<StartFrom> {
    match raw {
        "earliest" => Ok(StartFrom::Earliest),
        "latest" => Ok(StartFrom::Latest),
        _ => {
            if let Ok(position) = raw.parse::<u64>() {
                return Ok(StartFrom::Position(position));
            }
            let time = time::OffsetDateTime::parse(
                raw,
                &time::format_description::well_known::Rfc3339,
            )
            .with_context(|| {
                format!("--from {raw:?}: expected earliest, latest, a position or an RFC 3339 time")
            })?;
            Ok(StartFrom::Time(time.into()))
        }
    }
}

/// `replay analytics --from <start>`: clears the projection, resets the group, and says
/// what it did.
pub async fn replay(settings: &Settings, projection: ReplayProjection) -> anyhow::Result<()> {
    let ReplayProjection::Analytics { from } = projection;
    let start = parse_start(&from)?;
    let replayed = billing::analytics::replay(settings, start).await?;
    let cleared = replayed.cleared;
    println!(
        "cleared the analytics projection in billing's database ({} orders, {} products, {} applied events); \
         moved group {} on {} to {from}: billing's analytics member rebuilds it from there \
         (now if billing is running, else when it starts)",
        cleared.orders,
        cleared.products,
        cleared.applied,
        billing::analytics::GROUP,
        orders::events::ORDER_EVENTS,
    );
    Ok(())
}

pub async fn events(settings: &Settings, action: EventsAction) -> anyhow::Result<()> {
    let EventsAction::Tail {
        stream,
        group,
        from,
        replay,
        count,
    } = action;
    let start = parse_start(&from)?;
    let broker = messaging::connect(settings)
        .await
        .context("connecting to the messaging backend")?;
    let group = group.unwrap_or_else(|| format!("tail-{}", uuid::Uuid::now_v7()));
    if replay {
        broker.streams.reset(&stream, &group, start).await?;
    }
    let mut consumer = broker.streams.subscribe(&stream, &group, start).await?;
    eprintln!("tailing {stream} as group {group} (Ctrl-C stops)");
    let mut seen = 0u64;
    // One listener for the whole tail, so a Ctrl-C while a line is printed is not lost.
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        if count.is_some_and(|c| seen >= c) {
            break;
        }
        let event = tokio::select! {
            event = consumer.next() => event?,
            _ = &mut ctrl_c => break,
        };
        let line = match &event.message {
            Ok(envelope) => serde_json::json!({
                "position": event.position,
                "partition": event.partition,
                "envelope": envelope,
            }),
            Err(malformed) => serde_json::json!({
                "position": event.position,
                "partition": event.partition,
                "malformed": malformed.reason,
                "body": String::from_utf8_lossy(&malformed.body),
            }),
        };
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{line}")?;
            out.flush()?;
        }
        event.commit().await?;
        seen += 1;
    }
    // Leave the group before exiting, so the next tail of this group takes over at once
    // instead of waiting for this member's lease to run out.
    consumer.close().await?;
    Ok(())
}
