-- The public keys of the nodes the built-in WireGuard hub admits, one per node; a node's address
-- follows from its id, as with the built-in OpenVPN.
CREATE TABLE wireguard_peer (
    node_id    BIGINT PRIMARY KEY,
    public_key TEXT NOT NULL UNIQUE,
    updated_at TEXT NOT NULL
);
