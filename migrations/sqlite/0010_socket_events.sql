-- The socket.io events a server process sent to its own clients, kept briefly so that every
-- other process on the database sends them to its clients too (replicas).
CREATE TABLE socket_event (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    origin BIGINT NOT NULL,
    room   TEXT NOT NULL,
    name   TEXT NOT NULL,
    data   TEXT NOT NULL,
    at     BIGINT NOT NULL
);

CREATE INDEX socket_event_at ON socket_event (at);
