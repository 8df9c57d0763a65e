-- When a node last called the server (its token used), written at most every half minute per
-- node and server process: a node is online while this is recent.
ALTER TABLE node ADD COLUMN last_seen TEXT;
