CREATE TABLE accounts (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);
INSERT INTO accounts (id, name, created_at) VALUES ('acc_default', 'Default account', now());

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    account_id   TEXT REFERENCES accounts (id),
    name         TEXT NOT NULL,
    scope        TEXT NOT NULL,
    secret_hash  TEXT NOT NULL UNIQUE,
    prefix       TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    revoked_at   TIMESTAMPTZ
);
CREATE INDEX api_keys_by_account ON api_keys (account_id);

ALTER TABLE apps ADD COLUMN account_id TEXT NOT NULL DEFAULT 'acc_default' REFERENCES accounts (id);
ALTER TABLE apps ADD COLUMN paused BOOLEAN NOT NULL DEFAULT false;
CREATE INDEX apps_by_account ON apps (account_id);

CREATE TABLE replays (
    id           TEXT PRIMARY KEY,
    app_id       TEXT NOT NULL REFERENCES apps (id),
    kind         TEXT NOT NULL,
    range_from   TIMESTAMPTZ,
    range_to     TIMESTAMPTZ,
    state        TEXT NOT NULL,
    total        INTEGER NOT NULL,
    enqueued     INTEGER NOT NULL DEFAULT 0,
    cursor       BIGINT NOT NULL DEFAULT 0,
    lease_until  TIMESTAMPTZ,
    lease_owner  TEXT,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    finished_at  TIMESTAMPTZ
);
CREATE INDEX replays_unfinished ON replays (created_at) WHERE state <> 'done';
CREATE INDEX replays_by_app ON replays (app_id);

ALTER TABLE deliveries ADD COLUMN replay_id TEXT REFERENCES replays (id);
CREATE INDEX deliveries_by_app ON deliveries (app_id, id);
CREATE INDEX deliveries_by_replay ON deliveries (replay_id) WHERE replay_id IS NOT NULL;
