//! The `Store` contract on both engines: each test runs on a fresh SQLite
//! file, and on a fresh PostgreSQL database when `ORRERY_TEST_PG` names a
//! server (a superuser URL, as `tests/lab/postgres.sh` prints; CI sets it).

use super::postgres::PgStore;
use super::records::{Event, InstanceGroup};
use super::sqlite::SqliteStore;
use super::writer_tests::group;
use super::*;

/// A fresh, migrated store of each engine available here, by name.
async fn engines() -> Vec<(&'static str, DynStore, Option<String>, tempfile::TempDir)> {
    let mut out = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("o.db")).await.unwrap();
    s.migrate().await.unwrap();
    out.push(("sqlite", Arc::new(s) as DynStore, None, dir));
    if let Some(url) = fresh_pg_database().await {
        let s = PgStore::open(&url).await.unwrap();
        s.migrate().await.unwrap();
        out.push((
            "postgres",
            Arc::new(s) as DynStore,
            Some(url),
            tempfile::tempdir().unwrap(),
        ));
    }
    out
}

/// A new empty database on the test server, or None without one.
pub(crate) async fn fresh_pg_database() -> Option<String> {
    let admin = std::env::var("ORRERY_TEST_PG")
        .ok()
        .filter(|s| !s.is_empty())?;
    let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .expect("ORRERY_TEST_PG is set but the server does not answer");
    tokio::spawn(conn);
    let name = format!("orrery_t_{}", uuid::Uuid::new_v4().simple());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    Some(format!("{base}/{name}"))
}

#[tokio::test]
async fn records_versions_duplicates_and_queries_behave_alike() {
    for (engine, s, _, _dir) in engines().await {
        let base = s.allocate_ids(Kind::InstanceGroup, 10).await.unwrap();
        let mut tx = Tx::new();
        for (i, n) in ["alpha", "beta_1", "gamma", "Delta"].iter().enumerate() {
            tx.insert(&group(base + i as i64, n));
        }
        s.commit(tx.ops).await.unwrap();

        // A unique key used twice fails the whole transaction.
        let mut tx = Tx::new();
        tx.insert(&group(base + 5, "fresh"));
        tx.insert(&group(base + 6, "alpha"));
        let r = s.commit(tx.ops).await;
        assert!(
            matches!(r, Err(StoreError::Duplicate(..))),
            "{engine}: {r:?}"
        );
        assert!(
            s.load::<InstanceGroup>(base + 5).await.unwrap().is_none(),
            "{engine}"
        );

        // Versions: an update of a stale copy conflicts and changes nothing.
        let mut a: InstanceGroup = s.load(base).await.unwrap().unwrap();
        let mut stale = a.clone();
        a.name = "alpha2".into();
        let mut tx = Tx::new();
        tx.update(&mut a);
        s.commit(tx.ops).await.unwrap();
        stale.name = "lost".into();
        let mut tx = Tx::new();
        tx.update(&mut stale);
        let r = s.commit(tx.ops).await;
        assert!(
            matches!(r, Err(StoreError::Conflict(..))),
            "{engine}: {r:?}"
        );
        let now: InstanceGroup = s.load(base).await.unwrap().unwrap();
        assert_eq!((now.name.as_str(), now.version), ("alpha2", 2), "{engine}");

        // Queries: substring without case (with LIKE's wildcards taken
        // literally), case-free equality, pages, order, counts.
        let q = Query::new().and(Cond::Contains(vec![Col::Name], "A_1".into()));
        let (rows, total) = s.list::<InstanceGroup>(&q).await.unwrap();
        assert_eq!(
            (
                rows.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(),
                total
            ),
            (vec!["beta_1"], 1),
            "{engine}"
        );
        let q = Query::new().and(Cond::EqNoCase(Col::Name, "delta".into()));
        assert_eq!(
            s.count(Kind::InstanceGroup, &q).await.unwrap(),
            1,
            "{engine}"
        );
        let mut q = Query::new();
        q.page = Some((1, 2));
        q.descending = true;
        let (rows, total) = s.list::<InstanceGroup>(&q).await.unwrap();
        assert_eq!(
            (rows.iter().map(|g| g.id).collect::<Vec<_>>(), total),
            (vec![base + 2, base + 1], 4),
            "{engine}"
        );
        // Numbers compared with text columns, names with id columns.
        let q = Query::new().eq(Col::Name, 5i64);
        assert_eq!(
            s.count(Kind::InstanceGroup, &q).await.unwrap(),
            0,
            "{engine}"
        );
        let q = Query::new().eq(Col::Account, "x");
        assert_eq!(
            s.count(Kind::InstanceGroup, &q).await.unwrap(),
            0,
            "{engine}"
        );
        let q = Query::new().and(Cond::In(Col::Id, vec![]));
        assert_eq!(
            s.count(Kind::InstanceGroup, &q).await.unwrap(),
            0,
            "{engine}"
        );
        let q = Query::new().and(Cond::NotIn(Col::Id, vec![Val::I(base), Val::I(base + 1)]));
        assert_eq!(
            s.count(Kind::InstanceGroup, &q).await.unwrap(),
            2,
            "{engine}"
        );

        // Deletes.
        let mut tx = Tx::new();
        tx.delete::<InstanceGroup>(base + 3);
        s.commit(tx.ops).await.unwrap();
        assert!(s.load::<InstanceGroup>(base + 3).await.unwrap().is_none());
        assert!(s.generation(Kind::InstanceGroup) >= 3, "{engine}");

        // Id 0: the store numbers append-only records, one after another.
        let mut ids = Vec::new();
        for i in 0..3 {
            let e = Event {
                id: 0,
                uuid: uuid::Uuid::new_v4().to_string(),
                description: format!("e{i}"),
                ..Default::default()
            };
            let mut tx = Tx::new();
            tx.insert(&e);
            s.commit(tx.ops).await.unwrap();
            let got: Event = s.load_uuid(&e.uuid).await.unwrap().unwrap();
            ids.push(got.id);
        }
        assert!(
            ids[0] > 0 && ids[1] == ids[0] + 1 && ids[2] == ids[1] + 1,
            "{engine}: {ids:?}"
        );
        assert!(s.size_bytes().await.unwrap() > 0, "{engine}");
        assert!(
            !s.is_initialised().await.unwrap(),
            "{engine}: no domain yet"
        );
    }
}

