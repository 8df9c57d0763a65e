-- vantage6's resource fields. The administrator is user 1 of organization `root`, which the
-- first start creates, as vantage6's does.
ALTER TABLE organization ADD COLUMN domain TEXT;
ALTER TABLE organization ADD COLUMN address1 TEXT;
ALTER TABLE organization ADD COLUMN address2 TEXT;
ALTER TABLE organization ADD COLUMN zipcode TEXT;
ALTER TABLE organization ADD COLUMN country TEXT;
INSERT INTO organization (name) SELECT 'root'
WHERE NOT EXISTS (SELECT 1 FROM organization WHERE name = 'root');

ALTER TABLE task ADD COLUMN description TEXT NOT NULL DEFAULT '';
-- The job: the id shared by a task created by a user and every task below it.
ALTER TABLE task ADD COLUMN job_id INTEGER;
ALTER TABLE task ADD COLUMN init_user_id INTEGER;
WITH RECURSIVE family (id, root) AS (
    SELECT id, id FROM task WHERE parent_id IS NULL
    UNION ALL
    SELECT task.id, family.root FROM task JOIN family ON task.parent_id = family.id
)
UPDATE task SET job_id = (SELECT root FROM family WHERE family.id = task.id);
CREATE INDEX task_job ON task (job_id);

ALTER TABLE run ADD COLUMN started_at TEXT;
