-- Task logs (issue 19): what a task's attempts printed, appended by their delegate.
--
-- A chunk's position (attempt, byte offset in that attempt's output) is its identity, so
-- a retried append is kept once. `head` marks the chunks of the first half of the bound,
-- never cut; `cut_bytes` is set on the one marker row that stands where the tail was cut
-- (its `text` is empty). See switchboard_domain::tasklog.
CREATE TABLE task_logs (
    task_id    uuid        NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    attempt    integer     NOT NULL CHECK (attempt > 0),
    "offset"   bigint      NOT NULL CHECK ("offset" >= 0),
    text       text        NOT NULL,
    bytes      integer     NOT NULL CHECK (bytes >= 0),
    head       boolean     NOT NULL,
    cut_bytes  bigint,
    stored_at  timestamptz NOT NULL,
    PRIMARY KEY (task_id, attempt, "offset")
);

-- One row per task with a log: what it holds and has had cut, and when it last grew. The
-- append locks it, so appends to one task's log take turns (the bound is kept exactly);
-- the retention sweep finds old logs by `last_at`.
CREATE TABLE task_log_sizes (
    task_id  uuid        PRIMARY KEY REFERENCES tasks (id) ON DELETE CASCADE,
    stored   bigint      NOT NULL DEFAULT 0,
    received bigint      NOT NULL DEFAULT 0,
    last_at  timestamptz NOT NULL
);
CREATE INDEX task_log_sizes_last_at ON task_log_sizes (last_at);
