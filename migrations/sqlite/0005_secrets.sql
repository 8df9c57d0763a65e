-- The server's secrets (the token-signing key, the built-in VPN's CA, server and tls-crypt
-- keys), kept in the database so that every server process on it uses the same ones.
CREATE TABLE secret (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
