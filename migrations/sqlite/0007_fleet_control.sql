-- Fleet control (issue 17): pauses, draining, single-use instances and their JIT
-- credentials. See migrations/postgres/0008_fleet_control.sql for what each column means.
ALTER TABLE delegate_groups ADD COLUMN pause TEXT CHECK (pause IS NULL OR json_valid(pause));
ALTER TABLE delegate_instances ADD COLUMN pause TEXT CHECK (pause IS NULL OR json_valid(pause));
ALTER TABLE delegate_instances ADD COLUMN draining INTEGER NOT NULL DEFAULT 0 CHECK (draining IN (0, 1));
ALTER TABLE delegate_instances ADD COLUMN max_tasks INTEGER CHECK (max_tasks IS NULL OR max_tasks > 0);
ALTER TABLE delegate_instances ADD COLUMN tasks_taken INTEGER NOT NULL DEFAULT 0 CHECK (tasks_taken >= 0);
ALTER TABLE delegate_tokens ADD COLUMN jit_group BLOB REFERENCES delegate_groups (id) ON DELETE CASCADE;
ALTER TABLE delegate_tokens ADD COLUMN expires_at INTEGER;
ALTER TABLE delegate_tokens ADD COLUMN used_at INTEGER;
CREATE INDEX delegate_tokens_jit_expiry ON delegate_tokens (expires_at) WHERE jit_group IS NOT NULL;
-- The single-use instances, for the sweep that removes those done with their tasks.
CREATE INDEX delegate_instances_single_use ON delegate_instances (id) WHERE max_tasks IS NOT NULL;
