-- An app's push settings besides its URL (ccpush.endpoint): one JSON text, sealed with
-- the secret key (ccpush.secret_box), NULL when it has none.
ALTER TABLE apps ADD COLUMN endpoint TEXT;
