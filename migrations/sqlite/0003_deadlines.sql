-- The task timers as columns, so the sweep finds what is due through an index instead of
-- computing every task's deadline. Unix milliseconds.
--
-- `assign_deadline`: when a queued task expires (created_at + assign timeout). Fixed at
-- insert, since neither term ever changes. The DEFAULT only lets ADD COLUMN fill the
-- existing rows, which the UPDATE then sets; every insert writes the real value.
-- `run_deadline`: when a running task times out. Set on acquire to acquire time +
-- execution timeout, pushed forward by heartbeats that list the task, and cleared when
-- the task stops running.
ALTER TABLE tasks ADD COLUMN assign_deadline INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN run_deadline INTEGER;
UPDATE tasks SET assign_deadline = created_at + assign_timeout_ms;
-- Tasks already running get a full execution timeout from when they started (no
-- heartbeat has been recorded against them yet).
UPDATE tasks SET run_deadline = COALESCE(started_at, updated_at) + execution_timeout_ms WHERE state = 'running';

-- "run_deadline is set exactly while running". SQLite cannot add a CHECK to an existing
-- table (only by rebuilding it, whose DROP would cascade to the attempts and the
-- selection log), so two triggers enforce it instead, with the same effect: the
-- offending statement fails and changes nothing.
CREATE TRIGGER tasks_run_deadline_while_running_insert BEFORE INSERT ON tasks
    WHEN (NEW.state = 'running') <> (NEW.run_deadline IS NOT NULL)
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: tasks_run_deadline_while_running');
END;
CREATE TRIGGER tasks_run_deadline_while_running_update BEFORE UPDATE OF state, run_deadline ON tasks
    WHEN (NEW.state = 'running') <> (NEW.run_deadline IS NOT NULL)
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: tasks_run_deadline_while_running');
END;

-- One partial index per timer, each holding only the tasks in the state it applies to,
-- in the order they fall due (id breaks ties, for a stable order). Queries must name the
-- state as a literal for SQLite to use them.
CREATE INDEX tasks_assign_due ON tasks (assign_deadline, id) WHERE state = 'queued';
CREATE INDEX tasks_acknowledge_due ON tasks (assigned_at, id) WHERE state = 'assigned';
CREATE INDEX tasks_run_due ON tasks (run_deadline, id) WHERE state = 'running';
