-- The admin key generated on a fresh store's first start (when SWITCHBOARD_ADMIN_KEY is
-- not set): one row at most, its SHA-256 only. Timestamps are Unix milliseconds.
CREATE TABLE admin_key (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    secret_hash BLOB NOT NULL CHECK (length(secret_hash) = 32),
    created_at  INTEGER NOT NULL
) STRICT;
