//! The embedded store's tables (one SQLite file holds every queue and stream). Times are
//! milliseconds since the Unix epoch (wall clock: several processes share the file).

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS queues (
    name            TEXT PRIMARY KEY,
    max_deliveries  INTEGER NOT NULL,
    default_kind    TEXT
);

-- Messages waiting or in flight. `visible_at`: when it may be claimed next (0 = now;
-- a retry's not-before time; a claim's lease deadline). `lease` names the claim that
-- holds it (NULL: nobody), so a settle after the lease was lost changes nothing.
CREATE TABLE IF NOT EXISTS queue_messages (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    queue       TEXT NOT NULL,
    msg_id      TEXT NOT NULL,
    headers     TEXT NOT NULL,
    body        BLOB NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    visible_at  INTEGER NOT NULL DEFAULT 0,
    lease       INTEGER
);
CREATE INDEX IF NOT EXISTS queue_messages_ready ON queue_messages (queue, visible_at);

-- Every id published to a queue, for de-duplication after the message is gone;
-- forgotten after `messaging.retention` (purged on publish, at most once a minute).
CREATE TABLE IF NOT EXISTS queue_published (
    queue         TEXT NOT NULL,
    msg_id        TEXT NOT NULL,
    published_at  INTEGER NOT NULL,
    PRIMARY KEY (queue, msg_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS queue_published_age ON queue_published (queue, published_at);

CREATE TABLE IF NOT EXISTS dead_letters (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    queue     TEXT NOT NULL,
    msg_id    TEXT NOT NULL,
    kind      TEXT,
    reason    TEXT NOT NULL,
    attempts  INTEGER NOT NULL,
    dead_at   INTEGER NOT NULL,
    headers   TEXT NOT NULL,
    body      BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_queue ON dead_letters (queue, seq);

CREATE TABLE IF NOT EXISTS streams (
    name           TEXT PRIMARY KEY,
    partitions     INTEGER NOT NULL,
    retention_ms   INTEGER NOT NULL,
    last_position  INTEGER NOT NULL DEFAULT 0
);

-- The log: `position` is the stream-wide sequence number.
CREATE TABLE IF NOT EXISTS stream_events (
    stream        TEXT NOT NULL,
    position      INTEGER NOT NULL,
    partition     INTEGER NOT NULL,
    msg_id        TEXT NOT NULL,
    headers       TEXT NOT NULL,
    body          BLOB NOT NULL,
    published_at  INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS stream_events_position ON stream_events (stream, position);
CREATE UNIQUE INDEX IF NOT EXISTS stream_events_id ON stream_events (stream, msg_id);
CREATE INDEX IF NOT EXISTS stream_events_partition ON stream_events (stream, partition, position);

-- A group's progress per partition, and who reads it. `cursor`: every event of the
-- partition at or before it is committed. `epoch` changes on reset, so a commit made
-- before a reset cannot move the cursor after it. `delivered_to`: the furthest event
-- handed out, so a re-read (after a retry or a dead owner) counts as a redelivery.
CREATE TABLE IF NOT EXISTS group_partitions (
    stream        TEXT NOT NULL,
    grp           TEXT NOT NULL,
    partition     INTEGER NOT NULL,
    cursor        INTEGER NOT NULL,
    epoch         INTEGER NOT NULL DEFAULT 0,
    owner         TEXT,
    lease_until   INTEGER NOT NULL DEFAULT 0,
    not_before    INTEGER NOT NULL DEFAULT 0,
    head_attempt  INTEGER NOT NULL DEFAULT 1,
    delivered_to  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (stream, grp, partition)
) WITHOUT ROWID;

-- A group's live members, so each can take its share of the partitions.
CREATE TABLE IF NOT EXISTS group_members (
    stream       TEXT NOT NULL,
    grp          TEXT NOT NULL,
    member       TEXT NOT NULL,
    alive_until  INTEGER NOT NULL,
    PRIMARY KEY (stream, grp, member)
) WITHOUT ROWID;
";
