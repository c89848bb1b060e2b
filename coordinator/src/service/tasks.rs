//! Background work (async jobs, template downloads) runs in one bounded set:
//! at most `limit` at a time, the rest waiting their turn, and at shutdown the
//! set stops taking work and waits for what is running to finish, so a job
//! is not cut off between its host call and the record of its outcome.

use parking_lot::Mutex;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};

/// Jobs running at once by default: enough for hundreds of concurrent
/// deploys, few enough that a burst cannot exhaust the store or the hosts.
pub const DEFAULT_LIMIT: usize = 256;

#[derive(Clone)]
pub struct Tasks {
    inner: Arc<Inner>,
}

struct Inner {
    permits: Arc<Semaphore>,
    live: AtomicUsize,
    closed: AtomicBool,
    idle: Notify,
    /// Names of work refused after close, for the log.
    refused: Mutex<u64>,
}

impl Default for Tasks {
    fn default() -> Self {
        Tasks::new(DEFAULT_LIMIT)
    }
}

impl Tasks {
    pub fn new(limit: usize) -> Self {
        Tasks {
            inner: Arc::new(Inner {
                permits: Arc::new(Semaphore::new(limit.max(1))),
                live: AtomicUsize::new(0),
                closed: AtomicBool::new(false),
                idle: Notify::new(),
                refused: Mutex::new(0),
            }),
        }
    }

    /// Runs `work` when a slot is free. After `drain` began, nothing new
    /// starts: the work's record stays pending and the next start of the
    /// coordinator settles it. Returns whether the work was taken.
    pub fn spawn<F>(&self, work: F) -> bool
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if self.inner.closed.load(Ordering::SeqCst) {
            *self.inner.refused.lock() += 1;
            return false;
        }
        self.inner.live.fetch_add(1, Ordering::SeqCst);
        let inner = self.inner.clone();
        tokio::spawn(async move {
            if let Ok(_permit) = inner.permits.clone().acquire_owned().await {
                if !inner.closed.load(Ordering::SeqCst) {
                    work.await;
                }
            }
            if inner.live.fetch_sub(1, Ordering::SeqCst) == 1 {
                inner.idle.notify_waiters();
            }
        });
        true
    }

    /// Work taken and not finished (running or waiting for a slot).
    pub fn live(&self) -> usize {
        self.inner.live.load(Ordering::SeqCst)
    }

    /// Stops taking work and waits up to `timeout` for running work to
    /// finish (work still waiting for a slot does not start). Returns how
    /// many were still unfinished at the deadline.
    pub async fn drain(&self, timeout: Duration) -> usize {
        self.inner.closed.store(true, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.idle.notified();
            if self.live() == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.live();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test]
    async fn at_most_limit_run_at_once() {
        let t = Tasks::new(3);
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        for _ in 0..20 {
            let (running, peak) = (running.clone(), peak.clone());
            t.spawn(async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
                running.fetch_sub(1, Ordering::SeqCst);
            });
        }
        assert_eq!(t.drain(Duration::from_secs(1)).await, 0);
        assert!(peak.load(Ordering::SeqCst) <= 3, "{peak:?}");
    }

    #[tokio::test]
    async fn drain_waits_for_running_work_and_refuses_new() {
        let t = Tasks::new(8);
        let done = Arc::new(AtomicUsize::new(0));
        for _ in 0..4 {
            let done = done.clone();
            t.spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(t.drain(Duration::from_secs(5)).await, 0);
        assert_eq!(done.load(Ordering::SeqCst), 4);
        assert!(!t.spawn(async {}));
    }

    #[tokio::test]
    async fn drain_gives_up_at_the_deadline() {
        let t = Tasks::new(1);
        t.spawn(tokio::time::sleep(Duration::from_secs(30)));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(t.drain(Duration::from_millis(50)).await, 1);
    }
}
