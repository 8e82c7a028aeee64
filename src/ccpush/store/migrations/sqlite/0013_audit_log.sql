-- The audit log: every change made through the API, the console or the CLI, and every
-- sign-in, written in the same transaction as the change (see ccpush.audit). Entries
-- outlive the app they name (no foreign key), and retention deletes them by time.
-- account_id is null for what concerns no account (a failed sign-in, a platform key).
CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          REAL NOT NULL,
    account_id  TEXT,
    app_id      TEXT,
    actor       TEXT NOT NULL,
    actor_name  TEXT,
    source      TEXT,
    action      TEXT NOT NULL,
    target      TEXT,
    before      TEXT,
    after       TEXT
);
CREATE INDEX audit_log_by_account ON audit_log (account_id, id);
CREATE INDEX audit_log_by_time ON audit_log (at)
