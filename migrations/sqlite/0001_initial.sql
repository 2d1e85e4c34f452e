-- Switchboard's schema on SQLite: the same tables, constraints and indexes as
-- migrations/postgres/0001_initial.sql, in SQLite's types.
--
-- Type mapping (the Rust side converts; see crates/store-sqlite/src/rows.rs):
--   uuid        -> BLOB, the 16 bytes of the UUID. Ids are UUIDv7, so byte order is time
--                  order and "newest first" can still sort by id.
--   timestamptz -> INTEGER, Unix milliseconds. Integers compare and sort exactly, which
--                  text timestamps in mixed formats would not.
--   jsonb       -> TEXT holding JSON.
--   bytea       -> BLOB.
--   boolean     -> INTEGER, 0 or 1 (checked).
--
-- Tables are STRICT, so a value of the wrong type is refused rather than silently stored
-- (SQLite's default type affinity would accept a string in an INTEGER column).
--
-- Scopes are stored as their parts plus `scope_path` ('acct', 'acct/org', 'acct/org/proj'),
-- which carries the uniqueness constraints (NULL parts would make UNIQUE ineffective).
-- Sets of selectors, task types, capabilities and permissions are JSON arrays.

CREATE TABLE delegate_tokens (
    id           BLOB PRIMARY KEY CHECK (length(id) = 16),
    account      TEXT NOT NULL,
    org          TEXT,
    project      TEXT,
    scope_path   TEXT NOT NULL,
    name         TEXT NOT NULL,
    secret_hash  BLOB NOT NULL UNIQUE CHECK (length(secret_hash) = 32),
    status       TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
    created_at   INTEGER NOT NULL,
    revoked_at   INTEGER,
    CHECK (project IS NULL OR org IS NOT NULL),
    CHECK ((status = 'revoked') = (revoked_at IS NOT NULL)),
    UNIQUE (account, name)
) STRICT;

CREATE TABLE delegate_groups (
    id           BLOB PRIMARY KEY CHECK (length(id) = 16),
    account      TEXT NOT NULL,
    org          TEXT,
    project      TEXT,
    scope_path   TEXT NOT NULL,
    name         TEXT NOT NULL,
    tags         TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(tags)),
    disabled     INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    created_at   INTEGER NOT NULL,
    CHECK (project IS NULL OR org IS NOT NULL),
    UNIQUE (scope_path, name)
) STRICT;
CREATE INDEX delegate_groups_account ON delegate_groups (account);

CREATE TABLE delegate_instances (
    id                 BLOB PRIMARY KEY CHECK (length(id) = 16),
    group_id           BLOB NOT NULL REFERENCES delegate_groups (id) ON DELETE CASCADE,
    token_id           BLOB NOT NULL REFERENCES delegate_tokens (id),
    session_hash       BLOB NOT NULL UNIQUE CHECK (length(session_hash) = 32),
    hostname           TEXT NOT NULL,
    version            TEXT NOT NULL,
    flavour            TEXT NOT NULL CHECK (flavour IN ('full', 'minimal')),
    tags               TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(tags)),
    task_types         TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(task_types)),
    capacity           INTEGER NOT NULL CHECK (capacity > 0),
    -- Tasks assigned to or running on the instance; kept in step by every claim and
    -- release, and checked against capacity here as the last line of defence.
    active_tasks       INTEGER NOT NULL DEFAULT 0 CHECK (active_tasks >= 0 AND active_tasks <= capacity),
    registered_at      INTEGER NOT NULL,
    last_heartbeat_at  INTEGER NOT NULL,
    connected          INTEGER NOT NULL DEFAULT 0 CHECK (connected IN (0, 1))
) STRICT;
CREATE INDEX delegate_instances_group ON delegate_instances (group_id);
CREATE INDEX delegate_instances_token ON delegate_instances (token_id);
CREATE INDEX delegate_instances_liveness ON delegate_instances (connected, last_heartbeat_at);

CREATE TABLE connectors (
    id           BLOB PRIMARY KEY CHECK (length(id) = 16),
    account      TEXT NOT NULL,
    org          TEXT,
    project      TEXT,
    scope_path   TEXT NOT NULL,
    name         TEXT NOT NULL,
    selectors    TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(selectors)),
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    CHECK (project IS NULL OR org IS NOT NULL),
    UNIQUE (scope_path, name)
) STRICT;

