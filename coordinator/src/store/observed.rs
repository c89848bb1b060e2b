//! A store decorator that tells an observer about every committed change, so
//! in-memory views derived from records (placement capacity) stay current
//! without rereading the records they summarise.

use super::*;

/// Told about each transaction after it committed, in commit order per
/// writer. Implementations must be cheap: they run on the commit path.
pub trait CommitObserver: Send + Sync {
    /// Whether changes to `kind` matter to this observer.
    fn wants(&self, kind: Kind) -> bool;
    fn committed(&self, ops: &[Op]);
}

pub struct ObservedStore {
    inner: DynStore,
    observer: Arc<dyn CommitObserver>,
}

impl ObservedStore {
    pub fn new(inner: DynStore, observer: Arc<dyn CommitObserver>) -> Self {
        ObservedStore { inner, observer }
    }
}

#[async_trait]
impl Store for ObservedStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        self.inner.migrate().await
    }
    async fn is_initialised(&self) -> Result<bool, StoreError> {
        self.inner.is_initialised().await
    }
    async fn get(&self, kind: Kind, id: i64) -> Result<Option<Row>, StoreError> {
        self.inner.get(kind, id).await
    }
    async fn get_by_uuid(&self, kind: Kind, uuid: &str) -> Result<Option<Row>, StoreError> {
        self.inner.get_by_uuid(kind, uuid).await
    }
    async fn find(&self, kind: Kind, q: &Query) -> Result<(Vec<Row>, u64), StoreError> {
        self.inner.find(kind, q).await
    }
    async fn count(&self, kind: Kind, q: &Query) -> Result<u64, StoreError> {
        self.inner.count(kind, q).await
    }
    async fn allocate_ids(&self, kind: Kind, n: i64) -> Result<i64, StoreError> {
        self.inner.allocate_ids(kind, n).await
    }
    async fn commit(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        // The observer's share of the ops is copied; the store consumes them.
        let copy: Vec<Op> = ops
            .iter()
            .filter(|o| self.observer.wants(Op::kind(o)))
            .cloned()
            .collect();
        self.inner.commit(ops).await?;
        if !copy.is_empty() {
            self.observer.committed(&copy);
        }
        Ok(())
    }
    async fn size_bytes(&self) -> Result<u64, StoreError> {
        self.inner.size_bytes().await
    }
    fn generation(&self, kind: Kind) -> u64 {
        self.inner.generation(kind)
    }
    fn shared(&self) -> bool {
        self.inner.shared()
    }
    fn is_leader(&self) -> bool {
        self.inner.is_leader()
    }
    fn runner_id(&self) -> String {
        self.inner.runner_id()
    }
    async fn runner_alive(&self, runner: &str) -> Result<bool, StoreError> {
        self.inner.runner_alive(runner).await
    }
    fn changes(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Change>> {
        self.inner.changes()
    }
    async fn placement_lock(&self) -> Result<Option<Hold>, StoreError> {
        self.inner.placement_lock().await
    }
    async fn barrier(&self, token: &str) -> Result<(), StoreError> {
        self.inner.barrier(token).await
    }
    async fn advertise(&self, address: &str) -> Result<(), StoreError> {
        self.inner.advertise(address).await
    }
    async fn peers(&self) -> Result<Vec<String>, StoreError> {
        self.inner.peers().await
    }
    async fn statistics(&self) -> Result<Option<Box<dyn stats::StatsStore>>, StoreError> {
        self.inner.statistics().await
    }
}
