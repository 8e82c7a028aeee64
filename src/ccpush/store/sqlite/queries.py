"""The SQLite store's statements, by name: the PostgreSQL store's have the same names.

Arguments are ``?`` in the order of the text, ``?n`` by number, or ``:name`` by name.
Times are epoch seconds (REAL).
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
                                              applied_at REAL NOT NULL)
"""
APPLIED_MIGRATIONS = "SELECT version FROM schema_migrations"
RECORD_MIGRATION = (
    "INSERT INTO schema_migrations VALUES (?, ?, CAST(strftime('%s', 'now') AS REAL))"
)

# Accounts and keys

INSERT_ACCOUNT = f"""
INSERT INTO accounts ({ACCOUNT_COLUMNS}) VALUES (?, ?, ?)
"""

SELECT_ACCOUNT = f"SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ?"

LIST_ACCOUNTS = f"SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY created_at, id"

INSERT_KEY = """
INSERT INTO api_keys (id, account_id, name, scope, secret_hash, prefix, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?)
"""

LIST_KEYS = f"""
SELECT {KEY_COLUMNS} FROM api_keys
WHERE account_id IS ?
ORDER BY created_at, id
"""

# A second revocation keeps the first time.
REVOKE_KEY = f"""
UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?3)
WHERE id = ?1 AND account_id IS ?2
RETURNING {KEY_COLUMNS}
"""

KEY_BY_HASH = f"SELECT {KEY_COLUMNS} FROM api_keys WHERE secret_hash = ? AND revoked_at IS NULL"


# Secrets at rest: the apps whose secrets are not all sealed (a sealed text starts
# 'gAAAAA'; the endpoint is always kept sealed), every app with a secret, and an app's
# secrets written back.
PLAIN_SECRETS = """
SELECT id, signing_secret, previous_secret, endpoint FROM apps
WHERE substr(signing_secret, 1, 6) <> 'gAAAAA' OR substr(previous_secret, 1, 6) <> 'gAAAAA'
"""
ALL_SECRETS = """
SELECT id, signing_secret, previous_secret, endpoint FROM apps
WHERE signing_secret IS NOT NULL OR previous_secret IS NOT NULL OR endpoint IS NOT NULL
"""
# The sealed push settings of the claimed apps that have some (a JSON array of app ids): read
# once per app, not carried on each claimed row.
APP_ENDPOINTS = """
SELECT id, endpoint FROM apps
WHERE id IN (SELECT value FROM json_each(?)) AND endpoint IS NOT NULL
"""
RESEAL_APP = """
UPDATE apps SET signing_secret = ?2, previous_secret = ?3, endpoint = ?4 WHERE id = ?1
"""

# Voice applications

INSERT_APP = """
INSERT INTO apps (id, account_id, name, push_url, paused, signing, created_at, updated_at,
                  signing_secret)
VALUES (?1, ?2, ?3, ?4, 0, 1, ?5, ?5, ?6)
"""

SELECT_APP = f"""
SELECT {APP_COLUMNS} FROM apps WHERE id = ?
"""

LIST_APPS = f"""
SELECT {APP_COLUMNS} FROM apps WHERE ?1 IS NULL OR account_id = ?1
ORDER BY created_at, id
"""

# ``{columns}``: ``name = :name, ...`` for the columns that change (from ``app_changes``).
UPDATE_APP = f"""
UPDATE apps SET {{columns}}updated_at = :now WHERE id = :id
RETURNING {APP_COLUMNS}
"""

SIGNING_KEYS = f"""
SELECT {SIGNING_COLUMNS} FROM apps WHERE id = ?
"""

ROTATE_KEYS = f"""
UPDATE apps SET previous_secret = signing_secret, previous_secret_until = ?3,
                signing_secret = ?2, updated_at = ?4
WHERE id = ?1
RETURNING {SIGNING_COLUMNS}
"""

# Waiting deliveries of an app that stops pushing are held: the pending ones, lane by lane
# (each lane has its index).
HOLD_WAITING = tuple(
    "UPDATE deliveries SET state = 'held', updated_at = ?2"
    f" WHERE app_id = ?1 AND state = 'pending' AND attempts {lane}"
    for lane in ("= 0", "> 0")
)

RELEASE_HELD = """
UPDATE deliveries SET state = 'pending', next_attempt_at = ?2, updated_at = ?2
WHERE app_id = ?1 AND state = 'held'
"""

