-- When a group last had an instance: the sweep removes groups that have been empty for
-- longer than the retention setting (7 days by default).
ALTER TABLE delegate_groups ADD COLUMN last_instance_at timestamptz;
UPDATE delegate_groups SET last_instance_at = created_at;
ALTER TABLE delegate_groups ALTER COLUMN last_instance_at SET NOT NULL;

-- The sweep looks for instances silent since before a cutoff.
CREATE INDEX delegate_instances_heartbeat ON delegate_instances (last_heartbeat_at);
