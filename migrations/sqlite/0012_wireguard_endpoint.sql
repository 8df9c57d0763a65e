-- Where each admitted node's WireGuard packets last came from: a restarted hub shakes hands
-- with its nodes there instead of waiting for them.
ALTER TABLE wireguard_peer ADD COLUMN endpoint TEXT;