#[tokio::test]
async fn a_schema_newer_than_the_binary_is_refused() {
    for (engine, s, url, dir) in engines().await {
        drop(s);
        match url {
            None => {
                let c = rusqlite::Connection::open(dir.path().join("o.db")).unwrap();
                c.execute("INSERT INTO schema_version (version) VALUES (999)", [])
                    .unwrap();
                let s = SqliteStore::open(&dir.path().join("o.db")).await.unwrap();
                let e = s.migrate().await.unwrap_err().to_string();
                assert!(e.contains("version 999, newer than"), "{engine}: {e}");
            }
            Some(url) => {
                let s = PgStore::open(&url).await.unwrap();
                let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                client
                    .batch_execute("INSERT INTO schema_version (version) VALUES (999)")
                    .await
                    .unwrap();
                let e = s.migrate().await.unwrap_err().to_string();
                assert!(e.contains("version 999, newer than"), "{engine}: {e}");
            }
        }
    }
}

/// Two coordinators on one PostgreSQL database: ids never collide, and two
/// updates of one record from two coordinators end with one conflict.
#[tokio::test]
async fn two_stores_on_one_postgres_database_share_it_safely() {
    let Some(url) = fresh_pg_database().await else {
        return;
    };
    let a: DynStore = Arc::new(PgStore::open(&url).await.unwrap());
    let b: DynStore = Arc::new(PgStore::open(&url).await.unwrap());
    // Both migrate at once, as two coordinators starting together do.
    let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
    ra.unwrap();
    rb.unwrap();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (x, y) = tokio::join!(
            a.allocate_ids(Kind::InstanceGroup, 100),
            b.allocate_ids(Kind::InstanceGroup, 100)
        );
        ids.push(x.unwrap());
        ids.push(y.unwrap());
    }
    ids.sort_unstable();
    assert!(ids.windows(2).all(|w| w[1] - w[0] >= 100), "{ids:?}");

    let id = ids[0];
    let mut tx = Tx::new();
    tx.insert(&group(id, "shared"));
    a.commit(tx.ops).await.unwrap();
    let mut via_a: InstanceGroup = a.load(id).await.unwrap().unwrap();
    let mut via_b: InstanceGroup = b.load(id).await.unwrap().unwrap();
    via_a.name = "by-a".into();
    via_b.name = "by-b".into();
    let (mut ta, mut tb) = (Tx::new(), Tx::new());
    ta.update(&mut via_a);
    tb.update(&mut via_b);
    let (ra, rb) = tokio::join!(a.commit(ta.ops), b.commit(tb.ops));
    assert!(
        ra.is_ok() != rb.is_ok(),
        "exactly one of the two wins: {ra:?} {rb:?}"
    );
    let lost = if ra.is_ok() { rb } else { ra };
    assert!(matches!(lost, Err(StoreError::Conflict(..))), "{lost:?}");
    let stored: InstanceGroup = b.load(id).await.unwrap().unwrap();
    assert_eq!(stored.version, 2);
    assert!(stored.name == "by-a" || stored.name == "by-b");

    // A commit on one store makes the other's caches of that kind stale
    // (its generation moves), and leaves other kinds alone.
    // (Its listener counts every kind once when it connects: wait for that.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while b.generation(Kind::Zone) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the listener never connected"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let before = (b.generation(Kind::InstanceGroup), b.generation(Kind::Zone));
    let mut tx = Tx::new();
    tx.insert(&group(ids[1], "announced"));
    a.commit(tx.ops).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while b.generation(Kind::InstanceGroup) == before.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no notice reached the other store"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(b.generation(Kind::Zone), before.1);
}

