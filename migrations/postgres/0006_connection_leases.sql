-- A connection counts only while the manager that recorded it is alive (issue 14, item 4).
--
-- Each manager (replica) holds a lease it renews every few seconds. An instance records
-- the manager holding its socket; it reads as connected only while that manager's lease
-- has not expired, so the connections of a manager that crashed stop counting within one
-- lease, for placement, the API and the metrics alike (they all read the same expression).
-- Renewals also clear the connections of managers whose lease lapsed and delete those
-- leases. Times are the database's own clock (now()), so replicas' clocks need not agree.
CREATE TABLE manager_leases (
    id         uuid PRIMARY KEY,
    expires_at timestamptz NOT NULL
);

ALTER TABLE delegate_instances ADD COLUMN connected_via uuid;
-- The boolean `connected` it replaces stays for one release, unread by this one: a replica
-- of the previous release, still running during a rolling upgrade, reads and writes it
-- (migrations only ever add, docs/operations.md). A later migration drops it.
CREATE INDEX delegate_instances_connected_via ON delegate_instances (connected_via)
    WHERE connected_via IS NOT NULL;
