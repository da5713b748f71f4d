-- Timestamps are Unix milliseconds. Emails are stored normalised (domain lower-cased)
-- and unique: two accounts never share an address.
CREATE TABLE users (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL CHECK (length(name) > 0),
    email       TEXT    NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
