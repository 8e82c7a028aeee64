-- The console's charts read an app's recent attempts: by app and time, from an index,
-- rather than through every delivery the app ever had.
ALTER TABLE attempts ADD COLUMN app_id text;
UPDATE attempts AS a SET app_id = d.app_id FROM deliveries AS d WHERE d.id = a.delivery_id;
CREATE INDEX attempts_by_app_time ON attempts (app_id, started_at);
