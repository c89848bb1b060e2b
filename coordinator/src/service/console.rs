//! Console access: `createConsoleEndpoint` hands the caller a one-time
//! token for an instance it may use; the console proxy trades the token for
//! where the instance's VNC console is (asked of its host) and its password.
//! A token works once, for that instance only, and expires quickly; every
//! session opened with one is an event.

use super::agent::ConsoleTarget;
use super::*;
use base64::Engine;
use orrery_model::VmState;
use rand::RngCore;
use std::time::Duration;

/// A query value's encoding: everything but unreserved characters.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// How long a console URL can wait before it is used.
pub const TOKEN_TTL: Duration = Duration::from_secs(120);
/// Expired tickets removed per new one, so that unused tokens do not pile
/// up in the store.
const SWEEP: u64 = 64;

/// Where this coordinator's console proxy is reached. The tokens themselves
/// are records (`ConsoleTicket`), so that with several coordinators any
/// one's proxy takes a token another one issued.
#[derive(Default)]
pub struct ConsoleTickets {
    /// Where the console proxy is reached, e.g. `http://host:8082`; set by
    /// `serve` once its listener is bound.
    base_url: parking_lot::RwLock<Option<String>>,
}

/// What `createConsoleEndpoint` answers.
#[derive(Debug, Clone)]
pub struct ConsoleEndpoint {
    pub url: String,
    pub token: String,
    pub host: String,
    pub port: String,
    pub path: String,
}

/// What the proxy needs to open a session.
#[derive(Debug, Clone)]
pub struct ConsoleSession {
    pub vm_uuid: String,
    pub target: ConsoleTarget,
    pub password: String,
}

