-- The task timers as columns, so the sweep finds what is due through an index instead of
-- computing every task's deadline.
--
-- `assign_deadline`: when a queued task expires (created_at + assign timeout). Fixed at
-- insert, since neither term ever changes.
-- `run_deadline`: when a running task times out. Set on acquire to acquire time +
-- execution timeout, pushed forward by heartbeats that list the task, and cleared when
-- the task stops running.
ALTER TABLE tasks ADD COLUMN assign_deadline timestamptz;
ALTER TABLE tasks ADD COLUMN run_deadline timestamptz;
UPDATE tasks SET assign_deadline = created_at + assign_timeout_ms * interval '1 millisecond';
-- Tasks already running get a full execution timeout from when they started (no
-- heartbeat has been recorded against them yet).
UPDATE tasks SET run_deadline = COALESCE(started_at, updated_at) + execution_timeout_ms * interval '1 millisecond'
    WHERE state = 'running';
ALTER TABLE tasks ALTER COLUMN assign_deadline SET NOT NULL;
ALTER TABLE tasks ADD CONSTRAINT tasks_run_deadline_while_running
    CHECK ((state = 'running') = (run_deadline IS NOT NULL));

-- One partial index per timer, each holding only the tasks in the state it applies to,
-- in the order they fall due (id breaks ties, for a stable order).
CREATE INDEX tasks_assign_due ON tasks (assign_deadline, id) WHERE state = 'queued';
CREATE INDEX tasks_acknowledge_due ON tasks (assigned_at, id) WHERE state = 'assigned';
CREATE INDEX tasks_run_due ON tasks (run_deadline, id) WHERE state = 'running';
