-- When a group last had an instance: the sweep removes groups that have been empty for
-- longer than the retention setting (7 days by default). Unix milliseconds.
ALTER TABLE delegate_groups ADD COLUMN last_instance_at INTEGER NOT NULL DEFAULT 0;
UPDATE delegate_groups SET last_instance_at = created_at;

-- The sweep looks for instances silent since before a cutoff.
CREATE INDEX delegate_instances_heartbeat ON delegate_instances (last_heartbeat_at);
