-- An app's pace set by its customer (ccpush.app_pace): pushes per second and pushes at
-- once (NULL: no limit), and the rate's token bucket, refilled and spent by the claims.
ALTER TABLE apps ADD COLUMN rate_limit double precision;
ALTER TABLE apps ADD COLUMN max_in_flight integer;
ALTER TABLE apps ADD COLUMN pace_tokens double precision;
ALTER TABLE apps ADD COLUMN pace_at timestamptz;
-- Claims read the paced apps only: few, found without reading every app.
CREATE INDEX apps_paced ON apps (id) WHERE rate_limit IS NOT NULL OR max_in_flight IS NOT NULL;
