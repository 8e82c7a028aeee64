"""The PostgreSQL store's statements, by name: the SQLite store's have the same names.

``$n`` are the arguments, in the order the statement's comment or text gives them.
"""

from __future__ import annotations

from ccpush.models import ReplayKind
from ccpush.store.rows import (
    ACCOUNT_COLUMNS,
    APP_COLUMNS,
    ATTEMPT_COLUMNS,
    DELIVERY_COLUMNS,
    IDEMPOTENCY_COLUMNS,
    KEY_COLUMNS,
    PORTAL_LINK_COLUMNS,
    REPLAY_COLUMNS,
    SIGNING_COLUMNS,
    VERSION_COLUMNS,
)

# Schema

CREATE_MIGRATIONS = """
CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,
                                              applied_at TIMESTAMPTZ NOT NULL DEFAULT now())
"""
APPLIED_MIGRATIONS = "SELECT version FROM schema_migrations"
RECORD_MIGRATION = "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)"
# One migrator at a time across all processes: $1 the lock's key.
LOCK_MIGRATIONS = "SELECT pg_advisory_xact_lock($1)"
# ``{schema}``: a name checked by the store.
CREATE_SCHEMA = 'CREATE SCHEMA IF NOT EXISTS "{schema}"'

# Accounts and keys

INSERT_ACCOUNT = f"""
INSERT INTO accounts ({ACCOUNT_COLUMNS}) VALUES ($1, $2, $3)
RETURNING {ACCOUNT_COLUMNS}
"""

SELECT_ACCOUNT = f"SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1"

LIST_ACCOUNTS = f"SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY created_at, id"

INSERT_KEY = f"""
INSERT INTO api_keys (id, account_id, name, scope, secret_hash, prefix, created_at)
SELECT $1, $2, $3, $4, $5, $6, $7
WHERE $2::text IS NULL OR EXISTS (SELECT 1 FROM accounts WHERE id = $2)
RETURNING {KEY_COLUMNS}
"""

LIST_KEYS = f"""
SELECT {KEY_COLUMNS} FROM api_keys
WHERE account_id IS NOT DISTINCT FROM $1::text
ORDER BY created_at, id
"""

# A second revocation keeps the first time.
REVOKE_KEY = f"""
UPDATE api_keys SET revoked_at = coalesce(revoked_at, $3)
WHERE id = $1 AND account_id IS NOT DISTINCT FROM $2::text
RETURNING {KEY_COLUMNS}
"""

KEY_BY_HASH = f"SELECT {KEY_COLUMNS} FROM api_keys WHERE secret_hash = $1 AND revoked_at IS NULL"


# Secrets at rest: the apps whose secrets are not all sealed (a sealed text starts
# 'gAAAAA'; the endpoint is always kept sealed), every app with a secret, and an app's
# secrets written back.
PLAIN_SECRETS = """
SELECT id, signing_secret, previous_secret, endpoint FROM apps
WHERE substr(signing_secret, 1, 6) <> 'gAAAAA' OR substr(previous_secret, 1, 6) <> 'gAAAAA'
FOR UPDATE
"""
ALL_SECRETS = """
SELECT id, signing_secret, previous_secret, endpoint FROM apps
WHERE signing_secret IS NOT NULL OR previous_secret IS NOT NULL OR endpoint IS NOT NULL
FOR UPDATE
"""
# The sealed push settings of the claimed apps that have some: read once per app, not
# carried on each claimed row.
APP_ENDPOINTS = """
SELECT id, endpoint FROM apps WHERE id = ANY($1::text[]) AND endpoint IS NOT NULL
"""
RESEAL_APP = """
UPDATE apps SET signing_secret = $2, previous_secret = $3, endpoint = $4 WHERE id = $1
"""

# Voice applications

INSERT_APP = f"""
INSERT INTO apps (id, account_id, name, push_url, paused, signing, created_at, updated_at,
                  signing_secret)
SELECT $1, accounts.id, $3, $4, false, true, $5, $5, $6 FROM accounts WHERE accounts.id = $2
RETURNING {APP_COLUMNS}
"""

