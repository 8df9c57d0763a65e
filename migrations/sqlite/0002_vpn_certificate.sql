-- Client certificates of the built-in VPN: one live certificate per node; replaced or removed
-- ones are revoked and listed in the CRL the OpenVPN server checks.
CREATE TABLE vpn_certificate (
    serial     TEXT PRIMARY KEY,
    node_id    INTEGER NOT NULL,
    issued_at  TEXT NOT NULL,
    revoked_at TEXT
);

CREATE INDEX vpn_certificate_node ON vpn_certificate (node_id);