# In this order: each table before those it references.
DELETE_APP = (
    "DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM deliveries WHERE app_id = ?)",
    "DELETE FROM deliveries WHERE app_id = ?",
    "DELETE FROM replays WHERE app_id = ?",
    "DELETE FROM record_versions WHERE app_id = ?",
    "DELETE FROM call_records WHERE app_id = ?",
    "DELETE FROM apps WHERE id = ?",
)

# Records and deliveries
#
# Statements of many rows at once take their placeholders in ``{marks}`` (``?,?``, an IN
# list) or ``{rows}`` (``(?, ?), (?, ?)``, rows of VALUES).

# With the app's last sequence number.
APP_TO_INGEST = f"SELECT {APP_COLUMNS}, last_seq FROM apps WHERE id = ?"

LATEST_VERSIONS = (
    "SELECT r.call_session_id, r.id, r.version, v.body FROM call_records r"
    " JOIN record_versions v ON v.record_id = r.id AND v.version = r.version"
    " WHERE r.app_id = ? AND r.call_session_id IN ({marks})"
)

# One row per record new in the batch, with its latest version in the batch.
INSERT_RECORDS = (
    "INSERT INTO call_records (app_id, call_session_id, call_start, received_at,"
    " version) VALUES {rows}"
)

UPDATE_RECORDS = (
    "UPDATE call_records SET version = c.column2, call_start = c.column3"
    " FROM (VALUES {rows}) AS c"
    " WHERE call_records.id = c.column1"
)

INSERT_VERSIONS = (
    "INSERT INTO record_versions (record_id, app_id, version, seq, body,"
    " received_at) SELECT r.id, r.app_id, v.column2, v.column3, v.column4,"
    " v.column5 FROM (VALUES {rows}) AS v"
    " JOIN call_records AS r ON r.app_id = ? AND r.call_session_id = v.column1"
    " ORDER BY v.column3"
)

# Ingestion: a delivery of each version just stored (its sequence numbers follow on).
INSERT_VERSION_DELIVERIES = (
    "INSERT INTO deliveries (record_id, version_id, app_id, state, next_attempt_at,"
    " created_at, updated_at) SELECT record_id, id, app_id, ?, received_at,"
    " received_at, received_at FROM record_versions"
    " WHERE app_id = ? AND seq BETWEEN ? AND ? ORDER BY seq"
)

SET_LAST_SEQUENCE = "UPDATE apps SET last_seq = ? WHERE id = ?"

FIND_RECORD = "SELECT id FROM call_records WHERE app_id = ? AND call_session_id = ?"

# Resend and replay: a delivery of each record's latest version (:ids a JSON array).
INSERT_DELIVERIES = """
INSERT INTO deliveries
    (record_id, version_id, app_id, state, next_attempt_at, replay_id, created_at, updated_at)
SELECT r.id, v.id, :app, :state, :now, :replay, :now, :now
FROM json_each(:ids) AS ids
JOIN call_records AS r ON r.id = ids.value
JOIN record_versions AS v ON v.record_id = r.id AND v.version = r.version
ORDER BY ids.key
RETURNING id
"""

# ``{filters}``: `` AND <condition>`` for each bound given (only those).
LIST_RECORDS = (
    f"SELECT {VERSION_COLUMNS} FROM record_versions v"
    " JOIN call_records r ON r.id = v.record_id"
    " WHERE v.app_id = :app{filters} ORDER BY r.call_start, v.id LIMIT :limit"
)

RECORDS_BY_SEQUENCE = (
    f"SELECT {VERSION_COLUMNS} FROM record_versions v"
    " JOIN call_records r ON r.id = v.record_id"
    " WHERE v.app_id = ? AND v.seq BETWEEN ? AND ? ORDER BY v.seq LIMIT ?"
)

# ``{filters}``: `` AND <condition>`` for each filter given (only those).
LIST_DELIVERIES = (
    f"SELECT {DELIVERY_COLUMNS} FROM deliveries d"
    " JOIN call_records r ON r.id = d.record_id"
    " JOIN record_versions v ON v.id = d.version_id"
    " WHERE d.app_id = :app{filters} ORDER BY d.id DESC LIMIT :limit"
)

ATTEMPTS_OF = (
    f"SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE delivery_id IN ({{marks}}) ORDER BY number, id"
)

