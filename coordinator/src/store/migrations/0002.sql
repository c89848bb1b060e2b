CREATE TABLE enroll_tokens (id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, version INTEGER NOT NULL,
ukey TEXT UNIQUE, name TEXT, keyword TEXT, state TEXT, account_id INTEGER, domain_id INTEGER,
zone_id INTEGER, host_id INTEGER, parent_id INTEGER, ref_id INTEGER, k1 TEXT,
created INTEGER NOT NULL, data TEXT NOT NULL);
CREATE INDEX enroll_tokens_name ON enroll_tokens(name);
CREATE INDEX enroll_tokens_state ON enroll_tokens(state);
CREATE INDEX enroll_tokens_account ON enroll_tokens(account_id);
CREATE INDEX enroll_tokens_domain ON enroll_tokens(domain_id);
CREATE INDEX enroll_tokens_zone ON enroll_tokens(zone_id);
CREATE INDEX enroll_tokens_host ON enroll_tokens(host_id);
CREATE INDEX enroll_tokens_parent ON enroll_tokens(parent_id);
CREATE INDEX enroll_tokens_ref ON enroll_tokens(ref_id);
CREATE INDEX enroll_tokens_k1 ON enroll_tokens(k1);
