//! Records that change rarely (zones, offerings, templates, networks, hosts,
//! and the identity records behind every API caller) are read on every
//! request, deploy and placement. This cache keeps them in
//! memory, each entry tagged with the store's generation of its kind when it
//! was read: any committed change to that kind makes every entry of the kind
//! stale, so a reader never sees a record older than the last commit.

use super::*;
use crate::store::Kind;
use std::any::Any;
use std::future::Future;

/// Kinds worth caching: read on hot paths, written by administrators.
pub(crate) fn cacheable(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Zone
            | Kind::Pod
            | Kind::Cluster
            | Kind::Host
            | Kind::ServiceOffering
            | Kind::DiskOffering
            | Kind::NetworkOffering
            | Kind::Network
            | Kind::Template
            | Kind::OsType
            | Kind::OsCategory
            | Kind::AffinityGroup
            | Kind::Domain
            | Kind::Account
    )
}

type Slot = (u64, Arc<dyn Any + Send + Sync>);

#[derive(Default)]
pub struct RecordCache {
    m: parking_lot::Mutex<HashMap<(Kind, String), Slot>>,
}

/// Entries beyond this are dropped wholesale; the cache refills on demand.
const MAX_ENTRIES: usize = 50_000;

impl Context {
    /// The value under `key`, derived from records of `kinds` by `load`,
    /// unless a copy is cached that no commit to any of `kinds` has made
    /// stale. The first kind names the entry's namespace.
    pub(crate) async fn cached<T, F>(&self, kinds: &[Kind], key: String, load: F) -> SResult<T>
    where
        T: Clone + Send + Sync + 'static,
        F: Future<Output = SResult<T>>,
    {
        // Read before loading: a commit during the load leaves the entry
        // tagged with the older generation, so it is reloaded next time.
        let gen: u64 = kinds.iter().map(|k| self.store.generation(*k)).sum();
        let k = (kinds[0], key);
        if let Some((g, v)) = self.cache.m.lock().get(&k) {
            if *g == gen {
                if let Some(t) = v.downcast_ref::<T>() {
                    return Ok(t.clone());
                }
            }
        }
        let v = load.await?;
        let mut m = self.cache.m.lock();
        if m.len() >= MAX_ENTRIES {
            m.clear();
        }
        m.insert(k, (gen, Arc::new(v.clone())));
        Ok(v)
    }

    /// A record by id, from the cache for cacheable kinds.
    pub async fn load_cached<E: Entity + 'static>(&self, id: i64) -> SResult<Option<E>> {
        if !cacheable(E::KIND) {
            return Ok(self.store.load(id).await?);
        }
        self.cached(&[E::KIND], format!("id:{id}"), async {
            Ok(self.store.load::<E>(id).await?)
        })
        .await
    }

    /// A record by uuid, from the cache for cacheable kinds.
    pub async fn load_uuid_cached<E: Entity + 'static>(&self, uuid: &str) -> SResult<Option<E>> {
        if !cacheable(E::KIND) {
            return Ok(self.store.load_uuid(uuid).await?);
        }
        self.cached(&[E::KIND], format!("uuid:{uuid}"), async {
            Ok(self.store.load_uuid::<E>(uuid).await?)
        })
        .await
    }

    /// All records of a cacheable kind in a zone.
    pub(crate) async fn zone_records<E: Entity + 'static>(&self, zone_id: i64) -> SResult<Vec<E>> {
        self.cached(&[E::KIND], format!("zone:{zone_id}"), async {
            Ok(self
                .store
                .all::<E>(Query::new().eq(Col::Zone, zone_id))
                .await?)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{Store, Tx};

    #[tokio::test]
    async fn a_commit_makes_cached_records_of_its_kind_stale() {
        let dir = std::env::temp_dir().join(format!("orrery-cache-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = SqliteStore::open(&dir.join("t.db")).await.unwrap();
        store.migrate().await.unwrap();
        let store: DynStore = Arc::new(store);
        let mut zone = Zone {
            id: 5,
            uuid: "z-5".into(),
            name: "before".into(),
            ..Default::default()
        };
        let mut tx = Tx::new();
        tx.insert(&zone);
        store.commit(tx.ops).await.unwrap();
        let svc = Service::new(
            store.clone(),
            Arc::new(agent::Simulator::new(std::time::Duration::ZERO)),
            dir.clone(),
        )
        .await
        .unwrap();
        let z: Zone = svc.load_uuid_cached("z-5").await.unwrap().unwrap();
        assert_eq!(z.name, "before");
        zone.version = 1;
        zone.name = "after".into();
        let mut tx = Tx::new();
        tx.update(&mut zone);
        svc.store.commit(tx.ops).await.unwrap();
        let z: Zone = svc.load_uuid_cached("z-5").await.unwrap().unwrap();
        assert_eq!(z.name, "after");
        let z: Zone = svc.load_cached(5).await.unwrap().unwrap();
        assert_eq!(z.name, "after");
        std::fs::remove_dir_all(&dir).ok();
    }
}
