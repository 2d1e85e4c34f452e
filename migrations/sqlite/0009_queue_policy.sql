-- Queue policy (issue 18): see migrations/postgres/0010_queue_policy.sql. Times are Unix
-- milliseconds, JSON is text.
ALTER TABLE tasks ADD COLUMN concurrency_key TEXT;
ALTER TABLE tasks ADD COLUMN policy TEXT;
ALTER TABLE tasks ADD COLUMN retry_at INTEGER;
ALTER TABLE tasks ADD COLUMN failure_code TEXT;
ALTER TABLE tasks ADD COLUMN failure_retryable INTEGER NOT NULL DEFAULT 1;
CREATE INDEX tasks_concurrency_held ON tasks (account, concurrency_key)
    WHERE concurrency_key IS NOT NULL AND state IN ('assigned', 'running');
CREATE INDEX tasks_concurrency_waiting ON tasks (account, concurrency_key)
    WHERE concurrency_key IS NOT NULL AND state = 'queued';

ALTER TABLE task_attempts ADD COLUMN failure TEXT;
ALTER TABLE task_attempts ADD COLUMN retry_at INTEGER;

CREATE TABLE scope_policies (
    account    TEXT    NOT NULL,
    org        TEXT    NOT NULL DEFAULT '',
    project    TEXT    NOT NULL DEFAULT '',
    weight     INTEGER CHECK (weight BETWEEN 1 AND 1000),
    retry      TEXT,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (account, org, project)
) STRICT;

-- The fair sweep's walk of the queue share by share (postgres 0010).
CREATE INDEX tasks_queue_shares ON tasks (account, ifnull(org, ''), ifnull(project, ''), queue_key, id)
    WHERE state = 'queued';
