-- The nodes that opened the store, each with its clock's offset from the
-- database's when last seen: `apimail doctor` warns of a skewed clock.
CREATE TABLE apimail_nodes (
    node text PRIMARY KEY,
    -- When the node was last seen, by the database's clock.
    seen_at timestamptz NOT NULL,
    -- The node's clock at that moment, in Unix seconds.
    node_clock double precision NOT NULL,
    -- node_clock minus the database's clock, in seconds (positive: ahead).
    offset_secs double precision NOT NULL
);
