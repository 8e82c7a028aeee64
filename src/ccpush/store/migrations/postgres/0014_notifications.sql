-- Operational notifications. notification_targets: where an account's go (an HTTPS URL,
-- signed with the account's own secret, kept sealed, and/or an e-mail address).
-- notifications: each event, with the JSON body every channel is made from.
-- notification_deliveries: one per event and destination (the account's or the
-- operator's), retried with backoff, claimed by setting state 'sending' and
-- next_attempt_at to the lease's end, so an expired claim is due again.
-- app_notices: what was last told of an app in trouble (failing or paused), until it
-- recovers. streak is the failing_since it was told for.
CREATE TABLE notification_targets (
    account_id  TEXT PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    url         TEXT,
    email       TEXT,
    secret      TEXT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
CREATE TABLE notifications (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL,
    app_id      TEXT,
    type        TEXT NOT NULL,
    body        TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX notifications_by_app ON notifications (app_id, type, created_at);
CREATE INDEX notifications_by_time ON notifications (created_at);
CREATE TABLE notification_deliveries (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    notification_id  TEXT NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    account_id       TEXT NOT NULL,
    platform         BOOLEAN NOT NULL,
    channel          TEXT NOT NULL,
    target           TEXT NOT NULL,
    state            TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    next_attempt_at  TIMESTAMPTZ,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL
);
CREATE INDEX notification_deliveries_due ON notification_deliveries (next_attempt_at)
    WHERE state IN ('pending', 'sending');
CREATE INDEX notification_deliveries_by_account ON notification_deliveries (account_id, id);
CREATE TABLE app_notices (
    app_id  TEXT PRIMARY KEY REFERENCES apps (id) ON DELETE CASCADE,
    state   TEXT NOT NULL,
    streak  TIMESTAMPTZ,
    since   TIMESTAMPTZ NOT NULL
);
