-- OAuth tokens shared by every node (`[store] tokens = "store"`): one row
-- per account, the token set sealed with ChaCha20-Poly1305 under the key
-- each node is given (APIMAIL_STORE_KEY_FILE), never in the clear.
-- `key_id` names that key (8 bytes of a SHA-256 of it) so that a node
-- with another key says so instead of "corrupt". Refreshes take the row
-- with SELECT ... FOR UPDATE: one refresh per account across the cluster.
CREATE TABLE apimail_tokens (
    account text PRIMARY KEY,
    key_id text NOT NULL,
    sealed bytea NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
