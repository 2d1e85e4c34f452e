-- The admin key generated on a fresh store's first start (when SWITCHBOARD_ADMIN_KEY is
-- not set): one row at most, its SHA-256 only. Every replica reads the same row, so the
-- key printed by the first manager to start works against all of them.
CREATE TABLE admin_key (
    id          smallint PRIMARY KEY CHECK (id = 1),
    secret_hash bytea NOT NULL CHECK (length(secret_hash) = 32),
    created_at  timestamptz NOT NULL
);
