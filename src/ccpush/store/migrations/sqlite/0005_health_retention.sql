ALTER TABLE apps ADD COLUMN failing_since REAL;
ALTER TABLE apps ADD COLUMN paused_reason TEXT;
CREATE INDEX apps_failing ON apps (failing_since) WHERE failing_since IS NOT NULL;
CREATE INDEX call_records_by_received ON call_records (received_at)