# Then a lock, if one is wanted (``FOR UPDATE``...).
SELECT_APP = f"""
SELECT {APP_COLUMNS} FROM apps WHERE id = $1 AND ($2::text IS NULL OR account_id = $2)
"""

LIST_APPS = f"""
SELECT {APP_COLUMNS} FROM apps WHERE $1::text IS NULL OR account_id = $1
ORDER BY created_at, id
"""

# ``{columns}``: ``name = $3, ...`` for the columns that change (from ``app_changes``).
UPDATE_APP = f"""
UPDATE apps SET {{columns}}updated_at = $2 WHERE id = $1
RETURNING {APP_COLUMNS}
"""

SIGNING_KEYS = f"""
SELECT {SIGNING_COLUMNS} FROM apps WHERE id = $1
"""

ROTATE_KEYS = f"""
UPDATE apps SET previous_secret = signing_secret, previous_secret_until = $3,
                signing_secret = $2, updated_at = $4
WHERE id = $1
RETURNING {SIGNING_COLUMNS}
"""

# The pending deliveries of an app, lane by lane (each lane has its index).
HOLD_WAITING = tuple(
    "UPDATE deliveries SET state = 'held', updated_at = $2"
    f" WHERE app_id = $1 AND state = 'pending' AND attempts {lane}"
    for lane in ("= 0", "> 0")
)

RELEASE_HELD = """
UPDATE deliveries SET state = 'pending', next_attempt_at = $2, updated_at = $2
WHERE app_id = $1 AND state = 'held'
"""

# In this order: each table before those it references, and deliveries before their
# attempts (as for PURGE).
DELETE_APP = (
    "DELETE FROM deliveries WHERE app_id = $1",
    "DELETE FROM attempts WHERE app_id = $1",
    "DELETE FROM replays WHERE app_id = $1",
    "DELETE FROM record_versions WHERE app_id = $1",
    "DELETE FROM call_records WHERE app_id = $1",
    "DELETE FROM apps WHERE id = $1",
)

# Records and deliveries

# The apps of a group commit ($1), locked in id order (the lock order) while their records
# are planned: ingestion is serialised per app, so sequence numbers have no holes.
APPS_TO_INGEST = f"""
SELECT {APP_COLUMNS}, last_seq FROM apps WHERE id = ANY($1::text[])
ORDER BY id
FOR NO KEY UPDATE
"""

# Each (app $1[i], session id $2[i]) of a group looked up at a time, through the unique
# index (LIMIT 1 keeps the planner from flattening the LATERAL subqueries into a join over
# the apps' records, whose cost grows with them).
LATEST_VERSIONS = """
SELECT input.app, r.call_session_id, r.id, r.version, v.body
FROM unnest($1::text[], $2::text[]) AS input (app, sid)
CROSS JOIN LATERAL (
    SELECT id, call_session_id, version FROM call_records
    WHERE app_id = input.app AND call_session_id = input.sid LIMIT 1
) AS r
CROSS JOIN LATERAL (
    SELECT body FROM record_versions WHERE record_id = r.id AND version = r.version LIMIT 1
) AS v
"""

