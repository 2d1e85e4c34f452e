-- The queue's order with aging (issue 18): a waiting task's priority rises by one every
-- 10 s it waits, so the queue is ordered by `queue_key` = created_at in Unix milliseconds
-- minus priority times 10,000 (switchboard_domain::task::queue_key), smallest first. The
-- key does not change while a task waits (every waiting task ages alike), so the order
-- is an index rather than a computation over the queue.
ALTER TABLE tasks ADD COLUMN queue_key bigint;
UPDATE tasks SET queue_key = (extract(epoch FROM created_at) * 1000)::bigint - priority::bigint * 10000;
ALTER TABLE tasks ALTER COLUMN queue_key SET NOT NULL;
DROP INDEX tasks_queue;
CREATE INDEX tasks_queue ON tasks (account, queue_key, id) WHERE state = 'queued';
