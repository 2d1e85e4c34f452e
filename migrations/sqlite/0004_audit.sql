-- The audit log: every change made through the API, who made it and from where.
-- Timestamps are Unix milliseconds.
--
-- `key_id` is the API key used (NULL for the admin key). It has no foreign key: keys may
-- be deleted later, and their entries must stay. The key's scope (account, org, project,
-- scope_path) is copied at the time of the change, all NULL for the admin key.
-- AUTOINCREMENT: ids are never reused, even after the newest entries are pruned, so a
-- page cursor (`id < before`) never skips a newer entry.
CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    key_id      BLOB CHECK (key_id IS NULL OR length(key_id) = 16),
    account     TEXT,
    org         TEXT,
    project     TEXT,
    scope_path  TEXT,
    method      TEXT NOT NULL,
    route       TEXT NOT NULL,
    path        TEXT NOT NULL,
    status      INTEGER NOT NULL CHECK (status BETWEEN 100 AND 599),
    remote      TEXT,
    -- The scope is all or nothing: an account and its path together, or neither.
    CHECK ((account IS NULL) = (scope_path IS NULL)),
    CHECK (account IS NOT NULL OR org IS NULL),
    CHECK (project IS NULL OR org IS NOT NULL)
) STRICT;
-- Pruning by age.
CREATE INDEX audit_log_at ON audit_log (at);
-- Listing within a scope, newest first.
CREATE INDEX audit_log_account ON audit_log (account, id DESC);
-- Listing one key's entries, newest first.
CREATE INDEX audit_log_key ON audit_log (key_id, id DESC);