# A group's planned versions stored in one statement: the records new in it ($1-$5: app,
# session id, call start, received at, latest version), the known ones changed ($6-$8: id,
# latest version, call start), each version ($9-$16: app, record id or NULL for a new
# record, session id, version, sequence number, body, received at, its delivery's state)
# with its delivery due when received, each app's last sequence number ($17, $18); and a
# notification on channel $19 unless it is NULL (deliveries due now: wake the workers).
# Foreign keys are checked at the end of the statement, when every row is there.
STORE_INGESTED = """
WITH new_records AS (
    INSERT INTO call_records (app_id, call_session_id, call_start, received_at, version)
    SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[],
                         $5::int[])
    RETURNING id, app_id, call_session_id),
changed_records AS (
    UPDATE call_records AS r SET version = input.version, call_start = input.start
    FROM unnest($6::bigint[], $7::int[], $8::timestamptz[]) AS input (id, version, start)
    WHERE r.id = input.id),
planned AS (
    SELECT * FROM unnest($9::text[], $10::bigint[], $11::text[], $12::int[], $13::bigint[],
                         $14::bytea[], $15::timestamptz[], $16::text[])
        AS input (app, record_id, sid, version, seq, body, received, state)),
versions AS (
    INSERT INTO record_versions (record_id, app_id, version, seq, body, received_at)
    SELECT coalesce(p.record_id, n.id), p.app, p.version, p.seq, p.body, p.received
    FROM planned AS p LEFT JOIN new_records AS n
        ON p.record_id IS NULL AND n.app_id = p.app AND n.call_session_id = p.sid
    RETURNING id, record_id, app_id, seq),
made AS (
    INSERT INTO deliveries
        (record_id, version_id, app_id, state, next_attempt_at, created_at, updated_at)
    SELECT v.record_id, v.id, v.app_id, p.state, p.received, p.received, p.received
    FROM versions AS v JOIN planned AS p ON p.app = v.app_id AND p.seq = v.seq),
sequences AS (
    UPDATE apps SET last_seq = input.seq
    FROM unnest($17::text[], $18::bigint[]) AS input (app, seq)
    WHERE apps.id = input.app)
SELECT pg_notify($19::text, '') WHERE $19::text IS NOT NULL
"""

# A notification on channel $1, sent at commit: deliveries are due (resume, resend, replay).
NOTIFY_DUE = "SELECT pg_notify($1::text, '')"

FIND_RECORD = "SELECT id FROM call_records WHERE app_id = $1 AND call_session_id = $2"

# Resend and replay: a delivery of each record's latest version.
INSERT_DELIVERIES = """
INSERT INTO deliveries
    (record_id, version_id, app_id, state, next_attempt_at, replay_id, created_at, updated_at)
SELECT r.id, v.id, $2, $3, $4, $5, $4, $4
FROM unnest($1::bigint[]) AS ids (id)
JOIN call_records AS r ON r.id = ids.id
JOIN record_versions AS v ON v.record_id = r.id AND v.version = r.version
RETURNING id
"""

# Open bounds as infinities rather than ``$n IS NULL OR``: the plan stays an index range.
LIST_RECORDS = f"""
SELECT {VERSION_COLUMNS}
FROM record_versions AS v JOIN call_records AS r ON r.id = v.record_id
WHERE r.app_id = $1
  AND r.call_start >= coalesce($2::timestamptz, '-infinity')
  AND r.call_start < coalesce($3::timestamptz, 'infinity')
  AND (r.call_start, v.id) > (coalesce($4::timestamptz, '-infinity'), coalesce($5::bigint, 0))
ORDER BY r.call_start, v.id
LIMIT $6
"""

RECORDS_BY_SEQUENCE = f"""
SELECT {VERSION_COLUMNS}
FROM record_versions AS v JOIN call_records AS r ON r.id = v.record_id
WHERE v.app_id = $1 AND v.seq BETWEEN $2 AND $3
ORDER BY v.seq
LIMIT $4
"""

# ``{filters}``: `` AND <condition>`` for each filter given, its value in $3, $4...
# (only those given, so each combination gets its own plan). ``LIMIT NULL``: all.
LIST_DELIVERIES = f"""
SELECT {DELIVERY_COLUMNS}
FROM deliveries AS d JOIN call_records AS r ON r.id = d.record_id
JOIN record_versions AS v ON v.id = d.version_id
WHERE d.app_id = $1 AND r.app_id = $1{{filters}}
ORDER BY d.id DESC
LIMIT $2
"""

ATTEMPTS_OF = f"""
SELECT {ATTEMPT_COLUMNS}
FROM attempts WHERE delivery_id = ANY($1::bigint[])
ORDER BY number, id
"""

# Deliveries by state, each read from its own (partial) index: of all apps, of one ($1).
COUNT_BY_STATE = """
SELECT 'pending', count(*) FROM deliveries WHERE state = 'pending'
UNION ALL
SELECT 'held', count(*) FROM deliveries WHERE state = 'held'
UNION ALL
SELECT 'sending', count(*) FROM deliveries WHERE state = 'sending'
UNION ALL
SELECT state, count(*) FROM deliveries WHERE state IN ('delivered', 'failed') GROUP BY state
"""