CREATE TABLE connector_last_success (
    connector_id  BLOB PRIMARY KEY REFERENCES connectors (id) ON DELETE CASCADE,
    -- No foreign keys to instances: the memory outlives a replaced instance, and the
    -- engine simply finds no match for a removed one.
    instance_id   BLOB NOT NULL,
    group_id      BLOB NOT NULL,
    succeeded_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE tasks (
    id                    BLOB PRIMARY KEY CHECK (length(id) = 16),
    account               TEXT NOT NULL,
    org                   TEXT,
    project               TEXT,
    scope_path            TEXT NOT NULL,
    task_type             TEXT NOT NULL,
    payload               TEXT NOT NULL CHECK (json_valid(payload)),
    selectors             TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(selectors)),
    connector_id          BLOB REFERENCES connectors (id) ON DELETE SET NULL,
    capabilities          TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(capabilities)),
    priority              INTEGER NOT NULL DEFAULT 0 CHECK (priority BETWEEN -1000 AND 1000),
    assign_timeout_ms     INTEGER NOT NULL CHECK (assign_timeout_ms > 0),
    execution_timeout_ms  INTEGER NOT NULL CHECK (execution_timeout_ms > 0),
    max_attempts          INTEGER NOT NULL CHECK (max_attempts >= 1),
    wait_for_delegate     INTEGER NOT NULL DEFAULT 0 CHECK (wait_for_delegate IN (0, 1)),
    idempotency_key       TEXT,
    idempotency_fingerprint TEXT,
    state                 TEXT NOT NULL CHECK (state IN
                            ('queued', 'assigned', 'running', 'succeeded', 'failed', 'cancelled', 'expired', 'timed_out')),
    attempt               INTEGER NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    runs                  INTEGER NOT NULL DEFAULT 0 CHECK (runs >= 0),
    -- Set exactly while the task holds a slot of an instance. Not a foreign key: the
    -- attempt history must survive the removal of an instance.
    instance_id           BLOB,
    failure_reason        TEXT CHECK (failure_reason IN
                            ('no_eligible_delegate', 'validation_failed', 'delegate_lost', 'task_error')),
    failure_detail        TEXT,
    result                TEXT CHECK (json_valid(result)),
    progress              TEXT CHECK (json_valid(progress)),
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL,
    assigned_at           INTEGER,
    started_at            INTEGER,
    finished_at           INTEGER,
    CHECK (project IS NULL OR org IS NOT NULL),
    CHECK ((state IN ('assigned', 'running')) = (instance_id IS NOT NULL)),
    CHECK ((idempotency_key IS NULL) = (idempotency_fingerprint IS NULL)),
    UNIQUE (account, idempotency_key)
) STRICT;
-- The queue: queued tasks by account, highest priority first, then oldest.
CREATE INDEX tasks_queue ON tasks (account, priority DESC, created_at) WHERE state = 'queued';
-- What each instance holds (release on loss, acknowledge timeouts).
CREATE INDEX tasks_by_instance ON tasks (instance_id) WHERE instance_id IS NOT NULL;
-- Listings, newest first (ids are time-ordered UUIDv7).
CREATE INDEX tasks_by_account ON tasks (account, id DESC);
CREATE INDEX tasks_by_state ON tasks (state, id DESC);

CREATE TABLE task_attempts (
    task_id      BLOB NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    attempt      INTEGER NOT NULL CHECK (attempt >= 1),
    instance_id  BLOB NOT NULL,
    assigned_at  INTEGER NOT NULL,
    acquired_at  INTEGER,
    ended_at     INTEGER,
    outcome      TEXT CHECK (outcome IN
                   ('queued', 'succeeded', 'failed', 'cancelled', 'expired', 'timed_out')),
    PRIMARY KEY (task_id, attempt)
) STRICT;

CREATE TABLE capability_results (
    instance_id  BLOB NOT NULL REFERENCES delegate_instances (id) ON DELETE CASCADE,
    basis        TEXT NOT NULL,
    reachable    INTEGER NOT NULL CHECK (reachable IN (0, 1)),
    detail       TEXT NOT NULL,
    checked_at   INTEGER NOT NULL,
    PRIMARY KEY (instance_id, basis)
) STRICT;

CREATE TABLE selection_log (
    -- AUTOINCREMENT, like an identity column, never reuses the id of a pruned entry, so
    -- ids stay in insertion order across pruning.
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id   BLOB NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    attempt   INTEGER NOT NULL CHECK (attempt >= 0),
    at        INTEGER NOT NULL,
    kind      TEXT NOT NULL CHECK (kind IN ('decision', 'assigned', 'validation', 'requeued', 'ended')),
    summary   TEXT NOT NULL,
    detail    TEXT NOT NULL CHECK (json_valid(detail))
) STRICT;
CREATE INDEX selection_log_task ON selection_log (task_id, id);
CREATE INDEX selection_log_at ON selection_log (at);

CREATE TABLE api_keys (
    id           BLOB PRIMARY KEY CHECK (length(id) = 16),
    account      TEXT NOT NULL,
    org          TEXT,
    project      TEXT,
    scope_path   TEXT NOT NULL,
    name         TEXT NOT NULL,
    secret_hash  BLOB NOT NULL UNIQUE CHECK (length(secret_hash) = 32),
    permissions  TEXT NOT NULL CHECK (json_valid(permissions)),
    created_at   INTEGER NOT NULL,
    revoked_at   INTEGER,
    CHECK (project IS NULL OR org IS NOT NULL)
) STRICT;
CREATE INDEX api_keys_account ON api_keys (account);
