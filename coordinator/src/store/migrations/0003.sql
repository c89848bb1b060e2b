CREATE TABLE affinity_groups (id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, version INTEGER NOT NULL,
ukey TEXT UNIQUE, name TEXT, keyword TEXT, state TEXT, account_id INTEGER, domain_id INTEGER,
zone_id INTEGER, host_id INTEGER, parent_id INTEGER, ref_id INTEGER, k1 TEXT,
created INTEGER NOT NULL, data TEXT NOT NULL);
CREATE INDEX affinity_groups_name ON affinity_groups(name);
CREATE INDEX affinity_groups_state ON affinity_groups(state);
CREATE INDEX affinity_groups_account ON affinity_groups(account_id);
CREATE INDEX affinity_groups_domain ON affinity_groups(domain_id);
CREATE INDEX affinity_groups_zone ON affinity_groups(zone_id);
CREATE INDEX affinity_groups_host ON affinity_groups(host_id);
CREATE INDEX affinity_groups_parent ON affinity_groups(parent_id);
CREATE INDEX affinity_groups_ref ON affinity_groups(ref_id);
CREATE INDEX affinity_groups_k1 ON affinity_groups(k1);
