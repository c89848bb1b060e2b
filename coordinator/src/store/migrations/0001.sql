CREATE TABLE IF NOT EXISTS id_seq (kind TEXT PRIMARY KEY, next INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE domains (id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, version INTEGER NOT NULL,
ukey TEXT UNIQUE, name TEXT, keyword TEXT, state TEXT, account_id INTEGER, domain_id INTEGER,
zone_id INTEGER, host_id INTEGER, parent_id INTEGER, ref_id INTEGER, k1 TEXT,
created INTEGER NOT NULL, data TEXT NOT NULL);
CREATE INDEX domains_name ON domains(name);
CREATE INDEX domains_state ON domains(state);
CREATE INDEX domains_account ON domains(account_id);
CREATE INDEX domains_domain ON domains(domain_id);
CREATE INDEX domains_zone ON domains(zone_id);
CREATE INDEX domains_host ON domains(host_id);
CREATE INDEX domains_parent ON domains(parent_id);
CREATE INDEX domains_ref ON domains(ref_id);
CREATE INDEX domains_k1 ON domains(k1);
CREATE TABLE accounts (id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, version INTEGER NOT NULL,
ukey TEXT UNIQUE, name TEXT, keyword TEXT, state TEXT, account_id INTEGER, domain_id INTEGER,
zone_id INTEGER, host_id INTEGER, parent_id INTEGER, ref_id INTEGER, k1 TEXT,
created INTEGER NOT NULL, data TEXT NOT NULL);
CREATE INDEX accounts_name ON accounts(name);
CREATE INDEX accounts_state ON accounts(state);
CREATE INDEX accounts_account ON accounts(account_id);
CREATE INDEX accounts_domain ON accounts(domain_id);
CREATE INDEX accounts_zone ON accounts(zone_id);
CREATE INDEX accounts_host ON accounts(host_id);
CREATE INDEX accounts_parent ON accounts(parent_id);
CREATE INDEX accounts_ref ON accounts(ref_id);
CREATE INDEX accounts_k1 ON accounts(k1);
CREATE TABLE users (id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, version INTEGER NOT NULL,
ukey TEXT UNIQUE, name TEXT, keyword TEXT, state TEXT, account_id INTEGER, domain_id INTEGER,
zone_id INTEGER, host_id INTEGER, parent_id INTEGER, ref_id INTEGER, k1 TEXT,
created INTEGER NOT NULL, data TEXT NOT NULL);
CREATE INDEX users_name ON users(name);
CREATE INDEX users_state ON users(state);
CREATE INDEX users_account ON users(account_id);
CREATE INDEX users_domain ON users(domain_id);
CREATE INDEX users_zone ON users(zone_id);
CREATE INDEX users_host ON users(host_id);
CREATE INDEX users_parent ON users(parent_id);
CREATE INDEX users_ref ON users(ref_id);
CREATE INDEX users_k1 ON users(k1);
CREATE TABLE roles (id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, version INTEGER NOT NULL,
ukey TEXT UNIQUE, name TEXT, keyword TEXT, state TEXT, account_id INTEGER, domain_id INTEGER,
zone_id INTEGER, host_id INTEGER, parent_id INTEGER, ref_id INTEGER, k1 TEXT,
created INTEGER NOT NULL, data TEXT NOT NULL);
CREATE INDEX roles_name ON roles(name);
CREATE INDEX roles_state ON roles(state);
CREATE INDEX roles_account ON roles(account_id);
CREATE INDEX roles_domain ON roles(domain_id);
CREATE INDEX roles_zone ON roles(zone_id);
CREATE INDEX roles_host ON roles(host_id);
CREATE INDEX roles_parent ON roles(parent_id);
CREATE INDEX roles_ref ON roles(ref_id);
CREATE INDEX roles_k1 ON roles(k1);
CREATE TABLE role_permissions (id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, version INTEGER NOT NULL,
ukey TEXT UNIQUE, name TEXT, keyword TEXT, state TEXT, account_id INTEGER, domain_id INTEGER,
zone_id INTEGER, host_id INTEGER, parent_id INTEGER, ref_id INTEGER, k1 TEXT,
created INTEGER NOT NULL, data TEXT NOT NULL);
CREATE INDEX role_permissions_name ON role_permissions(name);
CREATE INDEX role_permissions_state ON role_permissions(state);
CREATE INDEX role_permissions_account ON role_permissions(account_id);
CREATE INDEX role_permissions_domain ON role_permissions(domain_id);
CREATE INDEX role_permissions_zone ON role_permissions(zone_id);
CREATE INDEX role_permissions_host ON role_permissions(host_id);
CREATE INDEX role_permissions_parent ON role_permissions(parent_id);
CREATE INDEX role_permissions_ref ON role_permissions(ref_id);
CREATE INDEX role_permissions_k1 ON role_permissions(k1);
CREATE TABLE zones (id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, version INTEGER NOT NULL,
ukey TEXT UNIQUE, name TEXT, keyword TEXT, state TEXT, account_id INTEGER, domain_id INTEGER,
zone_id INTEGER, host_id INTEGER, parent_id INTEGER, ref_id INTEGER, k1 TEXT,
created INTEGER NOT NULL, data TEXT NOT NULL);
CREATE INDEX zones_name ON zones(name);
CREATE INDEX zones_state ON zones(state);
CREATE INDEX zones_account ON zones(account_id);
CREATE INDEX zones_domain ON zones(domain_id);
CREATE INDEX zones_zone ON zones(zone_id);
CREATE INDEX zones_host ON zones(host_id);
CREATE INDEX zones_parent ON zones(parent_id);
CREATE INDEX zones_ref ON zones(ref_id);
CREATE INDEX zones_k1 ON zones(k1);
CREATE TABLE pods (id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, version INTEGER NOT NULL,
ukey TEXT UNIQUE, name TEXT, keyword TEXT, state TEXT, account_id INTEGER, domain_id INTEGER,
zone_id INTEGER, host_id INTEGER, parent_id INTEGER, ref_id INTEGER, k1 TEXT,
created INTEGER NOT NULL, data TEXT NOT NULL);
CREATE INDEX pods_name ON pods(name);
CREATE INDEX pods_state ON pods(state);
CREATE INDEX pods_account ON pods(account_id);
CREATE INDEX pods_domain ON pods(domain_id);
CREATE INDEX pods_zone ON pods(zone_id);
CREATE INDEX pods_host ON pods(host_id);
CREATE INDEX pods_parent ON pods(parent_id);
CREATE INDEX pods_ref ON pods(ref_id);
CREATE INDEX pods_k1 ON pods(k1);
CREATE TABLE clusters (id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, version INTEGER NOT NULL,
ukey TEXT UNIQUE, name TEXT, keyword TEXT, state TEXT, account_id INTEGER, domain_id INTEGER,
zone_id INTEGER, host_id INTEGER, parent_id INTEGER, ref_id INTEGER, k1 TEXT,
created INTEGER NOT NULL, data TEXT NOT NULL);
CREATE INDEX clusters_name ON clusters(name);
CREATE INDEX clusters_state ON clusters(state);
CREATE INDEX clusters_account ON clusters(account_id);
CREATE INDEX clusters_domain ON clusters(domain_id);
CREATE INDEX clusters_zone ON clusters(zone_id);
CREATE INDEX clusters_host ON clusters(host_id);
CREATE INDEX clusters_parent ON clusters(parent_id);
CREATE INDEX clusters_ref ON clusters(ref_id);
CREATE INDEX clusters_k1 ON clusters(k1);
CREATE TABLE hosts (id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, version INTEGER NOT NULL,
ukey TEXT UNIQUE, name TEXT, keyword TEXT, state TEXT, account_id INTEGER, domain_id INTEGER,
zone_id INTEGER, host_id INTEGER, parent_id INTEGER, ref_id INTEGER, k1 TEXT,
created INTEGER NOT NULL, data TEXT NOT NULL);
CREATE INDEX hosts_name ON hosts(name);
CREATE INDEX hosts_state ON hosts(state);
CREATE INDEX hosts_account ON hosts(account_id);
CREATE INDEX hosts_domain ON hosts(domain_id);
CREATE INDEX hosts_zone ON hosts(zone_id);
CREATE INDEX hosts_host ON hosts(host_id);
CREATE INDEX hosts_parent ON hosts(parent_id);
CREATE INDEX hosts_ref ON hosts(ref_id);
CREATE INDEX hosts_k1 ON hosts(k1);
CREATE TABLE storage_pools (id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, version INTEGER NOT NULL,
ukey TEXT UNIQUE, name TEXT, keyword TEXT, state TEXT, account_id INTEGER, domain_id INTEGER,
zone_id INTEGER, host_id INTEGER, parent_id INTEGER, ref_id INTEGER, k1 TEXT,
created INTEGER NOT NULL, data TEXT NOT NULL);
CREATE INDEX storage_pools_name ON storage_pools(name);
CREATE INDEX storage_pools_state ON storage_pools(state);
CREATE INDEX storage_pools_account ON storage_pools(account_id);
CREATE INDEX storage_pools_domain ON storage_pools(domain_id);
CREATE INDEX storage_pools_zone ON storage_pools(zone_id);
CREATE INDEX storage_pools_host ON storage_pools(host_id);
CREATE INDEX storage_pools_parent ON storage_pools(parent_id);
CREATE INDEX storage_pools_ref ON storage_pools(ref_id);
CREATE INDEX storage_pools_k1 ON storage_pools(k1);
CREATE TABLE network_offerings (id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, version INTEGER NOT NULL,
ukey TEXT UNIQUE, name TEXT, keyword TEXT, state TEXT, account_id INTEGER, domain_id INTEGER,
zone_id INTEGER, host_id INTEGER, parent_id INTEGER, ref_id INTEGER, k1 TEXT,
created INTEGER NOT NULL, data TEXT NOT NULL);
CREATE INDEX network_offerings_name ON network_offerings(name);
CREATE INDEX network_offerings_state ON network_offerings(state);
CREATE INDEX network_offerings_account ON network_offerings(account_id);
CREATE INDEX network_offerings_domain ON network_offerings(domain_id);
CREATE INDEX network_offerings_zone ON network_offerings(zone_id);
CREATE INDEX network_offerings_host ON network_offerings(host_id);
CREATE INDEX network_offerings_parent ON network_offerings(parent_id);
CREATE INDEX network_offerings_ref ON network_offerings(ref_id);
CREATE INDEX network_offerings_k1 ON network_offerings(k1);
CREATE TABLE networks (id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, version INTEGER NOT NULL,
ukey TEXT UNIQUE, name TEXT, keyword TEXT, state TEXT, account_id INTEGER, domain_id INTEGER,
zone_id INTEGER, host_id INTEGER, parent_id INTEGER, ref_id INTEGER, k1 TEXT,
created INTEGER NOT NULL, data TEXT NOT NULL);
CREATE INDEX networks_name ON networks(name);
CREATE INDEX networks_state ON networks(state);
CREATE INDEX networks_account ON networks(account_id);
CREATE INDEX networks_domain ON networks(domain_id);
CREATE INDEX networks_zone ON networks(zone_id);
CREATE INDEX networks_host ON networks(host_id);
CREATE INDEX networks_parent ON networks(parent_id);
CREATE INDEX networks_ref ON networks(ref_id);
CREATE INDEX networks_k1 ON networks(k1);
CREATE TABLE service_offerings (id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, version INTEGER NOT NULL,
ukey TEXT UNIQUE, name TEXT, keyword TEXT, state TEXT, account_id INTEGER, domain_id INTEGER,
zone_id INTEGER, host_id INTEGER, parent_id INTEGER, ref_id INTEGER, k1 TEXT,
created INTEGER NOT NULL, data TEXT NOT NULL);
CREATE INDEX service_offerings_name ON service_offerings(name);
CREATE INDEX service_offerings_state ON service_offerings(state);
CREATE INDEX service_offerings_account ON service_offerings(account_id);
CREATE INDEX service_offerings_domain ON service_offerings(domain_id);
CREATE INDEX service_offerings_zone ON service_offerings(zone_id);
CREATE INDEX service_offerings_host ON service_offerings(host_id);
CREATE INDEX service_offerings_parent ON service_offerings(parent_id);
CREATE INDEX service_offerings_ref ON service_offerings(ref_id);
CREATE INDEX service_offerings_k1 ON service_offerings(k1);
CREATE TABLE disk_offerings (id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, version INTEGER NOT NULL,
ukey TEXT UNIQUE, name TEXT, keyword TEXT, state TEXT, account_id INTEGER, domain_id INTEGER,
zone_id INTEGER, host_id INTEGER, parent_id INTEGER, ref_id INTEGER, k1 TEXT,
created INTEGER NOT NULL, data TEXT NOT NULL);
CREATE INDEX disk_offerings_name ON disk_offerings(name);
CREATE INDEX disk_offerings_state ON disk_offerings(state);
CREATE INDEX disk_offerings_account ON disk_offerings(account_id);
CREATE INDEX disk_offerings_domain ON disk_offerings(domain_id);
CREATE INDEX disk_offerings_zone ON disk_offerings(zone_id);
CREATE INDEX disk_offerings_host ON disk_offerings(host_id);
CREATE INDEX disk_offerings_parent ON disk_offerings(parent_id);
CREATE INDEX disk_offerings_ref ON disk_offerings(ref_id);
CREATE INDEX disk_offerings_k1 ON disk_offerings(k1);
CREATE TABLE os_categories (id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, version INTEGER NOT NULL,
ukey TEXT UNIQUE, name TEXT, keyword TEXT, state TEXT, account_id INTEGER, domain_id INTEGER,
zone_id INTEGER, host_id INTEGER, parent_id INTEGER, ref_id INTEGER, k1 TEXT,
created INTEGER NOT NULL, data TEXT NOT NULL);
CREATE INDEX os_categories_name ON os_categories(name);
CREATE INDEX os_categories_state ON os_categories(state);
CREATE INDEX os_categories_account ON os_categories(account_id);
CREATE INDEX os_categories_domain ON os_categories(domain_id);
CREATE INDEX os_categories_zone ON os_categories(zone_id);
CREATE INDEX os_categories_host ON os_categories(host_id);
CREATE INDEX os_categories_parent ON os_categories(parent_id);
CREATE INDEX os_categories_ref ON os_categories(ref_id);
CREATE INDEX os_categories_k1 ON os_categories(k1);
CREATE TABLE os_types (id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, version INTEGER NOT NULL,
ukey TEXT UNIQUE, name TEXT, keyword TEXT, state TEXT, account_id INTEGER, domain_id INTEGER,
zone_id INTEGER, host_id INTEGER, parent_id INTEGER, ref_id INTEGER, k1 TEXT,
created INTEGER NOT NULL, data TEXT NOT NULL);
CREATE INDEX os_types_name ON os_types(name);
CREATE INDEX os_types_state ON os_types(state);
CREATE INDEX os_types_account ON os_types(account_id);
CREATE INDEX os_types_domain ON os_types(domain_id);
CREATE INDEX os_types_zone ON os_types(zone_id);
CREATE INDEX os_types_host ON os_types(host_id);
CREATE INDEX os_types_parent ON os_types(parent_id);
CREATE INDEX os_types_ref ON os_types(ref_id);
CREATE INDEX os_types_k1 ON os_types(k1);
CREATE TABLE templates (id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, version INTEGER NOT NULL,
ukey TEXT UNIQUE, name TEXT, keyword TEXT, state TEXT, account_id INTEGER, domain_id INTEGER,
zone_id INTEGER, host_id INTEGER, parent_id INTEGER, ref_id INTEGER, k1 TEXT,
created INTEGER NOT NULL, data TEXT NOT NULL);
CREATE INDEX templates_name ON templates(name);
CREATE INDEX templates_state ON templates(state);
CREATE INDEX templates_account ON templates(account_id);
CREATE INDEX templates_domain ON templates(domain_id);
CREATE INDEX templates_zone ON templates(zone_id);
CREATE INDEX templates_host ON templates(host_id);
CREATE INDEX templates_parent ON templates(parent_id);
CREATE INDEX templates_ref ON templates(ref_id);
CREATE INDEX templates_k1 ON templates(k1);
CREATE TABLE vms (id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, version INTEGER NOT NULL,
ukey TEXT UNIQUE, name TEXT, keyword TEXT, state TEXT, account_id INTEGER, domain_id INTEGER,
zone_id INTEGER, host_id INTEGER, parent_id INTEGER, ref_id INTEGER, k1 TEXT,
created INTEGER NOT NULL, data TEXT NOT NULL);
CREATE INDEX vms_name ON vms(name);
CREATE INDEX vms_state ON vms(state);
CREATE INDEX vms_account ON vms(account_id);
CREATE INDEX vms_domain ON vms(domain_id);
CREATE INDEX vms_zone ON vms(zone_id);
CREATE INDEX vms_host ON vms(host_id);
CREATE INDEX vms_parent ON vms(parent_id);
CREATE INDEX vms_ref ON vms(ref_id);
CREATE INDEX vms_k1 ON vms(k1);
CREATE TABLE volumes (id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, version INTEGER NOT NULL,
ukey TEXT UNIQUE, name TEXT, keyword TEXT, state TEXT, account_id INTEGER, domain_id INTEGER,
zone_id INTEGER, host_id INTEGER, parent_id INTEGER, ref_id INTEGER, k1 TEXT,
created INTEGER NOT NULL, data TEXT NOT NULL);
CREATE INDEX volumes_name ON volumes(name);
CREATE INDEX volumes_state ON volumes(state);
CREATE INDEX volumes_account ON volumes(account_id);
CREATE INDEX volumes_domain ON volumes(domain_id);
CREATE INDEX volumes_zone ON volumes(zone_id);
CREATE INDEX volumes_host ON volumes(host_id);
CREATE INDEX volumes_parent ON volumes(parent_id);
CREATE INDEX volumes_ref ON volumes(ref_id);
CREATE INDEX volumes_k1 ON volumes(k1);
CREATE TABLE nics (id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, version INTEGER NOT NULL,
ukey TEXT UNIQUE, name TEXT, keyword TEXT, state TEXT, account_id INTEGER, domain_id INTEGER,
zone_id INTEGER, host_id INTEGER, parent_id INTEGER, ref_id INTEGER, k1 TEXT,
created INTEGER NOT NULL, data TEXT NOT NULL);
CREATE INDEX nics_name ON nics(name);
CREATE INDEX nics_state ON nics(state);
CREATE INDEX nics_account ON nics(account_id);
CREATE INDEX nics_domain ON nics(domain_id);
CREATE INDEX nics_zone ON nics(zone_id);
CREATE INDEX nics_host ON nics(host_id);
CREATE INDEX nics_parent ON nics(parent_id);
CREATE INDEX nics_ref ON nics(ref_id);
CREATE INDEX nics_k1 ON nics(k1);
CREATE TABLE instance_groups (id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, version INTEGER NOT NULL,
ukey TEXT UNIQUE, name TEXT, keyword TEXT, state TEXT, account_id INTEGER, domain_id INTEGER,
zone_id INTEGER, host_id INTEGER, parent_id INTEGER, ref_id INTEGER, k1 TEXT,
created INTEGER NOT NULL, data TEXT NOT NULL);
CREATE INDEX instance_groups_name ON instance_groups(name);
CREATE INDEX instance_groups_state ON instance_groups(state);
CREATE INDEX instance_groups_account ON instance_groups(account_id);
CREATE INDEX instance_groups_domain ON instance_groups(domain_id);
CREATE INDEX instance_groups_zone ON instance_groups(zone_id);
CREATE INDEX instance_groups_host ON instance_groups(host_id);
CREATE INDEX instance_groups_parent ON instance_groups(parent_id);
CREATE INDEX instance_groups_ref ON instance_groups(ref_id);
CREATE INDEX instance_groups_k1 ON instance_groups(k1);
CREATE TABLE jobs (id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, version INTEGER NOT NULL,
ukey TEXT UNIQUE, name TEXT, keyword TEXT, state TEXT, account_id INTEGER, domain_id INTEGER,
zone_id INTEGER, host_id INTEGER, parent_id INTEGER, ref_id INTEGER, k1 TEXT,
created INTEGER NOT NULL, data TEXT NOT NULL);
CREATE INDEX jobs_name ON jobs(name);
CREATE INDEX jobs_state ON jobs(state);
CREATE INDEX jobs_account ON jobs(account_id);
CREATE INDEX jobs_domain ON jobs(domain_id);
CREATE INDEX jobs_zone ON jobs(zone_id);
CREATE INDEX jobs_host ON jobs(host_id);
CREATE INDEX jobs_parent ON jobs(parent_id);
CREATE INDEX jobs_ref ON jobs(ref_id);
CREATE INDEX jobs_k1 ON jobs(k1);
CREATE TABLE events (id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, version INTEGER NOT NULL,
ukey TEXT UNIQUE, name TEXT, keyword TEXT, state TEXT, account_id INTEGER, domain_id INTEGER,
zone_id INTEGER, host_id INTEGER, parent_id INTEGER, ref_id INTEGER, k1 TEXT,
created INTEGER NOT NULL, data TEXT NOT NULL);
CREATE INDEX events_name ON events(name);
CREATE INDEX events_state ON events(state);
CREATE INDEX events_account ON events(account_id);
CREATE INDEX events_domain ON events(domain_id);
CREATE INDEX events_zone ON events(zone_id);
CREATE INDEX events_host ON events(host_id);
CREATE INDEX events_parent ON events(parent_id);
CREATE INDEX events_ref ON events(ref_id);
CREATE INDEX events_k1 ON events(k1);
CREATE TABLE configs (id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, version INTEGER NOT NULL,
ukey TEXT UNIQUE, name TEXT, keyword TEXT, state TEXT, account_id INTEGER, domain_id INTEGER,
zone_id INTEGER, host_id INTEGER, parent_id INTEGER, ref_id INTEGER, k1 TEXT,
created INTEGER NOT NULL, data TEXT NOT NULL);
CREATE INDEX configs_name ON configs(name);
CREATE INDEX configs_state ON configs(state);
CREATE INDEX configs_account ON configs(account_id);
CREATE INDEX configs_domain ON configs(domain_id);
CREATE INDEX configs_zone ON configs(zone_id);
CREATE INDEX configs_host ON configs(host_id);
CREATE INDEX configs_parent ON configs(parent_id);
CREATE INDEX configs_ref ON configs(ref_id);
CREATE INDEX configs_k1 ON configs(k1);
CREATE TABLE sessions (id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, version INTEGER NOT NULL,
ukey TEXT UNIQUE, name TEXT, keyword TEXT, state TEXT, account_id INTEGER, domain_id INTEGER,
zone_id INTEGER, host_id INTEGER, parent_id INTEGER, ref_id INTEGER, k1 TEXT,
created INTEGER NOT NULL, data TEXT NOT NULL);
CREATE INDEX sessions_name ON sessions(name);
CREATE INDEX sessions_state ON sessions(state);
CREATE INDEX sessions_account ON sessions(account_id);
CREATE INDEX sessions_domain ON sessions(domain_id);
CREATE INDEX sessions_zone ON sessions(zone_id);
CREATE INDEX sessions_host ON sessions(host_id);
CREATE INDEX sessions_parent ON sessions(parent_id);
CREATE INDEX sessions_ref ON sessions(ref_id);
CREATE INDEX sessions_k1 ON sessions(k1);
