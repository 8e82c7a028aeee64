-- Claiming is fair between apps and keeps first attempts and retries in two lanes: each
-- lane of each app is read oldest due first from its own index, so the cost of a claim
-- depends on the apps with due work and the batch, not on how many deliveries wait.
CREATE INDEX deliveries_due_first ON deliveries (app_id, next_attempt_at)
    WHERE state = 'pending' AND attempts = 0;
CREATE INDEX deliveries_due_retry ON deliveries (app_id, next_attempt_at)
    WHERE state = 'pending' AND attempts > 0;
-- An index of every delivery by (app, state) changes twice per attempt (pending, sending,
-- then the outcome) and was the largest cost of claiming and completing. Per app, the
-- states are now read from indexes that change less: pending from the lanes above, held
-- and finished deliveries from their own (a finished one is indexed once), sending from
-- deliveries_leased.
DROP INDEX deliveries_by_app_state;
CREATE INDEX deliveries_held ON deliveries (app_id) WHERE state = 'held';
CREATE INDEX deliveries_finished ON deliveries (app_id, state)
    WHERE state IN ('delivered', 'failed');
