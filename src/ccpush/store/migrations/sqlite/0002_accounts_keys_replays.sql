CREATE TABLE accounts (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  REAL NOT NULL
);
INSERT INTO accounts (id, name, created_at)
VALUES ('acc_default', 'Default account', CAST(strftime('%s', 'now') AS REAL));

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    account_id   TEXT REFERENCES accounts (id),
    name         TEXT NOT NULL,
    scope        TEXT NOT NULL,
    secret_hash  TEXT NOT NULL UNIQUE,
    prefix       TEXT NOT NULL,
    created_at   REAL NOT NULL,
    revoked_at   REAL
);
CREATE INDEX api_keys_by_account ON api_keys (account_id);

ALTER TABLE apps ADD COLUMN account_id TEXT NOT NULL DEFAULT 'acc_default';
ALTER TABLE apps ADD COLUMN paused INTEGER NOT NULL DEFAULT 0;
CREATE INDEX apps_by_account ON apps (account_id);

CREATE TABLE replays (
    id           TEXT PRIMARY KEY,
    app_id       TEXT NOT NULL REFERENCES apps (id),
    kind         TEXT NOT NULL,
    range_from   REAL,
    range_to     REAL,
    state        TEXT NOT NULL,
    total        INTEGER NOT NULL,
    enqueued     INTEGER NOT NULL DEFAULT 0,
    cursor       INTEGER NOT NULL DEFAULT 0,
    lease_until  REAL,
    lease_owner  TEXT,
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL,
    finished_at  REAL
);
CREATE INDEX replays_unfinished ON replays (created_at) WHERE state != 'done';
CREATE INDEX replays_by_app ON replays (app_id);

ALTER TABLE deliveries ADD COLUMN replay_id TEXT;
CREATE INDEX deliveries_by_app ON deliveries (app_id, id);
CREATE INDEX deliveries_by_replay ON deliveries (replay_id) WHERE replay_id IS NOT NULL