APP_COUNT_BY_STATE = """
SELECT 'pending', count(*) FROM deliveries WHERE app_id = $1 AND state = 'pending' AND attempts = 0
UNION ALL
SELECT 'pending', count(*) FROM deliveries WHERE app_id = $1 AND state = 'pending' AND attempts > 0
UNION ALL
SELECT 'held', count(*) FROM deliveries WHERE app_id = $1 AND state = 'held'
UNION ALL
SELECT 'sending', count(*) FROM deliveries WHERE state = 'sending' AND app_id = $1
UNION ALL
SELECT state, count(*) FROM deliveries WHERE app_id = $1 AND state IN ('delivered', 'failed')
GROUP BY state
"""

# Replays

# The records a replay covers, in id order after a cursor ($2), at most $3 (NULL: all):
# a range of call start times [$4, $5), or those whose latest delivery failed since $4.
REPLAY_CHUNK = {
    ReplayKind.RANGE: """
SELECT id FROM call_records
WHERE app_id = $1 AND id > $2 AND call_start >= $4 AND call_start < $5
ORDER BY id
LIMIT $3
""",
    ReplayKind.FAILED: """
SELECT d.record_id FROM deliveries AS d
WHERE d.app_id = $1 AND d.record_id > $2 AND d.state = 'failed' AND d.updated_at >= $4
  AND d.id = (SELECT max(latest.id) FROM deliveries AS latest
              WHERE latest.record_id = d.record_id)
ORDER BY d.record_id
LIMIT $3
""",
}

# How many records a replay covers (the cursor 0, the limit NULL).
COUNT_REPLAY = {
    kind: f"SELECT count(*) FROM ({chunk}) AS selection" for kind, chunk in REPLAY_CHUNK.items()
}

# The app's latest replay of this kind and range, and whether a delivery it made is not
# finished (for ``is_same_replay``).
SAME_REPLAY = f"""
SELECT {REPLAY_COLUMNS},
       EXISTS (SELECT 1 FROM deliveries
               WHERE replay_id = replays.id AND state IN ('held', 'pending', 'sending'))
           AS unfinished
FROM replays
WHERE app_id = $1 AND kind = $2
  AND range_from IS NOT DISTINCT FROM $3::timestamptz
  AND range_to IS NOT DISTINCT FROM $4::timestamptz
ORDER BY created_at DESC, id DESC
LIMIT 1
"""

INSERT_REPLAY = f"""
INSERT INTO replays (id, app_id, kind, range_from, range_to, state, total, created_at,
                     updated_at)
VALUES ($1, $2, $3, $4, $5, 'queued', $6, $7, $7)
RETURNING {REPLAY_COLUMNS}
"""

SELECT_REPLAY = f"SELECT {REPLAY_COLUMNS} FROM replays WHERE id = $1 AND app_id = $2"

REPLAY_PROGRESS = "SELECT state, count(*) FROM deliveries WHERE replay_id = $1 GROUP BY state"

CLAIM_REPLAY = f"""
UPDATE replays SET state = 'running', lease_until = $2, lease_owner = $3, updated_at = $1
WHERE id = (
    SELECT id FROM replays
    WHERE state = 'queued' OR (state = 'running' AND lease_until <= $1)
    ORDER BY created_at, id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
RETURNING {REPLAY_COLUMNS}
"""

REPLAY_APP = "SELECT app_id FROM replays WHERE id = $1"

LOCK_REPLAY = f"""
SELECT {REPLAY_COLUMNS}, cursor, lease_owner FROM replays WHERE id = $1 FOR UPDATE
"""

ADVANCE_REPLAY = f"""
UPDATE replays
SET cursor = $2, enqueued = enqueued + $3, updated_at = $4, state = $5, finished_at = $6,
    lease_until = $7, lease_owner = $8
WHERE id = $1
RETURNING {REPLAY_COLUMNS}
"""

# Dispatching

