CREATE TABLE record_versions (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    record_id    BIGINT NOT NULL REFERENCES call_records (id),
    app_id       TEXT NOT NULL REFERENCES apps (id),
    version      INTEGER NOT NULL,
    seq          BIGINT NOT NULL,
    body         BYTEA NOT NULL,
    received_at  TIMESTAMPTZ NOT NULL,
    UNIQUE (record_id, version),
    UNIQUE (app_id, seq)
);

INSERT INTO record_versions (record_id, app_id, version, seq, body, received_at)
SELECT id, app_id, 1, row_number() OVER (PARTITION BY app_id ORDER BY id), body, received_at
FROM call_records;

ALTER TABLE call_records ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE call_records DROP COLUMN body;

ALTER TABLE apps ADD COLUMN last_seq BIGINT NOT NULL DEFAULT 0;
UPDATE apps SET last_seq = (SELECT count(*) FROM call_records WHERE app_id = apps.id);

ALTER TABLE deliveries ADD COLUMN version_id BIGINT REFERENCES record_versions (id);
UPDATE deliveries SET version_id =
    (SELECT v.id FROM record_versions v WHERE v.record_id = deliveries.record_id AND v.version = 1);
ALTER TABLE deliveries ALTER COLUMN version_id SET NOT NULL;
CREATE INDEX deliveries_by_version ON deliveries (version_id);
