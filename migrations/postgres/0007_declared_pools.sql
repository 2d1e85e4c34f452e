-- A delegate group declared by an operator ahead of any instance (issue 17): what its
-- instances will run and how far it may grow, as JSON ({"task_types": [...],
-- "max_instances": n}). NULL for a group that registration created. A declared group is
-- never removed for being empty.
ALTER TABLE delegate_groups ADD COLUMN declaration jsonb;
