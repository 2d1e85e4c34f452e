-- The audit log: every change made through the API, who made it and from where.
--
-- `key_id` is the API key used (NULL for the admin key). It has no foreign key: keys may
-- be deleted later, and their entries must stay. The key's scope (account, org, project,
-- scope_path) is copied at the time of the change, all NULL for the admin key.
CREATE TABLE audit_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL,
    actor       text NOT NULL,
    key_id      uuid,
    account     text,
    org         text,
    project     text,
    scope_path  text,
    method      text NOT NULL,
    route       text NOT NULL,
    path        text NOT NULL,
    status      integer NOT NULL CHECK (status BETWEEN 100 AND 599),
    remote      text,
    -- The scope is all or nothing: an account and its path together, or neither.
    CHECK ((account IS NULL) = (scope_path IS NULL)),
    CHECK (account IS NOT NULL OR org IS NULL),
    CHECK (project IS NULL OR org IS NOT NULL)
);
-- Pruning by age.
CREATE INDEX audit_log_at ON audit_log (at);
-- Listing within a scope, newest first.
CREATE INDEX audit_log_account ON audit_log (account, id DESC);
-- Listing one key's entries, newest first.
CREATE INDEX audit_log_key ON audit_log (key_id, id DESC);
