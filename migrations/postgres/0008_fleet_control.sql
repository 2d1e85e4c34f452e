-- Fleet control (issue 17): pauses, draining, single-use instances and their JIT
-- credentials.
--
-- A pause is JSON ({"note": "...", "since": "...", "until": "..."}) on a group or an
-- instance; NULL when not paused. An expired pause is left in place and ignored (placement
-- compares `until` with its own clock), so nothing has to wake up to lift it.
ALTER TABLE delegate_groups ADD COLUMN pause jsonb;
ALTER TABLE delegate_instances
    ADD COLUMN pause jsonb,
    -- The delegate said it is stopping: it is offered nothing more.
    ADD COLUMN draining boolean NOT NULL DEFAULT false,
    -- How many tasks it takes in its life (NULL: no limit), and how many it was assigned;
    -- a claim is refused once they are equal, in the same transaction as the claim.
    ADD COLUMN max_tasks integer CHECK (max_tasks IS NULL OR max_tasks > 0),
    ADD COLUMN tasks_taken integer NOT NULL DEFAULT 0 CHECK (tasks_taken >= 0);

-- A JIT credential is a delegate token bound to one group, that registers one instance
-- (single-use) once, before it expires. `used_at` is set by the registration that uses it.
ALTER TABLE delegate_tokens
    ADD COLUMN jit_group uuid REFERENCES delegate_groups (id) ON DELETE CASCADE,
    ADD COLUMN expires_at timestamptz,
    ADD COLUMN used_at timestamptz,
    ADD CHECK ((jit_group IS NULL) = (expires_at IS NULL));
CREATE INDEX delegate_tokens_jit_expiry ON delegate_tokens (expires_at) WHERE jit_group IS NOT NULL;
-- The single-use instances, for the sweep that removes those done with their tasks.
CREATE INDEX delegate_instances_single_use ON delegate_instances (id) WHERE max_tasks IS NOT NULL;
