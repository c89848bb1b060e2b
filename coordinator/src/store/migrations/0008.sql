CREATE TABLE console_tickets (id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, version INTEGER NOT NULL,
ukey TEXT UNIQUE, name TEXT, keyword TEXT, state TEXT, account_id INTEGER, domain_id INTEGER,
zone_id INTEGER, host_id INTEGER, parent_id INTEGER, ref_id INTEGER, k1 TEXT, k2 TEXT,
created INTEGER NOT NULL, data TEXT NOT NULL);
CREATE INDEX console_tickets_created ON console_tickets(created);