/// What one coordinator commits to instances reaches the other's views by
/// id, in order; a barrier comes back after everything committed before
/// it; and one coordinator at a time holds the placement lock.
#[tokio::test]
async fn instance_changes_barriers_and_the_placement_lock_cross_coordinators() {
    use std::time::Duration;
    let Some(url) = fresh_pg_database().await else {
        return;
    };
    let a: DynStore = Arc::new(PgStore::open(&url).await.unwrap());
    let b: DynStore = Arc::new(PgStore::open(&url).await.unwrap());
    a.migrate().await.unwrap();
    let mut feed = b.changes().expect("a shared store reports changes");
    assert!(b.changes().is_none(), "given out once");
    async fn next(feed: &mut tokio::sync::mpsc::UnboundedReceiver<Change>) -> Change {
        tokio::time::timeout(std::time::Duration::from_secs(10), feed.recv())
            .await
            .expect("a change within 10 s")
            .expect("the feed stays open")
    }
    // Connecting, the listener cannot know what it missed.
    assert_eq!(next(&mut feed).await, Change::All);

    let id = a.allocate_ids(Kind::Vm, 2).await.unwrap();
    let mut tx = Tx::new();
    tx.insert(&records::Vm {
        id,
        uuid: uuid::Uuid::new_v4().to_string(),
        name: "v1".into(),
        ..Default::default()
    });
    tx.insert(&group(
        a.allocate_ids(Kind::InstanceGroup, 1).await.unwrap(),
        "g",
    ));
    a.commit(tx.ops).await.unwrap();
    // Commits without instances say nothing to the views.
    let mut tx = Tx::new();
    tx.insert(&group(
        a.allocate_ids(Kind::InstanceGroup, 1).await.unwrap(),
        "h",
    ));
    a.commit(tx.ops).await.unwrap();
    b.barrier("t1").await.unwrap();
    assert_eq!(next(&mut feed).await, Change::Vms(vec![id]));
    assert_eq!(next(&mut feed).await, Change::Barrier("t1".into()));
    // Its own commits and the other's barriers are not reported to b.
    let mut tx = Tx::new();
    tx.insert(&records::Vm {
        id: id + 1,
        uuid: uuid::Uuid::new_v4().to_string(),
        name: "v2".into(),
        ..Default::default()
    });
    b.commit(tx.ops).await.unwrap();
    a.barrier("t2").await.unwrap();
    b.barrier("t3").await.unwrap();
    assert_eq!(next(&mut feed).await, Change::Barrier("t3".into()));

    let held = a
        .placement_lock()
        .await
        .unwrap()
        .expect("a lock on a shared store");
    let waiting = tokio::spawn({
        let b = b.clone();
        async move { b.placement_lock().await.map(|h| h.is_some()) }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "both held the placement lock at once"
    );
    drop(held);
    let got = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the lock passed on once let go")
        .unwrap()
        .unwrap();
    assert!(got);
    // A coordinator that gave up waiting leaves no lock behind.
    let held = b.placement_lock().await.unwrap();
    assert!(held.is_some());
    let gave_up = tokio::time::timeout(Duration::from_millis(200), a.placement_lock()).await;
    assert!(gave_up.is_err(), "a took the lock b holds");
    drop(held);
    let again = tokio::time::timeout(Duration::from_secs(10), a.placement_lock())
        .await
        .expect("the lock is free again after an abandoned wait")
        .unwrap();
    assert!(again.is_some());
    // The embedded store needs none of this.
    let dir = tempfile::tempdir().unwrap();
    let local = SqliteStore::open(&dir.path().join("o.db")).await.unwrap();
    assert!(local.changes().is_none());
    assert!(local.placement_lock().await.unwrap().is_none());
}

/// The two engines' schemas mean the same: every table with the same
/// columns (integers 64-bit on both) and the same indexes.
#[tokio::test]
async fn both_engines_build_the_same_schema() {
    let Some(url) = fresh_pg_database().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lite = SqliteStore::open(&dir.path().join("o.db")).await.unwrap();
    lite.migrate().await.unwrap();
    let pg = PgStore::open(&url).await.unwrap();
    pg.migrate().await.unwrap();

    type Schema = std::collections::BTreeMap<String, (Vec<(String, String)>, Vec<String>)>;
    let mut sqlite_schema = Schema::new();
    {
        let c = rusqlite::Connection::open(dir.path().join("o.db")).unwrap();
        let mut tables = c
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap();
        let names: Vec<String> = tables
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        for t in names {
            let mut cols: Vec<(String, String)> = c
                .prepare(&format!("PRAGMA table_info({t})"))
                .unwrap()
                .query_map([], |r| {
                    let ty: String = r.get(2)?;
                    // SQLite's INTEGER is 64-bit, PostgreSQL's BIGINT.
                    let ty = match ty.as_str() {
                        "INTEGER" => "int64".to_string(),
                        "TEXT" => "text".to_string(),
                        other => other.to_string(),
                    };
                    Ok((r.get::<_, String>(1)?, ty))
                })
                .unwrap()
                .map(Result::unwrap)
                .collect();
            cols.sort();
            let mut idx: Vec<String> = c
                .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?1 AND name NOT LIKE 'sqlite_autoindex%'")
                .unwrap()
                .query_map([&t], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            idx.sort();
            sqlite_schema.insert(t, (cols, idx));
        }
    }
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut pg_schema = Schema::new();
    for row in client
        .query(
            "SELECT table_name::TEXT, column_name::TEXT, data_type::TEXT FROM information_schema.columns \
             WHERE table_schema = 'public'",
            &[],
        )
        .await
        .unwrap()
    {
        let ty: String = row.get(2);
        let ty = match ty.as_str() {
            "bigint" => "int64".to_string(),
            other => other.to_string(),
        };
        pg_schema
            .entry(row.get(0))
            .or_default()
            .0
            .push((row.get(1), ty));
    }
    for row in client
        .query(
            "SELECT tablename::TEXT, indexname::TEXT FROM pg_indexes WHERE schemaname = 'public' \
             AND indexname NOT LIKE '%_pkey' AND indexname NOT LIKE '%_key'",
            &[],
        )
        .await
        .unwrap()
    {
        pg_schema.entry(row.get(0)).or_default().1.push(row.get(1));
    }
    for v in pg_schema.values_mut() {
        v.0.sort();
        v.1.sort();
    }
    assert_eq!(
        sqlite_schema.keys().collect::<Vec<_>>(),
        pg_schema.keys().collect::<Vec<_>>()
    );
    for (t, want) in &sqlite_schema {
        assert_eq!(&pg_schema[t], want, "table {t}");
    }
}

/// Both statistics stores keep, replace, find by range, and drop by age
/// alike; on PostgreSQL the tables come from whichever coordinator opens
/// them first, and a second opening finds them.
#[tokio::test]
async fn statistics_stores_behave_alike() {
    use super::stats::{SeriesKey, SeriesKind, SqliteStats, StatsStore, StoredBlock};
    let dir = tempfile::tempdir().unwrap();
    let mut stores: Vec<(&str, Box<dyn StatsStore>)> = vec![(
        "sqlite",
        Box::new(SqliteStats::open(&dir.path().join("stats.db")).unwrap()),
    )];
    if let Some(url) = fresh_pg_database().await {
        let dial = super::pg_tls::Dial::parse(&url).unwrap();
        let (a, b) = tokio::join!(
            super::stats_pg::PgStats::open(dial.clone()),
            super::stats_pg::PgStats::open(dial)
        );
        drop(b.unwrap());
        stores.push(("postgres", Box::new(a.unwrap())));
    }
    let key = SeriesKey {
        kind: SeriesKind::Vm,
        entity: 42,
    };
    let other = SeriesKey {
        kind: SeriesKind::Volume,
        entity: 42,
    };
    let block = |start: i64, end: i64, level: u8, byte: u8| StoredBlock {
        key,
        start_ts: start,
        end_ts: end,
        rows: 3,
        level,
        data: vec![byte; 5],
    };
    for (engine, s) in &stores {
        s.put_tails(vec![(key, vec![1, 2]), (other, vec![3])])
            .await
            .unwrap();
        s.put_tails(vec![(key, vec![9])]).await.unwrap();
        let mut tails = s.tails().await.unwrap();
        tails.sort();
        assert_eq!(tails, vec![(key, vec![9]), (other, vec![3])], "{engine}");
        // Three hourly blocks; the tail of the series goes with them.
        s.put_blocks(
            vec![
                block(0, 99, 0, 1),
                block(100, 199, 0, 2),
                block(200, 299, 0, 3),
            ],
            vec![],
            vec![key],
        )
        .await
        .unwrap();
        assert_eq!(s.tails().await.unwrap(), vec![(other, vec![3])], "{engine}");
        let found: Vec<i64> = s
            .blocks(key, 150, 250)
            .await
            .unwrap()
            .iter()
            .map(|b| b.start_ts)
            .collect();
        assert_eq!(found, vec![100, 200], "{engine}");
        assert!(
            s.blocks(other, 0, 1000).await.unwrap().is_empty(),
            "{engine}"
        );
        // Merged: the first two replaced by one level-1 block.
        s.put_blocks(
            vec![block(0, 199, 1, 7)],
            vec![(key, 0), (key, 100)],
            vec![],
        )
        .await
        .unwrap();
        let all = s.blocks(key, i64::MIN, i64::MAX).await.unwrap();
        let got: Vec<(i64, i64, u8, Vec<u8>)> = all
            .iter()
            .map(|b| (b.start_ts, b.end_ts, b.level, b.data.clone()))
            .collect();
        assert_eq!(
            got,
            vec![(0, 199, 1, vec![7; 5]), (200, 299, 0, vec![3; 5])],
            "{engine}"
        );
        let hot: Vec<i64> = s
            .hot_blocks(key)
            .await
            .unwrap()
            .iter()
            .map(|b| b.start_ts)
            .collect();
        assert_eq!(hot, vec![200], "{engine}");
        // The same block stored again replaces it.
        s.put_blocks(vec![block(200, 300, 0, 4)], vec![], vec![])
            .await
            .unwrap();
        let again = s.blocks(key, 200, 201).await.unwrap();
        assert_eq!(again.len(), 1, "{engine}");
        assert_eq!((again[0].end_ts, again[0].data[0]), (300, 4), "{engine}");
        assert!(s.size_bytes().await.unwrap() > 0, "{engine}");
        assert_eq!(
            s.delete_before(SeriesKind::Vm, 250).await.unwrap(),
            1,
            "{engine}"
        );
        assert_eq!(
            s.delete_before(SeriesKind::Volume, 10_000).await.unwrap(),
            0
        );
        let left: Vec<i64> = s
            .blocks(key, i64::MIN, i64::MAX)
            .await
            .unwrap()
            .iter()
            .map(|b| b.start_ts)
            .collect();
        assert_eq!(left, vec![200], "{engine}");
    }
}

/// With `sslmode=verify-full` and the server's CA the store's connections
/// are TLS (PostgreSQL says so of its own session) and the store works; a
/// CA that did not sign the server's certificate is refused at open.
#[tokio::test]
async fn the_store_speaks_tls_to_a_server_it_verifies() {
    let Some(url) = fresh_pg_database().await else {
        return;
    };
    let Ok(ca) = std::env::var("ORRERY_TEST_PG_CA") else {
        return;
    };
    let tls_url = format!("{url}?sslmode=verify-full&sslrootcert={ca}");
    let store: DynStore = Arc::new(PgStore::open(&tls_url).await.unwrap());
    store.migrate().await.unwrap();
    let id = store.allocate_ids(Kind::InstanceGroup, 1).await.unwrap();
    let mut tx = Tx::new();
    tx.insert(&group(id, "over-tls"));
    store.commit(tx.ops).await.unwrap();
    let g: InstanceGroup = store.load(id).await.unwrap().unwrap();
    assert_eq!(g.name, "over-tls");
    let dial = super::pg_tls::Dial::parse(&tls_url).unwrap();
    let (client, conn) = dial.connect().await.unwrap();
    tokio::spawn(conn);
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ssl, "the session is not TLS");
    // Another CA: the server is not who it says.
    let dir = tempfile::tempdir().unwrap();
    let (other, _) = orrery_tls::Ca::generate("another CA").unwrap();
    let other_ca = dir.path().join("other.pem");
    std::fs::write(&other_ca, other.pem()).unwrap();
    let wrong = format!("{url}?sslmode=require&sslrootcert={}", other_ca.display());
    let e = PgStore::open(&wrong)
        .await
        .err()
        .expect("an unverified server is refused");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
}
