-- The console sessions signed out, each kept until every copy of its cookie has expired:
-- a cookie naming one is refused by every process on this store, not only the one that
-- answered the sign-out. Upkeep deletes the rows older than a session's life.
CREATE TABLE ended_console_sessions (
    session_id  TEXT PRIMARY KEY,
    ended_at    REAL NOT NULL
);
CREATE INDEX ended_console_sessions_by_time ON ended_console_sessions (ended_at)