/// The stored form of a token: its SHA-256, so that reading the store does
/// not hand out working tokens.
fn token_key(token: &str) -> String {
    super::hosts::token_hash(token)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl super::access::GuestAccess {
    /// Where the console proxy listens, as browsers reach it.
    pub fn set_console_base_url(&self, url: &str) {
        *self.consoles.base_url.write() = Some(url.trim_end_matches('/').to_string());
    }

    pub async fn create_console_endpoint(
        &self,
        caller: &Caller,
        vm_uuid: &str,
    ) -> SResult<ConsoleEndpoint> {
        let vm: Vm = self.owned(caller, "virtualmachineid", vm_uuid).await?;
        if vm.state != VmState::Running || vm.host_id.is_none() {
            return Err(ServiceError::state(format!(
                "Instance {} is {}; its console is available only while it is Running",
                vm.uuid, vm.state
            )));
        }
        let Some(base) = self.consoles.base_url.read().clone() else {
            return Err(ServiceError::unavailable(
                "The console proxy is not running on this coordinator",
            ));
        };
        let mut raw = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        self.insert_console_ticket(&token, vm.id, caller).await?;
        let (host, port) = split_base(&base);
        let path = format!("console/websockify?token={token}");
        let encoded: String = percent_encoding::utf8_percent_encode(&path, QUERY_VALUE).to_string();
        Ok(ConsoleEndpoint {
            url: format!(
                "{base}/console/vnc_lite.html?path={encoded}&title={}",
                percent_encoding::utf8_percent_encode(&vm.name, QUERY_VALUE)
            ),
            token,
            host,
            port,
            path,
        })
    }

    /// Stores a new token for `vm_id`, removing some that expired unused.
    async fn insert_console_ticket(&self, token: &str, vm_id: i64, caller: &Caller) -> SResult<()> {
        let at = now();
        let ttl = i64::try_from(TOKEN_TTL.as_secs()).unwrap_or(i64::MAX);
        let expired: Vec<ConsoleTicket> = self
            .store
            .list(&Query {
                conds: vec![Cond::Le(Col::Created, Val::from(at - ttl - 1))],
                page: Some((0, SWEEP)),
                skip_count: true,
                ..Default::default()
            })
            .await?
            .0;
        let mut tx = Tx::new();
        for old in &expired {
            tx.delete::<ConsoleTicket>(old.id);
        }
        tx.insert(&ConsoleTicket {
            id: self.store.new_id::<ConsoleTicket>().await?,
            uuid: token_key(token),
            version: 0,
            vm_id,
            user_id: caller.user.id,
            expires_ms: now_ms() + i64::try_from(TOKEN_TTL.as_millis()).unwrap_or(i64::MAX),
            created: at,
        });
        self.store.commit(tx.ops).await?;
        Ok(())
    }

    /// Takes a token: the first to spend it gets its ticket, whichever
    /// coordinator it is; later tries, and expired tokens, get none.
    pub(crate) async fn spend_console_ticket(&self, token: &str) -> SResult<Option<ConsoleTicket>> {
        let Some(mut ticket) = self
            .store
            .load_uuid::<ConsoleTicket>(&token_key(token))
            .await?
        else {
            return Ok(None);
        };
        // The versioned update fails for all but one of those spending it
        // at once; the record goes in the same commit.
        let mut tx = Tx::new();
        tx.update(&mut ticket);
        tx.delete::<ConsoleTicket>(ticket.id);
        match self.store.commit(tx.ops).await {
            Ok(()) => {}
            Err(crate::store::StoreError::Conflict(..)) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        Ok((ticket.expires_ms > now_ms()).then_some(ticket))
    }

    /// Trades a console token for a session: the token is spent whether or
    /// not the session opens.
    pub async fn open_console(&self, token: &str, client: &str) -> SResult<ConsoleSession> {
        let ticket = self
            .spend_console_ticket(token)
            .await?
            .ok_or_else(|| ServiceError::denied("The console token is unknown, used or expired"))?;
        let caller = self.identity.caller_for_user(ticket.user_id).await?;
        let vm: Vm = self
            .store
            .load(ticket.vm_id)
            .await?
            .ok_or_else(|| ServiceError::state("The instance no longer exists"))?;
        let host = match (vm.state, vm.host_id) {
            (VmState::Running, Some(h)) => h,
            _ => {
                return Err(ServiceError::state(format!(
                    "Instance {} is {}; its console is gone",
                    vm.uuid, vm.state
                )))
            }
        };
        let target = self
            .agents
            .console(host, &vm.instance_name)
            .await
            .map_err(|e| ServiceError::unavailable(e.to_string()))?;
        let mut tx = Tx::new();
        self.event(
            &mut tx,
            &caller,
            "VM.CONSOLE",
            format!(
                "Console session to instance {} opened from {client} by {}",
                vm.uuid, caller.user.username
            ),
            vm.account_id,
            vm.domain_id,
            Some((&vm.uuid, "VirtualMachine", &vm.name)),
        );
        self.store.commit(tx.ops).await?;
        Ok(ConsoleSession {
            vm_uuid: vm.uuid.clone(),
            target,
            password: vm.vnc_password.clone().unwrap_or_default(),
        })
    }
}

/// `http://host:port` -> ("host", "port"), the parts CloudStack's answer
/// names separately.
fn split_base(base: &str) -> (String, String) {
    let rest = base.split_once("://").map(|(_, r)| r).unwrap_or(base);
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => (h.to_string(), p.to_string()),
        _ => (
            authority.to_string(),
            if base.starts_with("https") {
                "443"
            } else {
                "80"
            }
            .to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn base_urls_split_into_host_and_port() {
        assert_eq!(
            split_base("http://10.0.0.1:8082"),
            ("10.0.0.1".into(), "8082".into())
        );
        assert_eq!(
            split_base("https://console.example"),
            ("console.example".into(), "443".into())
        );
    }

    #[tokio::test]
    async fn a_ticket_works_once_and_not_after_it_expires() {
        let dir = std::env::temp_dir().join(format!("orrery-console-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = crate::store::sqlite::SqliteStore::open(&dir.join("t.db"))
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let svc = Service::new(
            Arc::new(store),
            Arc::new(agent::Simulator::new(Duration::ZERO)),
            dir.clone(),
        )
        .await
        .unwrap();
        let caller = Caller {
            user: User {
                id: 7,
                ..Default::default()
            },
            account: Default::default(),
            domain: Default::default(),
            role: Default::default(),
        };
        svc.guest_access
            .insert_console_ticket("a", 1, &caller)
            .await
            .unwrap();
        // The store holds the token's hash, not the token.
        assert!(svc
            .store
            .load_uuid::<ConsoleTicket>("a")
            .await
            .unwrap()
            .is_none());
        // Spent by two at once: one gets it.
        let (x, y) = tokio::join!(
            svc.guest_access.spend_console_ticket("a"),
            svc.guest_access.spend_console_ticket("a")
        );
        let won: Vec<_> = [x.unwrap(), y.unwrap()].into_iter().flatten().collect();
        assert_eq!(won.len(), 1);
        assert_eq!((won[0].vm_id, won[0].user_id), (1, 7));
        assert!(svc
            .guest_access
            .spend_console_ticket("a")
            .await
            .unwrap()
            .is_none());
        assert!(svc
            .guest_access
            .spend_console_ticket("never")
            .await
            .unwrap()
            .is_none());

        // Expired: refused, and swept when a later one is made.
        svc.guest_access
            .insert_console_ticket("b", 1, &caller)
            .await
            .unwrap();
        let mut b: ConsoleTicket = svc.store.load_uuid(&token_key("b")).await.unwrap().unwrap();
        b.expires_ms = now_ms() - 1;
        b.created -= 3600;
        let mut tx = Tx::new();
        tx.update(&mut b);
        svc.store.commit(tx.ops).await.unwrap();
        assert!(svc
            .guest_access
            .spend_console_ticket("b")
            .await
            .unwrap()
            .is_none());
        svc.guest_access
            .insert_console_ticket("c", 1, &caller)
            .await
            .unwrap();
        let mut tx = Tx::new();
        let stale = ConsoleTicket {
            id: svc.store.new_id::<ConsoleTicket>().await.unwrap(),
            uuid: token_key("d"),
            created: now() - 3600,
            ..Default::default()
        };
        tx.insert(&stale);
        svc.store.commit(tx.ops).await.unwrap();
        svc.guest_access
            .insert_console_ticket("e", 1, &caller)
            .await
            .unwrap();
        assert!(svc
            .store
            .load::<ConsoleTicket>(stale.id)
            .await
            .unwrap()
            .is_none());
        assert!(svc
            .guest_access
            .spend_console_ticket("c")
            .await
            .unwrap()
            .is_some());
        std::fs::remove_dir_all(&dir).ok();
    }
}
