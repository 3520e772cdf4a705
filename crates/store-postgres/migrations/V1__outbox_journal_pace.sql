-- The outbox: an entry's metadata (the fields of apimail_core's outbox
-- Entry) and its message, stored in bounded chunks.
CREATE TABLE apimail_messages (
    id bigserial PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE apimail_chunks (
    message bigint NOT NULL REFERENCES apimail_messages (id) ON DELETE CASCADE,
    seq integer NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (message, seq)
);

CREATE TABLE apimail_entries (
    id text PRIMARY KEY,
    message bigint NOT NULL UNIQUE REFERENCES apimail_messages (id),
    state text NOT NULL CHECK (state IN ('queued', 'held')),
    hold text CHECK (hold IN ('identity', 'login', 'uncertain')),
    account text,
    provider text,
    from_addr text NOT NULL,
    recipients text[] NOT NULL,
    message_id text NOT NULL,
    size bigint NOT NULL,
    created_at bigint NOT NULL,
    attempts integer NOT NULL,
    next_attempt_at bigint NOT NULL,
    last_error text,
    max_age_secs bigint NOT NULL,
    retried_at bigint,
    failed_reason text,
    identity jsonb,
    in_flight_since bigint,
    outcome_unknown boolean NOT NULL,
    retried_unknown boolean NOT NULL,
    notes jsonb NOT NULL,
    original_from text,
    -- The claim: who holds it, its fencing token, until when (the
    -- database's clock, so nodes' clocks need not agree).
    lease_node text,
    lease_token bigint,
    lease_until timestamptz
);

CREATE INDEX apimail_entries_due ON apimail_entries (next_attempt_at, id)
    WHERE failed_reason IS NULL AND state = 'queued';

-- The delivery journal: the fields of apimail_core's journal Record.
CREATE TABLE apimail_journal (
    seq bigserial PRIMARY KEY,
    time bigint NOT NULL,
    queue_id text,
    message_id text NOT NULL,
    account text,
    client text,
    smtp_user text,
    provider text,
    from_addr text NOT NULL,
    recipients text[] NOT NULL,
    subject text,
    size bigint NOT NULL,
    attempts integer NOT NULL,
    possible_duplicate boolean NOT NULL,
    outcome text NOT NULL,
    provider_id text,
    error text,
    original_from text
);

CREATE INDEX apimail_journal_time ON apimail_journal (time, seq);
CREATE INDEX apimail_journal_queue_id ON apimail_journal (queue_id);

-- Pacing per mailbox across every node: the earliest start of the next
-- delivery, and the deliveries under way (permits with a lease).
CREATE TABLE apimail_pace (
    mailbox text PRIMARY KEY,
    next_start timestamptz NOT NULL
);

CREATE TABLE apimail_pace_permits (
    token bigint PRIMARY KEY,
    mailbox text NOT NULL,
    node text NOT NULL,
    until timestamptz NOT NULL
);

CREATE INDEX apimail_pace_permits_mailbox ON apimail_pace_permits (mailbox);