# Claiming, fair between apps (see ``Store.claim_due``). $1 now, $2 the batch, $5 the apps
# to skip, $6 a JSON object of apps' limits. ``busy``: the apps with due work; each gets an
# equal share of the batch per lane, read oldest first from the lane's index and locked
# (SKIP LOCKED: workers never wait for each other); the candidates are then taken in turns
# (an app's first, every app's second...), a retry's turn counting three, each app within
# its limit.
_CLAIM_LANE = """
    SELECT due.id, busy.app, due.next_attempt_at, {lane} AS lane
    FROM busy CROSS JOIN share CROSS JOIN LATERAL (
        SELECT id, next_attempt_at FROM deliveries
        WHERE app_id = busy.app AND state = 'pending' AND attempts {attempts}
          AND next_attempt_at <= $1
        ORDER BY next_attempt_at
        LIMIT share.per_app
        FOR UPDATE SKIP LOCKED) AS due
"""
# The apps with pending deliveries, found by skipping from one app to the next along a
# lane's index (a loose index scan): the cost follows the apps with work, not all apps.
_APPS_IN_LANE = """
{name}(app) AS (
    SELECT (SELECT app_id FROM deliveries WHERE state = 'pending' AND attempts {attempts}
            ORDER BY app_id LIMIT 1)
    UNION ALL
    SELECT (SELECT app_id FROM deliveries WHERE state = 'pending' AND attempts {attempts}
            AND app_id > {name}.app ORDER BY app_id LIMIT 1)
    FROM {name} WHERE {name}.app IS NOT NULL)"""
CLAIM_DUE = f"""
WITH RECURSIVE
{_APPS_IN_LANE.format(name="first_apps", attempts="= 0")},
{_APPS_IN_LANE.format(name="retry_apps", attempts="> 0")},
busy AS (
    SELECT a.id AS app FROM apps AS a
    WHERE a.id IN (SELECT app FROM first_apps UNION ALL SELECT app FROM retry_apps)
      AND a.push_url IS NOT NULL AND NOT a.paused AND a.id <> ALL($5::text[])
      -- Of the paced apps, only those whose buckets the claim locked ($7).
      AND (a.id = ANY($7::text[]) OR (a.rate_limit IS NULL AND a.max_in_flight IS NULL))
      -- Scalar subqueries, not EXISTS: PostgreSQL may run an OR of EXISTS as one hashed
      -- scan of every due delivery, whose cost grows with the backlog.
      AND ((SELECT true FROM deliveries WHERE app_id = a.id AND state = 'pending'
            AND attempts = 0 AND next_attempt_at <= $1 LIMIT 1)
           OR (SELECT true FROM deliveries WHERE app_id = a.id AND state = 'pending'
               AND attempts > 0 AND next_attempt_at <= $1 LIMIT 1))),
share AS (SELECT (($2 + count(*) - 1) / greatest(count(*), 1))::int AS per_app FROM busy),
candidates AS ({_CLAIM_LANE.format(lane=0, attempts="= 0")} UNION ALL
               {_CLAIM_LANE.format(lane=1, attempts="> 0")}),
chosen AS (
    SELECT id FROM (
        SELECT id, app, next_attempt_at,
               row_number() OVER (PARTITION BY app, lane ORDER BY next_attempt_at)
               * (1 + 2 * lane) AS turn,
               row_number() OVER (PARTITION BY app ORDER BY lane, next_attempt_at) AS nth
        FROM candidates) AS ranked
    WHERE nth <= coalesce(($6::jsonb ->> app)::int, nth)
    ORDER BY turn, next_attempt_at
    LIMIT $2)
UPDATE deliveries AS d
SET state = 'sending', lease_until = $3, lease_owner = $4, updated_at = $1
FROM call_records AS r, record_versions AS v, apps AS a
-- An array, not a join with chosen: each row found by its key, never by a scan of all.
WHERE d.id = ANY(ARRAY(SELECT id FROM chosen))
  AND r.id = d.record_id AND v.id = d.version_id AND a.id = d.app_id
RETURNING d.id, d.app_id, r.call_session_id, a.push_url, v.body, v.seq, v.version, d.attempts,
          d.first_attempt_at, d.next_attempt_at, a.signing, a.signing_secret,
          a.previous_secret, a.previous_secret_until, a.endpoint IS NOT NULL AS has_endpoint,
          d.created_at, a.rate_limit,
          a.max_in_flight
"""

