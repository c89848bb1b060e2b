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
use std::time::{Duration, Instant};

/// A query value's encoding: everything but unreserved characters.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// How long a console URL can wait before it is used.
pub const TOKEN_TTL: Duration = Duration::from_secs(120);
/// Tokens outstanding at once; the oldest go first beyond it.
const MAX_TICKETS: usize = 10_000;

#[derive(Debug, Clone)]
struct Ticket {
    vm_id: i64,
    caller: Caller,
    expires: Instant,
}

/// Outstanding console tokens (in memory: a restart voids them, and a URL
/// is only ever minutes old).
#[derive(Default)]
pub struct ConsoleTickets {
    tickets: parking_lot::Mutex<HashMap<String, Ticket>>,
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

impl ConsoleTickets {
    fn insert(&self, token: String, t: Ticket) {
        let mut m = self.tickets.lock();
        let now = Instant::now();
        m.retain(|_, t| t.expires > now);
        if m.len() >= MAX_TICKETS {
            if let Some(oldest) = m
                .iter()
                .min_by_key(|(_, t)| t.expires)
                .map(|(k, _)| k.clone())
            {
                m.remove(&oldest);
            }
        }
        m.insert(token, t);
    }

    /// Removes the token whatever happens next: it works once.
    fn take(&self, token: &str) -> Option<Ticket> {
        let t = self.tickets.lock().remove(token)?;
        (t.expires > Instant::now()).then_some(t)
    }
}

impl Service {
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
        self.consoles.insert(
            token.clone(),
            Ticket {
                vm_id: vm.id,
                caller: caller.clone(),
                expires: Instant::now() + TOKEN_TTL,
            },
        );
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

    /// Trades a console token for a session: the token is spent whether or
    /// not the session opens.
    pub async fn open_console(&self, token: &str, client: &str) -> SResult<ConsoleSession> {
        let ticket = self
            .consoles
            .take(token)
            .ok_or_else(|| ServiceError::denied("The console token is unknown, used or expired"))?;
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
            &ticket.caller,
            "VM.CONSOLE",
            format!(
                "Console session to instance {} opened from {client} by {}",
                vm.uuid, ticket.caller.user.username
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

    #[test]
    fn a_ticket_works_once_and_not_after_it_expires() {
        let t = ConsoleTickets::default();
        let caller = Caller {
            user: Default::default(),
            account: Default::default(),
            domain: Default::default(),
            role: Default::default(),
        };
        t.insert(
            "a".into(),
            Ticket {
                vm_id: 1,
                caller: caller.clone(),
                expires: Instant::now() + Duration::from_secs(60),
            },
        );
        assert!(t.take("a").is_some());
        assert!(t.take("a").is_none());
        t.insert(
            "b".into(),
            Ticket {
                vm_id: 1,
                caller,
                expires: Instant::now() - Duration::from_secs(1),
            },
        );
        assert!(t.take("b").is_none());
    }
}
