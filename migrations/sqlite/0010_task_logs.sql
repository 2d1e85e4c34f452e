-- Task logs (issue 19): what a task's attempts printed, appended by their delegate. The
-- same tables as PostgreSQL's 0011_task_logs.sql; see the comments there.
CREATE TABLE task_logs (
    task_id    BLOB    NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    attempt    INTEGER NOT NULL CHECK (attempt > 0),
    "offset"   INTEGER NOT NULL CHECK ("offset" >= 0),
    text       TEXT    NOT NULL,
    bytes      INTEGER NOT NULL CHECK (bytes >= 0),
    head       INTEGER NOT NULL CHECK (head IN (0, 1)),
    cut_bytes  INTEGER,
    stored_at  INTEGER NOT NULL,
    PRIMARY KEY (task_id, attempt, "offset")
) STRICT, WITHOUT ROWID;

CREATE TABLE task_log_sizes (
    task_id  BLOB    PRIMARY KEY REFERENCES tasks (id) ON DELETE CASCADE,
    stored   INTEGER NOT NULL DEFAULT 0,
    received INTEGER NOT NULL DEFAULT 0,
    last_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX task_log_sizes_last_at ON task_log_sizes (last_at);