# Whether any app has a pace (``ccpush.app_pace``): claims lock the buckets only then.
ANY_PACED = """
SELECT EXISTS (SELECT 1 FROM apps WHERE rate_limit IS NOT NULL OR max_in_flight IS NOT NULL)
"""
# The paced apps with due work, locked in id order (the order of ``update_app`` and of
# completions) until the claim commits: claims of all workers spend a bucket one at a time.
# $1 now.
PACED_APPS = """
SELECT a.id, a.rate_limit, a.max_in_flight, a.pace_tokens, a.pace_at FROM apps AS a
WHERE (a.rate_limit IS NOT NULL OR a.max_in_flight IS NOT NULL)
  AND a.push_url IS NOT NULL AND NOT a.paused
  AND ((SELECT true FROM deliveries WHERE app_id = a.id AND state = 'pending'
        AND attempts = 0 AND next_attempt_at <= $1 LIMIT 1)
       OR (SELECT true FROM deliveries WHERE app_id = a.id AND state = 'pending'
           AND attempts > 0 AND next_attempt_at <= $1 LIMIT 1))
ORDER BY a.id
FOR UPDATE OF a
"""
# Run after ``PACED_APPS``, so it sees the leases of the claim that held the lock before.
SENDING_OF_APPS = """
SELECT app_id, count(*) FROM deliveries WHERE state = 'sending' AND app_id = ANY($1::text[])
GROUP BY app_id
"""
SPEND_PACE = """
UPDATE apps SET pace_tokens = spent.tokens, pace_at = spent.at
FROM unnest($1::text[], $2::float8[], $3::timestamptz[]) AS spent(id, tokens, at)
WHERE apps.id = spent.id
"""

# A delivery due again while its app is not pushing (no address, or paused) waits as held.
_NEXT_STATE = """
CASE WHEN $1 = 'pending'
      AND (SELECT push_url IS NULL OR paused FROM apps WHERE apps.id = deliveries.app_id)
     THEN 'held' ELSE $1 END
"""

# $1 'pending', $2 now, $3 the deliveries, $4 the worker that must hold them.
RELEASE = f"""
UPDATE deliveries
SET state = {_NEXT_STATE}, lease_until = NULL, lease_owner = NULL, updated_at = $2
WHERE id = ANY($3::bigint[]) AND state = 'sending' AND lease_owner = $4
"""

# Completing: one statement for the whole batch, $1.. arrays with one element per attempt,
# $11 the worker. Each delivery is read by its key and locked, in id order (the order of the
# locks), whatever the statistics say. Every attempt is kept, unless its delivery was
# deleted with its app meanwhile (the lock waits for that); the delivery moves on only while
# this worker still holds its lease.
COMPLETE = f"""
WITH done AS (
    SELECT * FROM unnest($1::bigint[], $2::int[], $3::timestamptz[], $4::float8[], $5::int[],
                         $6::text[], $7::text[], $8::text[], $9::text[], $10::timestamptz[])
        AS u (id, number, started_at, duration_ms, status_code, error_kind, error, excerpt,
              next_state, next_at)
    ORDER BY id, number),
locked AS (
    SELECT done.*, d.app_id, d.state = 'sending' AND d.lease_owner = $11 AS leased
    FROM done CROSS JOIN LATERAL (
        SELECT app_id, state, lease_owner FROM deliveries WHERE id = done.id
        FOR NO KEY UPDATE) AS d),
moved AS (
    UPDATE deliveries
    SET state = {_NEXT_STATE.replace("$1", "l.next_state")}, attempts = l.number,
        next_attempt_at = l.next_at, first_attempt_at = coalesce(first_attempt_at, l.started_at),
        lease_until = NULL, lease_owner = NULL, updated_at = l.started_at
    FROM locked AS l
    WHERE deliveries.id = ANY(ARRAY(SELECT id FROM locked WHERE leased))
      AND deliveries.id = l.id AND l.leased)
INSERT INTO attempts (delivery_id, number, started_at, duration_ms, status_code, error_kind,
                      error, response_excerpt, app_id)
SELECT id, number, started_at, duration_ms, status_code, error_kind, error, excerpt, app_id
FROM locked
"""

