-- Secrets that tasks use (issue 19): named in a scope, unique by name in it. Exactly one
-- of `sealed` (the value, AES-256-GCM under the manager's key: key id, nonce, ciphertext
-- and tag; never the clear text) and `reference` (where the delegate finds the value).
CREATE TABLE secrets (
    id          uuid PRIMARY KEY,
    account     text NOT NULL,
    org         text,
    project     text,
    scope_path  text NOT NULL,
    name        text NOT NULL,
    description text NOT NULL DEFAULT '',
    sealed      bytea,
    reference   text,
    version     integer NOT NULL CHECK (version > 0),
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    CHECK (project IS NULL OR org IS NOT NULL),
    CHECK ((sealed IS NULL) <> (reference IS NULL)),
    UNIQUE (scope_path, name)
);
-- Resolving a task's names: the secrets of its account with those names.
CREATE INDEX secrets_account_name ON secrets (account, name);
