-- Encrypted collaborations: each organization's public key (base64 of its PEM, as vantage6
-- keeps it; empty until the organization uploads one), and whether a collaboration's inputs
-- and results are encrypted for their organizations.
ALTER TABLE organization ADD COLUMN public_key TEXT NOT NULL DEFAULT '';
ALTER TABLE collaboration ADD COLUMN encrypted INTEGER NOT NULL DEFAULT 0;
