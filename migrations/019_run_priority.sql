-- A run's River priority (db.SubmitParams.Priority, agent.WithPriority) is
-- kept on the run, so that every job the run gets after its first one —
-- from the answer to its last open tool call, from a rescue — has it too.
-- Those jobs used to take River's default, 2.
--
-- A constant default makes the new column a change of the catalog only:
-- no table rewrite. The runs not finished yet take the priority of their
-- first job that River still holds (later ones may have lost it).
ALTER TABLE kern_run ADD COLUMN priority smallint NOT NULL DEFAULT 2;

UPDATE kern_run r SET priority = j.priority
FROM (
    SELECT DISTINCT ON (args->>'run_id') args->>'run_id' AS run_id, priority
    FROM river_job WHERE kind = 'kern_run'
    ORDER BY args->>'run_id', id
) j
WHERE r.id = j.run_id AND r.status IN ('pending', 'running', 'waiting') AND r.priority <> j.priority;

---- create above / drop below ----

ALTER TABLE kern_run DROP COLUMN priority;
