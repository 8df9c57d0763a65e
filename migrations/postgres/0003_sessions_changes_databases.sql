-- Sessions: a login starts one, and every token of it names it. A refresh hands out the
-- session's next refresh token and retires the one it took; a retired one used again ends the
-- session (someone holds a copy). Ending a subject's sessions ends all of its tokens.
CREATE TABLE session (
    id      TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    refresh TEXT NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0,
    expires BIGINT NOT NULL
);

CREATE INDEX session_subject ON session (subject);
CREATE INDEX session_expires ON session (expires);

-- One counter of the changes that can change a run's peers, so that every server process on
-- the database learns of another's changes by reading one row.
CREATE TABLE change_counter (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n  BIGINT NOT NULL
);

INSERT INTO change_counter (id, n) VALUES (1, 0);

-- vantage6's word for a killed run.
UPDATE run SET status = 'killed by user' WHERE status = 'killed';

-- The databases a task asks its nodes for, in the order asked, each with its parameters (a
-- JSON object without its label: query, sheet_name, preprocessing), as vantage6 keeps them.
CREATE TABLE task_database (
    task_id    BIGINT NOT NULL REFERENCES task (id) ON DELETE CASCADE,
    position   INTEGER NOT NULL,
    label      TEXT NOT NULL,
    parameters TEXT,
    PRIMARY KEY (task_id, position)
);