# Deliveries by state, each read from its own (partial) index: of all apps, of one (?1).
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
SELECT 'pending', count(*) FROM deliveries WHERE app_id = ?1 AND state = 'pending' AND attempts = 0
UNION ALL
SELECT 'pending', count(*) FROM deliveries WHERE app_id = ?1 AND state = 'pending' AND attempts > 0
UNION ALL
SELECT 'held', count(*) FROM deliveries WHERE app_id = ?1 AND state = 'held'
UNION ALL
SELECT 'sending', count(*) FROM deliveries INDEXED BY deliveries_leased
WHERE state = 'sending' AND app_id = ?1
UNION ALL
SELECT state, count(*) FROM deliveries WHERE app_id = ?1 AND state IN ('delivered', 'failed')
GROUP BY state
"""

# Replays

# The records a replay covers: a range of call start times [:from, :to), or those whose
# latest delivery failed since :from.
_REPLAY_SELECTION = {
    ReplayKind.RANGE: "r.app_id = :app AND r.call_start >= :from AND r.call_start < :to",
    ReplayKind.FAILED: (
        "r.app_id = :app AND EXISTS (SELECT 1 FROM deliveries d WHERE d.record_id = r.id"
        " AND d.state = 'failed' AND d.updated_at >= :from"
        " AND d.id = (SELECT max(id) FROM deliveries WHERE record_id = r.id))"
    ),
}

# In id order after a cursor (:cursor), at most :chunk.
REPLAY_CHUNK = {
    kind: f"SELECT r.id FROM call_records r WHERE {selection}"
    " AND r.id > :cursor ORDER BY r.id LIMIT :chunk"
    for kind, selection in _REPLAY_SELECTION.items()
}

# How many records a replay covers.
COUNT_REPLAY = {
    kind: f"SELECT count(*) FROM call_records r WHERE {selection}"
    for kind, selection in _REPLAY_SELECTION.items()
}

# The app's latest replay of this kind and range, and whether a delivery it made is not
# finished (for ``is_same_replay``).
SAME_REPLAY = f"""
SELECT {REPLAY_COLUMNS},
       EXISTS (SELECT 1 FROM deliveries
               WHERE replay_id = replays.id AND state IN ('held', 'pending', 'sending'))
           AS unfinished
FROM replays
WHERE app_id = :app AND kind = :kind AND range_from IS :from AND range_to IS :to
ORDER BY created_at DESC, id DESC
LIMIT 1
"""

INSERT_REPLAY = f"""
INSERT INTO replays (id, app_id, kind, range_from, range_to, state, total, created_at,
                     updated_at)
VALUES (:id, :app, :kind, :from, :to, 'queued', :total, :now, :now)
RETURNING {REPLAY_COLUMNS}
"""

SELECT_REPLAY = f"SELECT {REPLAY_COLUMNS} FROM replays WHERE id = ? AND app_id = ?"

REPLAY_PROGRESS = "SELECT state, count(*) FROM deliveries WHERE replay_id = ? GROUP BY state"

CLAIM_REPLAY = f"""
UPDATE replays SET state = 'running', lease_until = :lease, lease_owner = :owner,
                   updated_at = :now
WHERE id = (
    SELECT id FROM replays
    WHERE state = 'queued' OR (state = 'running' AND lease_until <= :now)
    ORDER BY created_at
    LIMIT 1
)
RETURNING {REPLAY_COLUMNS}
"""

# Read in the write transaction: the database is locked already.
LOCK_REPLAY = f"""
SELECT {REPLAY_COLUMNS}, cursor, lease_owner FROM replays WHERE id = ?
"""

ADVANCE_REPLAY = f"""
UPDATE replays
SET cursor = :cursor, enqueued = enqueued + :count, updated_at = :now, state = :state,
    finished_at = :finished, lease_until = :lease, lease_owner = :owner
WHERE id = :id
RETURNING {REPLAY_COLUMNS}
"""

# Dispatching

# Claiming, fair between apps (see ``Store.claim_due``). ?1 now, ?2 the batch, ?3 a JSON
# array of the apps to skip, ?4 a JSON object of apps' limits. ``busy``: the apps with due
# work; each gets an equal share of the batch per lane, read oldest first from the lane's
# index; the candidates are then taken in turns (an app's first, every app's second...), a
# retry's turn counting three, each app within its limit. The bodies come as one BLOB, in
# the order of the rows (both aggregates read the same rows), each as long as its row says:
# cheaper to cut than to decode from JSON.
_CLAIM_LANE = """
    SELECT d.id, d.app_id, d.next_attempt_at, {lane} AS lane FROM busy JOIN deliveries AS d
    ON d.id IN (SELECT id FROM deliveries WHERE app_id = busy.app AND state = 'pending'
                AND attempts {attempts} AND next_attempt_at <= ?1 ORDER BY next_attempt_at
                LIMIT (SELECT per_app FROM share))