# An app's failing streak ($1 the app, $2 failing since); neither writes (nor locks) the row
# when nothing changes. A success restarts the streak at the first failure after it; a
# failure starts one if none.
STREAK_RESTART = """
UPDATE apps SET failing_since = $2 WHERE id = $1 AND failing_since IS DISTINCT FROM $2
"""
STREAK_CONTINUE = "UPDATE apps SET failing_since = $2 WHERE id = $1 AND failing_since IS NULL"

# $1 'pending', $2 now.
RELEASE_EXPIRED = f"""
UPDATE deliveries
SET state = {_NEXT_STATE}, lease_until = NULL, lease_owner = NULL, updated_at = $2
WHERE state = 'sending' AND lease_until <= $2
"""

NEXT_DUE = "SELECT min(next_attempt_at) FROM deliveries WHERE state = 'pending'"

OLDEST_WAITING = """
SELECT min(created_at) FROM deliveries
WHERE app_id = $1 AND state IN ('held', 'pending', 'sending')
"""

# Upkeep

APPS_FAILING = f"""
SELECT {APP_COLUMNS} FROM apps
WHERE failing_since <= $1 AND NOT paused AND push_url IS NOT NULL
ORDER BY failing_since
"""

# Records received before $1 that wait for no push, oldest first, at most $2.
PURGEABLE = """
SELECT r.id FROM call_records AS r
WHERE r.received_at < $1 AND NOT EXISTS (
    SELECT 1 FROM deliveries AS d
    WHERE d.record_id = r.id AND d.state IN ('held', 'pending', 'sending'))
ORDER BY r.received_at
LIMIT $2
FOR UPDATE SKIP LOCKED
"""
# Deliveries before their attempts: deleting a delivery waits for a completion that holds
# it, and the next statement then sees the attempts that completion logged.
PURGE_DELIVERIES = "DELETE FROM deliveries WHERE record_id = ANY($1::bigint[]) RETURNING id"
PURGE_ATTEMPTS = "DELETE FROM attempts WHERE delivery_id = ANY($1::bigint[])"
PURGE = (
    "DELETE FROM record_versions WHERE record_id = ANY($1::bigint[])",
    "DELETE FROM call_records WHERE id = ANY($1::bigint[])",
)

# Idempotency keys: $1 caller, $2 key, $3 fingerprint, $4 holder, $5 held until, $6 expiry.

# The key's row, locked: made for this request ($4 its holder) if there was none.
LOCK_IDEMPOTENCY_KEY = f"""
INSERT INTO idempotency_keys ({IDEMPOTENCY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, NULL, NULL)
ON CONFLICT (caller, idempotency_key) DO UPDATE SET holder = idempotency_keys.holder
RETURNING {IDEMPOTENCY_COLUMNS}
"""

PUT_IDEMPOTENCY_KEY = """
UPDATE idempotency_keys
SET fingerprint = $3, holder = $4, held_until = $5, expires_at = $6, status = NULL, answer = NULL
WHERE caller = $1 AND idempotency_key = $2
"""

# $1 caller, $2 key, $3 holder, $4 status, $5 answer.
ANSWER_IDEMPOTENCY_KEY = """
UPDATE idempotency_keys SET status = $4, answer = $5
WHERE caller = $1 AND idempotency_key = $2 AND holder = $3
"""

RELEASE_IDEMPOTENCY_KEY = """
DELETE FROM idempotency_keys
WHERE caller = $1 AND idempotency_key = $2 AND holder = $3 AND status IS NULL
"""

# Up to $2 keys expired at $1, skipping those another purge has locked.
PURGE_IDEMPOTENCY_KEYS = """
DELETE FROM idempotency_keys WHERE (caller, idempotency_key) IN (
    SELECT caller, idempotency_key FROM idempotency_keys WHERE expires_at <= $1
    LIMIT $2 FOR UPDATE SKIP LOCKED)
"""

# Statistics

