CREATE INDEX vms_account_id_state ON vms(account_id, id, state);
CREATE INDEX vms_id_state ON vms(id, state);
CREATE INDEX volumes_account_id_state ON volumes(account_id, id, state);
CREATE INDEX volumes_id_state ON volumes(id, state);