"""
# The apps with pending deliveries, found by skipping from one app to the next along a
# lane's index (a loose index scan): the cost follows the apps with work, not all apps.
_APPS_IN_LANE = """
{name}(app) AS (
    SELECT (SELECT app_id FROM deliveries INDEXED BY {index}
            WHERE state = 'pending' AND attempts {attempts} ORDER BY app_id LIMIT 1)
    UNION ALL
    SELECT (SELECT app_id FROM deliveries INDEXED BY {index}
            WHERE state = 'pending' AND attempts {attempts} AND app_id > {name}.app
            ORDER BY app_id LIMIT 1)
    FROM {name} WHERE {name}.app IS NOT NULL)"""
CLAIM_DUE = f"""
WITH RECURSIVE
{_APPS_IN_LANE.format(name="first_apps", index="deliveries_due_first", attempts="= 0")},
{_APPS_IN_LANE.format(name="retry_apps", index="deliveries_due_retry", attempts="> 0")},
busy AS (
    SELECT a.id AS app FROM apps AS a
    WHERE a.id IN (SELECT app FROM first_apps UNION SELECT app FROM retry_apps)
      AND a.push_url IS NOT NULL AND NOT a.paused
      AND a.id NOT IN (SELECT value FROM json_each(?3))
      AND (EXISTS (SELECT 1 FROM deliveries WHERE app_id = a.id AND state = 'pending'
                   AND attempts = 0 AND next_attempt_at <= ?1)
           OR EXISTS (SELECT 1 FROM deliveries WHERE app_id = a.id AND state = 'pending'
                      AND attempts > 0 AND next_attempt_at <= ?1))),
share AS (SELECT (?2 + count(*) - 1) / max(count(*), 1) AS per_app FROM busy),
due AS ({_CLAIM_LANE.format(lane=0, attempts="= 0")} UNION ALL
        {_CLAIM_LANE.format(lane=1, attempts="> 0")}),
chosen AS (
    SELECT id FROM (
        SELECT id, app_id, next_attempt_at,
               row_number() OVER (PARTITION BY app_id, lane ORDER BY next_attempt_at)
               * (1 + 2 * lane) AS turn,
               row_number() OVER (PARTITION BY app_id ORDER BY lane, next_attempt_at) AS nth
        FROM due)
    WHERE nth <= coalesce(json_extract(?4, '$."' || app_id || '"'), nth)
    ORDER BY turn, next_attempt_at LIMIT ?2)
SELECT json_group_array(d.id), json_group_array(json_array(
    d.id, d.app_id, r.call_session_id, a.push_url, length(v.body), d.attempts,
    d.first_attempt_at, d.next_attempt_at, a.signing, a.signing_secret, a.previous_secret,
    a.previous_secret_until, v.seq, v.version, a.endpoint IS NOT NULL, d.created_at, a.rate_limit,
    a.max_in_flight)),
    CAST(group_concat(CAST(v.body AS TEXT), '') AS BLOB)
FROM chosen JOIN deliveries AS d ON d.id = chosen.id JOIN call_records AS r ON r.id = d.record_id
JOIN record_versions AS v ON v.id = d.version_id JOIN apps AS a ON a.id = d.app_id
"""
# The paced apps with due work (``ccpush.app_pace``), read in the claim's transaction: their
# pace, bucket, and deliveries being pushed (counted only for a ``maxInFlight``). ?1 now.
PACED_APPS = """
SELECT a.id, a.rate_limit, a.max_in_flight, a.pace_tokens, a.pace_at,
       CASE WHEN a.max_in_flight IS NULL THEN 0
            ELSE (SELECT count(*) FROM deliveries INDEXED BY deliveries_leased
                  WHERE state = 'sending' AND app_id = a.id) END
FROM apps AS a INDEXED BY apps_paced
WHERE (a.rate_limit IS NOT NULL OR a.max_in_flight IS NOT NULL)
  AND a.push_url IS NOT NULL AND NOT a.paused
  AND (EXISTS (SELECT 1 FROM deliveries WHERE app_id = a.id AND state = 'pending'
               AND attempts = 0 AND next_attempt_at <= ?1)
       OR EXISTS (SELECT 1 FROM deliveries WHERE app_id = a.id AND state = 'pending'
                  AND attempts > 0 AND next_attempt_at <= ?1))
