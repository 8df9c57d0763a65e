-- The server's data: who takes part, what runs where, and which ports runs listen on.
CREATE TABLE organization (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);

CREATE TABLE collaboration (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);

CREATE TABLE member (
    collaboration_id INTEGER NOT NULL REFERENCES collaboration (id) ON DELETE CASCADE,
    organization_id  INTEGER NOT NULL REFERENCES organization (id) ON DELETE CASCADE,
    PRIMARY KEY (collaboration_id, organization_id)
);

-- One node per organization per collaboration; the API key is stored hashed (SHA-256 of a
-- 256-bit random key: a slow hash adds nothing for keys that cannot be guessed).
CREATE TABLE node (
    id               INTEGER PRIMARY KEY,
    name             TEXT NOT NULL,
    organization_id  INTEGER NOT NULL REFERENCES organization (id),
    collaboration_id INTEGER NOT NULL REFERENCES collaboration (id),
    api_key_hash     TEXT NOT NULL UNIQUE,
    ip               TEXT,
    UNIQUE (organization_id, collaboration_id)
);

CREATE TABLE task (
    id                   INTEGER PRIMARY KEY,
    name                 TEXT NOT NULL,
    image                TEXT NOT NULL,
    collaboration_id     INTEGER NOT NULL REFERENCES collaboration (id),
    parent_id            INTEGER REFERENCES task (id),
    init_organization_id INTEGER REFERENCES organization (id),
    created_at           TEXT NOT NULL
);

CREATE TABLE run (
    id              INTEGER PRIMARY KEY,
    task_id         INTEGER NOT NULL REFERENCES task (id) ON DELETE CASCADE,
    organization_id INTEGER NOT NULL REFERENCES organization (id),
    status          TEXT NOT NULL DEFAULT 'pending',
    input           TEXT,
    result          TEXT,
    log             TEXT,
    assigned_at     TEXT,
    finished_at     TEXT,
    UNIQUE (task_id, organization_id)
);

CREATE TABLE port (
    id     INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES run (id) ON DELETE CASCADE,
    port   INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
    label  TEXT
);

CREATE INDEX port_run ON port (run_id);
CREATE INDEX run_task ON run (task_id);
CREATE INDEX task_parent ON task (parent_id);
