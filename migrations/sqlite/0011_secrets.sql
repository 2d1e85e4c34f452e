-- Secrets that tasks use (issue 19): the same table as PostgreSQL's 0012_secrets.sql; see
-- the comments there.
CREATE TABLE secrets (
    id          BLOB PRIMARY KEY CHECK (length(id) = 16),
    account     TEXT NOT NULL,
    org         TEXT,
    project     TEXT,
    scope_path  TEXT NOT NULL,
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    sealed      BLOB,
    reference   TEXT,
    version     INTEGER NOT NULL CHECK (version > 0),
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    CHECK (project IS NULL OR org IS NOT NULL),
    CHECK ((sealed IS NULL) <> (reference IS NULL)),
    UNIQUE (scope_path, name)
) STRICT;
CREATE INDEX secrets_account_name ON secrets (account, name);