"""
# The buckets a claim spent: ?1 a JSON array of [app, tokens, as of].
SPEND_PACE = """
UPDATE apps SET pace_tokens = spent.value ->> 1, pace_at = spent.value ->> 2
FROM json_each(?1) AS spent WHERE apps.id = spent.value ->> 0
"""
# Leasing what ``CLAIM_DUE`` chose: the lease, the worker, now, the ids (a JSON array).
CLAIM_LEASE = """
UPDATE deliveries SET state = 'sending', lease_until = ?, lease_owner = ?, updated_at = ?
WHERE id IN (SELECT value FROM json_each(?))
"""

# A delivery due again while its app is not pushing (no address, or paused) is held.
_NEXT_STATE = (
    "CASE WHEN :state = 'pending' AND (SELECT push_url IS NULL OR paused FROM apps"
    " WHERE apps.id = deliveries.app_id) THEN 'held' ELSE :state END"
)

# :state 'pending', :now, :ids the deliveries (a JSON array), :owner the worker that must
# hold them.
RELEASE = f"""
UPDATE deliveries SET state = {_NEXT_STATE}, lease_until = NULL, lease_owner = NULL,
    updated_at = :now
WHERE id IN (SELECT value FROM json_each(:ids)) AND state = 'sending' AND lease_owner = :owner
"""

# Completing: ?1 is a JSON array of ``_completion_row``s, ?2 the worker that must hold them.
# ``INSERT_ATTEMPTS`` first: an attempt is kept unless its delivery was deleted with its app
# meanwhile; then ``COMPLETE`` moves on the deliveries the worker still holds.
COMPLETE = f"""
UPDATE deliveries SET state = {_NEXT_STATE.replace(":state", "done.state")},
    attempts = done.number, next_attempt_at = done.next_at,
    first_attempt_at = coalesce(first_attempt_at, done.at), lease_until = NULL,
    lease_owner = NULL, updated_at = done.at
FROM (SELECT value ->> 0 AS id, value ->> 1 AS number, value ->> 2 AS at,
             value ->> 8 AS state, value ->> 9 AS next_at FROM json_each(?1)) AS done
WHERE deliveries.id = done.id AND deliveries.state = 'sending' AND deliveries.lease_owner = ?2
"""

INSERT_ATTEMPTS = """
INSERT INTO attempts (delivery_id, number, started_at, duration_ms, status_code, error_kind,
                      error, response_excerpt, app_id)
SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5,
       value ->> 6, value ->> 7, value ->> 10
FROM json_each(?1)
WHERE EXISTS (SELECT 1 FROM deliveries WHERE id = value ->> 0)
"""

# Failing streaks: ?1 a JSON array of [app, succeeded (1/0), failing since or null]. A
# success restarts the streak at the first failure after it; a failure starts one if none.
STREAKS = """
UPDATE apps SET failing_since = streak.since
FROM (SELECT value ->> 0 AS app, value ->> 1 AS succeeded, value ->> 2 AS since
      FROM json_each(?1)) AS streak
WHERE apps.id = streak.app AND CASE WHEN streak.succeeded
    THEN apps.failing_since IS NOT streak.since ELSE apps.failing_since IS NULL END
"""

# :state 'pending', :now.
RELEASE_EXPIRED = f"""
UPDATE deliveries
SET state = {_NEXT_STATE}, lease_until = NULL, lease_owner = NULL, updated_at = :now
WHERE state = 'sending' AND lease_until <= :now
"""

NEXT_DUE = "SELECT min(next_attempt_at) FROM deliveries WHERE state = 'pending'"

OLDEST_WAITING = (
    "SELECT min(created_at) FROM deliveries"
    " WHERE app_id = ? AND state IN ('held', 'pending', 'sending')"
)

# Upkeep

APPS_FAILING = f"""
SELECT {APP_COLUMNS} FROM apps
WHERE failing_since <= ? AND NOT paused AND push_url IS NOT NULL
ORDER BY failing_since
"""

# Records received before ?1 that wait for no push, oldest first, at most ?2.
PURGEABLE = """
SELECT r.id FROM call_records AS r
WHERE r.received_at < ?1 AND NOT EXISTS (
    SELECT 1 FROM deliveries AS d
    WHERE d.record_id = r.id AND d.state IN ('held', 'pending', 'sending'))
