CREATE TABLE apps (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    push_url    TEXT,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
);

CREATE TABLE call_records (
    id               INTEGER PRIMARY KEY,
    app_id           TEXT NOT NULL REFERENCES apps (id),
    call_session_id  TEXT NOT NULL,
    body             BLOB NOT NULL,
    call_start       REAL NOT NULL,
    received_at      REAL NOT NULL,
    UNIQUE (app_id, call_session_id)
);
CREATE INDEX call_records_by_start ON call_records (app_id, call_start);

CREATE TABLE deliveries (
    id                INTEGER PRIMARY KEY,
    record_id         INTEGER NOT NULL REFERENCES call_records (id),
    app_id            TEXT NOT NULL REFERENCES apps (id),
    state             TEXT NOT NULL,
    attempts          INTEGER NOT NULL DEFAULT 0,
    next_attempt_at   REAL,
    first_attempt_at  REAL,
    lease_until       REAL,
    lease_owner       TEXT,
    created_at        REAL NOT NULL,
    updated_at        REAL NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_leased ON deliveries (lease_until) WHERE state = 'sending';
CREATE INDEX deliveries_by_record ON deliveries (record_id);
CREATE INDEX deliveries_by_app_state ON deliveries (app_id, state);

CREATE TABLE attempts (
    id                INTEGER PRIMARY KEY,
    delivery_id       INTEGER NOT NULL REFERENCES deliveries (id),
    number            INTEGER NOT NULL,
    started_at        REAL NOT NULL,
    duration_ms       REAL NOT NULL,
    status_code       INTEGER,
    error_kind        TEXT,
    error             TEXT,
    response_excerpt  TEXT
);
CREATE INDEX attempts_by_delivery ON attempts (delivery_id);
