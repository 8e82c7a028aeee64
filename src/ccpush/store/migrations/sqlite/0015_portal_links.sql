-- One-time links into the console, scoped to an account (or one app): only the SHA-256 of
-- a link's token is kept. A link is used once (used_at set by the statement that checks
-- it) and expires. app_id has no foreign key: a link to an app deleted since opens a
-- session that finds nothing. Upkeep deletes the links expired for longer than a session.
CREATE TABLE portal_links (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts (id),
    app_id      TEXT,
    token_hash  TEXT NOT NULL UNIQUE,
    read_only   INTEGER NOT NULL,
    created_at  REAL NOT NULL,
    expires_at  REAL NOT NULL,
    used_at     REAL
);
CREATE INDEX portal_links_by_expiry ON portal_links (expires_at)