ORDER BY r.received_at
LIMIT ?2
"""
# Deleting records (``{marks}``: their ids), each table before those it references.
PURGE = (
    "DELETE FROM attempts WHERE delivery_id IN"
    " (SELECT id FROM deliveries WHERE record_id IN ({marks}))",
    "DELETE FROM deliveries WHERE record_id IN ({marks})",
    "DELETE FROM record_versions WHERE record_id IN ({marks})",
    "DELETE FROM call_records WHERE id IN ({marks})",
)

# Idempotency keys

SELECT_IDEMPOTENCY_KEY = (
    f"SELECT {IDEMPOTENCY_COLUMNS} FROM idempotency_keys WHERE caller = ? AND idempotency_key = ?"
)

PUT_IDEMPOTENCY_KEY = f"""
INSERT OR REPLACE INTO idempotency_keys ({IDEMPOTENCY_COLUMNS})
VALUES (:caller, :key, :fingerprint, :holder, :held_until, :expires_at, NULL, NULL)
"""

ANSWER_IDEMPOTENCY_KEY = """
UPDATE idempotency_keys SET status = :status, answer = :answer
WHERE caller = :caller AND idempotency_key = :key AND holder = :holder
"""

RELEASE_IDEMPOTENCY_KEY = """
DELETE FROM idempotency_keys
WHERE caller = :caller AND idempotency_key = :key AND holder = :holder AND status IS NULL
"""

PURGE_IDEMPOTENCY_KEYS = """
DELETE FROM idempotency_keys WHERE rowid IN (
    SELECT rowid FROM idempotency_keys WHERE expires_at <= ? LIMIT ?)
"""

# Statistics

# The app's (:app) attempts started at or after :since by period of :size seconds from
# :since. A failed attempt was the delivery's last if the delivery failed with it.
_LAST = "d.state = 'failed' AND a.number = d.attempts"
ATTEMPT_STATS = f"""
SELECT CAST((a.started_at - :since) / :size AS INTEGER) AS slot,
       sum(a.error_kind IS NULL) AS delivered,
       sum(a.error_kind IS NOT NULL AND NOT ({_LAST})) AS retrying,
       sum(a.error_kind IS NOT NULL AND {_LAST}) AS failed
FROM attempts AS a JOIN deliveries AS d ON d.id = a.delivery_id
WHERE a.app_id = :app AND a.started_at >= :since
GROUP BY slot ORDER BY slot
"""

# Of the apps of account :account (NULL: of every account): their attempts started at or
# after :since by outcome, and their deliveries waiting now by state, with when the earliest
# pending one is due and when the oldest was made.
_ACCOUNT_APPS = "SELECT id FROM apps WHERE :account IS NULL OR account_id = :account"
ACTIVITY_OUTCOMES = f"""
SELECT a.app_id,
       sum(a.error_kind IS NULL) AS delivered,
       sum(a.error_kind IS NOT NULL AND NOT ({_LAST})) AS retried,
       sum(a.error_kind IS NOT NULL AND {_LAST}) AS failed
FROM attempts AS a JOIN deliveries AS d ON d.id = a.delivery_id
WHERE a.app_id IN ({_ACCOUNT_APPS}) AND a.started_at >= :since
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
FROM deliveries INDEXED BY deliveries_leased
WHERE state = 'sending' AND app_id IN ({_ACCOUNT_APPS}) GROUP BY app_id
UNION ALL
SELECT app_id, 'held', count(*), NULL, min(created_at)
FROM deliveries WHERE state = 'held' AND app_id IN ({_ACCOUNT_APPS}) GROUP BY app_id
"""

# Console sessions

END_CONSOLE_SESSION = """
INSERT INTO ended_console_sessions (session_id, ended_at) VALUES (?, ?)
ON CONFLICT (session_id) DO NOTHING
"""
CONSOLE_SESSION_ENDED = "SELECT 1 FROM ended_console_sessions WHERE session_id = ?"
PURGE_CONSOLE_SESSIONS = "DELETE FROM ended_console_sessions WHERE ended_at < ?"

# Portal links

INSERT_PORTAL_LINK = f"""
INSERT INTO portal_links (id, account_id, app_id, token_hash, read_only, created_at, expires_at)
VALUES (?, ?, ?, ?, ?, ?, ?)
RETURNING {PORTAL_LINK_COLUMNS}
"""
# The statement that finds a link unused and unexpired marks it used: it works once.
USE_PORTAL_LINK = f"""
UPDATE portal_links SET used_at = :now
WHERE token_hash = :token_hash AND used_at IS NULL AND expires_at > :now
RETURNING {PORTAL_LINK_COLUMNS}
"""
PURGE_PORTAL_LINKS = "DELETE FROM portal_links WHERE expires_at < ?"
