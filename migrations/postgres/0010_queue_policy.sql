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
