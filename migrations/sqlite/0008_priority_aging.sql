-- The queue's order with aging (issue 18): see migrations/postgres/0009_priority_aging.sql.
-- Here `created_at` is already Unix milliseconds, so the key is a generated column.
ALTER TABLE tasks ADD COLUMN queue_key INTEGER GENERATED ALWAYS AS (created_at - priority * 10000) VIRTUAL;
DROP INDEX tasks_queue;
CREATE INDEX tasks_queue ON tasks (account, queue_key, id) WHERE state = 'queued';
