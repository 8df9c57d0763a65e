-- A VPN address belongs to one node at a time. Addresses two nodes held before this check are
-- cleared; each node registers its address again when its tunnel next connects.
UPDATE node SET ip = NULL
WHERE ip IN (SELECT ip FROM node WHERE ip IS NOT NULL GROUP BY ip HAVING count(*) > 1);

CREATE UNIQUE INDEX node_ip ON node (ip);
