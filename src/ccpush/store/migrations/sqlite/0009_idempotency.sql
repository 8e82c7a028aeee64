-- Requests sent with an Idempotency-Key, and their answers (sealed), kept for a day: see
-- ccpush.api.idempotency. The key is the caller's own: an API key's id, or admin.
CREATE TABLE idempotency_keys (
    caller           TEXT NOT NULL,
    idempotency_key  TEXT NOT NULL,
    fingerprint      TEXT NOT NULL,
    holder           TEXT NOT NULL,
    held_until       REAL NOT NULL,
    expires_at       REAL NOT NULL,
    status           INTEGER,
    answer           BLOB,
    PRIMARY KEY (caller, idempotency_key)
);
CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_at)
