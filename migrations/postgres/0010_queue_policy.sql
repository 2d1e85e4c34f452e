-- Queue policy (issue 18): concurrency keys and retry policies.
--
-- `policy` holds what a task says about both (switchboard_store::columns::StoredPolicy);
-- `concurrency_key` repeats its key, which the store's claim counts by. `retry_at` is set
-- while a task waits for a retry's backoff. A failure may carry the delegate's code and
-- its word that a retry cannot help; an attempt keeps why it ended and when the next was
-- due.
ALTER TABLE tasks
    ADD COLUMN concurrency_key   text,
    ADD COLUMN policy            jsonb,
    ADD COLUMN retry_at          timestamptz,
    ADD COLUMN failure_code      text,
    ADD COLUMN failure_retryable boolean NOT NULL DEFAULT true;
-- What the claim counts under the key's lock: the key's tasks holding an instance.
CREATE INDEX tasks_concurrency_held ON tasks (account, concurrency_key)
    WHERE concurrency_key IS NOT NULL AND state IN ('assigned', 'running');
-- The key's waiting tasks (cancel_older, the queue summary).
CREATE INDEX tasks_concurrency_waiting ON tasks (account, concurrency_key)
    WHERE concurrency_key IS NOT NULL AND state = 'queued';

ALTER TABLE task_attempts
    ADD COLUMN failure  jsonb,
    ADD COLUMN retry_at timestamptz;

-- Operators' defaults per scope: the weight of its fair share and the retry policy of
-- its tasks that name none. '' stands for "no org" / "no project", so that the primary
-- key holds one row per scope.
CREATE TABLE scope_policies (
    account    text        NOT NULL,
    org        text        NOT NULL DEFAULT '',
    project    text        NOT NULL DEFAULT '',
    weight     integer     CHECK (weight BETWEEN 1 AND 1000),
    retry      jsonb,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (account, org, project)
);

-- The fair sweep walks the queue share by share (each account, org and project with
-- tasks of its own), by bytes (COLLATE "C", as the store compares), and reads the head
-- of each: one probe per share, however many tasks it holds.
CREATE INDEX tasks_queue_shares ON tasks (
    (account COLLATE "C"), (coalesce(org, '') COLLATE "C"), (coalesce(project, '') COLLATE "C"), queue_key, id
) WHERE state = 'queued';