# The app's ($1) attempts started at or after $2 by period of $3 seconds from $2. A failed
# attempt was the delivery's last if the delivery failed with it.
ATTEMPT_STATS = """
SELECT floor(extract(epoch FROM a.started_at - $2) / $3)::bigint AS slot,
       count(*) FILTER (WHERE a.error_kind IS NULL) AS delivered,
       count(*) FILTER (WHERE a.error_kind IS NOT NULL
                        AND NOT (d.state = 'failed' AND a.number = d.attempts)) AS retrying,
       count(*) FILTER (WHERE a.error_kind IS NOT NULL
                        AND d.state = 'failed' AND a.number = d.attempts) AS failed
FROM attempts AS a JOIN deliveries AS d ON d.id = a.delivery_id
WHERE a.app_id = $1 AND a.started_at >= $2
GROUP BY slot ORDER BY slot
"""

# Of the apps of account $1 (NULL: of every account): their attempts started at or after
# $2 by outcome, and their deliveries waiting now by state, with when the earliest pending
# one is due and when the oldest was made.
_ACCOUNT_APPS = "SELECT id FROM apps WHERE $1::text IS NULL OR account_id = $1"
ACTIVITY_OUTCOMES = f"""
SELECT a.app_id,
       count(*) FILTER (WHERE a.error_kind IS NULL) AS delivered,
       count(*) FILTER (WHERE a.error_kind IS NOT NULL
                        AND NOT (d.state = 'failed' AND a.number = d.attempts)) AS retried,
       count(*) FILTER (WHERE a.error_kind IS NOT NULL
                        AND d.state = 'failed' AND a.number = d.attempts) AS failed
FROM attempts AS a JOIN deliveries AS d ON d.id = a.delivery_id
WHERE a.app_id IN ({_ACCOUNT_APPS}) AND a.started_at >= $2
GROUP BY a.app_id
"""
ACTIVITY_WAITING = f"""
SELECT app_id, 'pending' AS state, count(*) AS count, min(next_attempt_at) AS oldest_due,
       min(created_at) AS oldest_made
FROM deliveries
WHERE state = 'pending' AND attempts = 0 AND app_id IN ({_ACCOUNT_APPS}) GROUP BY app_id
UNION ALL
SELECT app_id, 'pending', count(*), min(next_attempt_at), min(created_at)
FROM deliveries
WHERE state = 'pending' AND attempts > 0 AND app_id IN ({_ACCOUNT_APPS}) GROUP BY app_id
UNION ALL
SELECT app_id, 'sending', count(*), NULL, min(created_at)
FROM deliveries WHERE state = 'sending' AND app_id IN ({_ACCOUNT_APPS}) GROUP BY app_id
UNION ALL
SELECT app_id, 'held', count(*), NULL, min(created_at)
FROM deliveries WHERE state = 'held' AND app_id IN ({_ACCOUNT_APPS}) GROUP BY app_id
"""

# Console sessions

END_CONSOLE_SESSION = """
INSERT INTO ended_console_sessions (session_id, ended_at) VALUES ($1, $2)
ON CONFLICT (session_id) DO NOTHING
"""
CONSOLE_SESSION_ENDED = "SELECT 1 FROM ended_console_sessions WHERE session_id = $1"
PURGE_CONSOLE_SESSIONS = "DELETE FROM ended_console_sessions WHERE ended_at < $1"

# Portal links

# $2 the account, $3 the app (NULL: any of the account's): no row when either is missing.
INSERT_PORTAL_LINK = f"""
INSERT INTO portal_links (id, account_id, app_id, token_hash, read_only, created_at, expires_at)
SELECT $1, $2, $3, $4, $5, $6, $7
WHERE EXISTS (SELECT 1 FROM accounts WHERE id = $2)
  AND ($3::text IS NULL OR EXISTS (SELECT 1 FROM apps WHERE id = $3 AND account_id = $2))
RETURNING {PORTAL_LINK_COLUMNS}
"""
# The statement that finds a link unused and unexpired marks it used: it works once.
# $1 the token's hash, $2 now.
USE_PORTAL_LINK = f"""
UPDATE portal_links SET used_at = $2
WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2
RETURNING {PORTAL_LINK_COLUMNS}
"""
PURGE_PORTAL_LINKS = "DELETE FROM portal_links WHERE expires_at < $1"
