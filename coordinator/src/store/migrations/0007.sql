CREATE TABLE vm_snapshots (id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, version INTEGER NOT NULL,
ukey TEXT UNIQUE, name TEXT, keyword TEXT, state TEXT, account_id INTEGER, domain_id INTEGER,
zone_id INTEGER, host_id INTEGER, parent_id INTEGER, ref_id INTEGER, k1 TEXT, k2 TEXT,
created INTEGER NOT NULL, data TEXT NOT NULL);
CREATE INDEX vm_snapshots_name ON vm_snapshots(name);
CREATE INDEX vm_snapshots_state ON vm_snapshots(state);
CREATE INDEX vm_snapshots_account ON vm_snapshots(account_id);
CREATE INDEX vm_snapshots_domain ON vm_snapshots(domain_id);
CREATE INDEX vm_snapshots_parent ON vm_snapshots(parent_id);
CREATE TABLE snapshots (id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, version INTEGER NOT NULL,
ukey TEXT UNIQUE, name TEXT, keyword TEXT, state TEXT, account_id INTEGER, domain_id INTEGER,
zone_id INTEGER, host_id INTEGER, parent_id INTEGER, ref_id INTEGER, k1 TEXT, k2 TEXT,
created INTEGER NOT NULL, data TEXT NOT NULL);
CREATE INDEX snapshots_name ON snapshots(name);
CREATE INDEX snapshots_state ON snapshots(state);
CREATE INDEX snapshots_account ON snapshots(account_id);
CREATE INDEX snapshots_domain ON snapshots(domain_id);
CREATE INDEX snapshots_parent ON snapshots(parent_id);
CREATE INDEX snapshots_ref ON snapshots(ref_id);
CREATE TABLE snapshot_policies (id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, version INTEGER NOT NULL,
ukey TEXT UNIQUE, name TEXT, keyword TEXT, state TEXT, account_id INTEGER, domain_id INTEGER,
zone_id INTEGER, host_id INTEGER, parent_id INTEGER, ref_id INTEGER, k1 TEXT, k2 TEXT,
created INTEGER NOT NULL, data TEXT NOT NULL);
CREATE INDEX snapshot_policies_account ON snapshot_policies(account_id);
CREATE INDEX snapshot_policies_parent ON snapshot_policies(parent_id);
CREATE INDEX snapshot_policies_k2 ON snapshot_policies(k2);
