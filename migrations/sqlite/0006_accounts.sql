-- User accounts besides the administrator of the configuration, who is user 1: ids start at 2.
-- Passwords are stored as PBKDF2 hashes.
CREATE TABLE account (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    username        TEXT NOT NULL UNIQUE,
    organization_id INTEGER NOT NULL REFERENCES organization (id),
    password_hash   TEXT NOT NULL,
    firstname       TEXT,
    lastname        TEXT,
    email           TEXT
);

INSERT INTO sqlite_sequence (name, seq) VALUES ('account', 1);
