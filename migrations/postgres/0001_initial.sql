-- Switchboard's schema on PostgreSQL.
--
-- Scopes are stored as their parts plus `scope_path` ('acct', 'acct/org', 'acct/org/proj'),
-- which carries the uniqueness constraints (NULL parts would make UNIQUE ineffective).
-- Sets of selectors, task types, capabilities and permissions are JSON arrays.

CREATE TABLE delegate_tokens (
    id           uuid PRIMARY KEY,
    account      text NOT NULL,
    org          text,
    project      text,
    scope_path   text NOT NULL,
    name         text NOT NULL,
    secret_hash  bytea NOT NULL UNIQUE CHECK (length(secret_hash) = 32),
    status       text NOT NULL CHECK (status IN ('active', 'revoked')),
    created_at   timestamptz NOT NULL,
    revoked_at   timestamptz,
    CHECK (project IS NULL OR org IS NOT NULL),
    CHECK ((status = 'revoked') = (revoked_at IS NOT NULL)),
    UNIQUE (account, name)
);

CREATE TABLE delegate_groups (
    id           uuid PRIMARY KEY,
    account      text NOT NULL,
    org          text,
    project      text,
    scope_path   text NOT NULL,
    name         text NOT NULL,
    tags         jsonb NOT NULL DEFAULT '[]',
    disabled     boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL,
    CHECK (project IS NULL OR org IS NOT NULL),
    UNIQUE (scope_path, name)
);
CREATE INDEX delegate_groups_account ON delegate_groups (account);

CREATE TABLE delegate_instances (
    id                 uuid PRIMARY KEY,
    group_id           uuid NOT NULL REFERENCES delegate_groups (id) ON DELETE CASCADE,
    token_id           uuid NOT NULL REFERENCES delegate_tokens (id),
    session_hash       bytea NOT NULL UNIQUE CHECK (length(session_hash) = 32),
    hostname           text NOT NULL,
    version            text NOT NULL,
    flavour            text NOT NULL CHECK (flavour IN ('full', 'minimal')),
    tags               jsonb NOT NULL DEFAULT '[]',
    task_types         jsonb NOT NULL DEFAULT '[]',
    capacity           integer NOT NULL CHECK (capacity > 0),
    -- Tasks assigned to or running on the instance; kept in step by every claim and
    -- release, and checked against capacity here as the last line of defence.
    active_tasks       integer NOT NULL DEFAULT 0 CHECK (active_tasks >= 0 AND active_tasks <= capacity),
    registered_at      timestamptz NOT NULL,
    last_heartbeat_at  timestamptz NOT NULL,
    connected          boolean NOT NULL DEFAULT false
);
CREATE INDEX delegate_instances_group ON delegate_instances (group_id);
CREATE INDEX delegate_instances_token ON delegate_instances (token_id);
CREATE INDEX delegate_instances_liveness ON delegate_instances (connected, last_heartbeat_at);

CREATE TABLE connectors (
    id           uuid PRIMARY KEY,
    account      text NOT NULL,
    org          text,
    project      text,
    scope_path   text NOT NULL,
    name         text NOT NULL,
    selectors    jsonb NOT NULL DEFAULT '[]',
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    CHECK (project IS NULL OR org IS NOT NULL),
    UNIQUE (scope_path, name)
);

CREATE TABLE connector_last_success (
    connector_id  uuid PRIMARY KEY REFERENCES connectors (id) ON DELETE CASCADE,
    -- No foreign keys to instances: the memory outlives a replaced instance, and the
    -- engine simply finds no match for a removed one.
    instance_id   uuid NOT NULL,
    group_id      uuid NOT NULL,
    succeeded_at  timestamptz NOT NULL
);

