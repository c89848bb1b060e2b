CREATE TABLE ssh_keypairs (id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, version INTEGER NOT NULL,
ukey TEXT UNIQUE, name TEXT, keyword TEXT, state TEXT, account_id INTEGER, domain_id INTEGER,
zone_id INTEGER, host_id INTEGER, parent_id INTEGER, ref_id INTEGER, k1 TEXT, k2 TEXT,
created INTEGER NOT NULL, data TEXT NOT NULL);
CREATE INDEX ssh_keypairs_name ON ssh_keypairs(name);
CREATE INDEX ssh_keypairs_state ON ssh_keypairs(state);
CREATE INDEX ssh_keypairs_account ON ssh_keypairs(account_id);
CREATE INDEX ssh_keypairs_domain ON ssh_keypairs(domain_id);
CREATE INDEX ssh_keypairs_k1 ON ssh_keypairs(k1);
CREATE TABLE user_data (id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, version INTEGER NOT NULL,
ukey TEXT UNIQUE, name TEXT, keyword TEXT, state TEXT, account_id INTEGER, domain_id INTEGER,
zone_id INTEGER, host_id INTEGER, parent_id INTEGER, ref_id INTEGER, k1 TEXT, k2 TEXT,
created INTEGER NOT NULL, data TEXT NOT NULL);
CREATE INDEX user_data_name ON user_data(name);
CREATE INDEX user_data_state ON user_data(state);
CREATE INDEX user_data_account ON user_data(account_id);
CREATE INDEX user_data_domain ON user_data(domain_id);
CREATE TABLE resource_icons (id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, version INTEGER NOT NULL,
ukey TEXT UNIQUE, name TEXT, keyword TEXT, state TEXT, account_id INTEGER, domain_id INTEGER,
zone_id INTEGER, host_id INTEGER, parent_id INTEGER, ref_id INTEGER, k1 TEXT, k2 TEXT,
created INTEGER NOT NULL, data TEXT NOT NULL);
CREATE INDEX resource_icons_account ON resource_icons(account_id);