CREATE TABLE tasks (
    id                    uuid PRIMARY KEY,
    account               text NOT NULL,
    org                   text,
    project               text,
    scope_path            text NOT NULL,
    task_type             text NOT NULL,
    payload               jsonb NOT NULL,
    selectors             jsonb NOT NULL DEFAULT '[]',
    connector_id          uuid REFERENCES connectors (id) ON DELETE SET NULL,
    capabilities          jsonb NOT NULL DEFAULT '[]',
    priority              integer NOT NULL DEFAULT 0 CHECK (priority BETWEEN -1000 AND 1000),
    assign_timeout_ms     bigint NOT NULL CHECK (assign_timeout_ms > 0),
    execution_timeout_ms  bigint NOT NULL CHECK (execution_timeout_ms > 0),
    max_attempts          integer NOT NULL CHECK (max_attempts >= 1),
    wait_for_delegate     boolean NOT NULL DEFAULT false,
    idempotency_key       text,
    idempotency_fingerprint text,
    state                 text NOT NULL CHECK (state IN
                            ('queued', 'assigned', 'running', 'succeeded', 'failed', 'cancelled', 'expired', 'timed_out')),
    attempt               integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    runs                  integer NOT NULL DEFAULT 0 CHECK (runs >= 0),
    -- Set exactly while the task holds a slot of an instance. Not a foreign key: the
    -- attempt history must survive the removal of an instance.
    instance_id           uuid,
    failure_reason        text CHECK (failure_reason IN
                            ('no_eligible_delegate', 'validation_failed', 'delegate_lost', 'task_error')),
    failure_detail        text,
    result                jsonb,
    progress              jsonb,
    created_at            timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL,
    assigned_at           timestamptz,
    started_at            timestamptz,
    finished_at           timestamptz,
    CHECK (project IS NULL OR org IS NOT NULL),
    CHECK ((state IN ('assigned', 'running')) = (instance_id IS NOT NULL)),
    CHECK ((idempotency_key IS NULL) = (idempotency_fingerprint IS NULL)),
    UNIQUE (account, idempotency_key)
);
-- The queue: queued tasks by account, highest priority first, then oldest.
CREATE INDEX tasks_queue ON tasks (account, priority DESC, created_at) WHERE state = 'queued';
-- What each instance holds (release on loss, acknowledge timeouts).
CREATE INDEX tasks_by_instance ON tasks (instance_id) WHERE instance_id IS NOT NULL;
-- Listings, newest first (ids are time-ordered UUIDv7).
CREATE INDEX tasks_by_account ON tasks (account, id DESC);
CREATE INDEX tasks_by_state ON tasks (state, id DESC);

CREATE TABLE task_attempts (
    task_id      uuid NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    attempt      integer NOT NULL CHECK (attempt >= 1),
    instance_id  uuid NOT NULL,
    assigned_at  timestamptz NOT NULL,
    acquired_at  timestamptz,
    ended_at     timestamptz,
    outcome      text CHECK (outcome IN
                   ('queued', 'succeeded', 'failed', 'cancelled', 'expired', 'timed_out')),
    PRIMARY KEY (task_id, attempt)
);

CREATE TABLE capability_results (
    instance_id  uuid NOT NULL REFERENCES delegate_instances (id) ON DELETE CASCADE,
    basis        text NOT NULL,
    reachable    boolean NOT NULL,
    detail       text NOT NULL,
    checked_at   timestamptz NOT NULL,
    PRIMARY KEY (instance_id, basis)
);

CREATE TABLE selection_log (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id   uuid NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    attempt   integer NOT NULL CHECK (attempt >= 0),
    at        timestamptz NOT NULL,
    kind      text NOT NULL CHECK (kind IN ('decision', 'assigned', 'validation', 'requeued', 'ended')),
    summary   text NOT NULL,
    detail    jsonb NOT NULL
);
CREATE INDEX selection_log_task ON selection_log (task_id, id);
CREATE INDEX selection_log_at ON selection_log (at);

CREATE TABLE api_keys (
    id           uuid PRIMARY KEY,
    account      text NOT NULL,
    org          text,
    project      text,
    scope_path   text NOT NULL,
    name         text NOT NULL,
    secret_hash  bytea NOT NULL UNIQUE CHECK (length(secret_hash) = 32),
    permissions  jsonb NOT NULL,
    created_at   timestamptz NOT NULL,
    revoked_at   timestamptz,
    CHECK (project IS NULL OR org IS NOT NULL)
);
CREATE INDEX api_keys_account ON api_keys (account);
