//! `QemuImg` and the primary pool with the real `qemu-img`.
//!
//! Skipped, with a message, when qemu-img is not installed; with
//! `ORRERY_REQUIRE_LIBVIRT=1` (the hypervisor stack is expected) that is a
//! failure instead.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use orrery_agent::storage::{Checksum, ImageFormat, Primary, QemuImg, StorageError};
use tokio::io::AsyncWriteExt;

const MIB: u64 = 1 << 20;
const T1: &str = "11111111-2222-3333-4444-555555555555";
const T2: &str = "11111111-2222-3333-4444-666666666666";
const V1: &str = "aaaaaaaa-bbbb-cccc-dddd-000000000001";
const V2: &str = "aaaaaaaa-bbbb-cccc-dddd-000000000002";
const V3: &str = "aaaaaaaa-bbbb-cccc-dddd-000000000003";

fn qemu_img() -> Option<QemuImg> {
    let ok = std::process::Command::new("qemu-img")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(QemuImg::new());
    }
    if std::env::var("ORRERY_REQUIRE_LIBVIRT").as_deref() == Ok("1") {
        panic!("ORRERY_REQUIRE_LIBVIRT=1 but qemu-img is not installed");
    }
    eprintln!("skipping: qemu-img is not installed");
    None
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[tokio::test]
async fn qemu_img_commands() {
    let Some(q) = qemu_img() else { return };
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("a.raw");
    let qcow = dir.path().join("a.qcow2");
    let overlay = dir.path().join("o.qcow2");

    q.create(&raw, ImageFormat::Raw, MIB).await.unwrap();
    let info = q.info(&raw, Some(ImageFormat::Raw)).await.unwrap();
    assert_eq!((info.virtual_size, info.format.as_str()), (MIB, "raw"));

    q.convert(&raw, ImageFormat::Raw, &qcow, ImageFormat::Qcow2)
        .await
        .unwrap();
    let info = q.info(&qcow, None).await.unwrap();
    assert_eq!((info.virtual_size, info.format.as_str()), (MIB, "qcow2"));
    assert_eq!(info.backing, None);

    q.resize(&qcow, ImageFormat::Qcow2, 3 * MIB, false)
        .await
        .unwrap();
    assert_eq!(q.info(&qcow, None).await.unwrap().virtual_size, 3 * MIB);
    // Shrinking must be asked for; qemu-img's reason comes back.
    let err = q
        .resize(&qcow, ImageFormat::Qcow2, 2 * MIB, false)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StorageError::QemuImg { stderr, .. } if stderr.contains("shrink")),
        "{err}"
    );
    q.resize(&qcow, ImageFormat::Qcow2, 2 * MIB, true)
        .await
        .unwrap();
    assert_eq!(q.info(&qcow, None).await.unwrap().virtual_size, 2 * MIB);

    q.create_overlay(&qcow, ImageFormat::Qcow2, &overlay, None)
        .await
        .unwrap();
    let info = q.info(&overlay, Some(ImageFormat::Qcow2)).await.unwrap();
    assert_eq!(info.virtual_size, 2 * MIB);
    assert_eq!(info.backing.as_deref(), Some(qcow.as_path()));
    assert_eq!(info.backing_format.as_deref(), Some("qcow2"));

    let err = q
        .info(&dir.path().join("missing.qcow2"), None)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("missing.qcow2") && text.contains("info"),
        "{text}"
    );
    assert!(matches!(err, StorageError::QemuImg { ref stderr, .. } if !stderr.is_empty()));
}

/// A small qcow2 template and its SHA-256.
async fn make_template(q: &QemuImg, dir: &Path, size: u64) -> (PathBuf, String) {
    let path = dir.join("source.qcow2");
    q.create(&path, ImageFormat::Qcow2, size).await.unwrap();
    let sha: Checksum = format!("{{SHA-256}}{}", "0".repeat(64)).parse().unwrap();
    let digest = sha.digest_of_file(&path).unwrap();
    (path, digest.to_string())
}

type FetchFuture = Pin<Box<dyn Future<Output = std::io::Result<tokio::fs::File>> + Send>>;

/// A download that copies a local file.
fn copy_into(source: PathBuf) -> impl FnOnce(tokio::fs::File) -> FetchFuture {
    move |mut f| {
        Box::pin(async move {
            let bytes = tokio::fs::read(&source).await?;
            f.write_all(&bytes).await?;
            Ok(f)
        })
    }
}

#[tokio::test]
async fn primary_pool() {
    let Some(q) = qemu_img() else { return };
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let (source, sha) = make_template(&q, src.path(), 8 * MIB).await;

    let pool = Primary::new(state.path().join("primary"));
    pool.init().await.unwrap();
    let template = pool
        .ensure_template(
            T1,
            ImageFormat::Qcow2,
            Some(&sha),
            copy_into(source.clone()),
        )
        .await
        .unwrap();
    assert_eq!(
        template,
        pool.template_cache(T1, ImageFormat::Qcow2).unwrap()
    );
    assert_eq!(mode(&template), 0o644);
    assert_eq!(mode(pool.root()), 0o755);
    // Cached: not fetched again (this fetch would fail).
    let again = pool
        .ensure_template(T1, ImageFormat::Qcow2, Some(&sha), |_f| async {
            Err::<tokio::fs::File, _>(std::io::Error::other("must not be called"))
        })
        .await
        .unwrap();
    assert_eq!(again, template);

    // Larger than the template: grown. Smaller: the template's size.
    let big = pool
        .create_root(V1, &template, ImageFormat::Qcow2, 16 * MIB)
        .await
        .unwrap();
    let small = pool
        .create_root(V2, &template, ImageFormat::Qcow2, MIB)
        .await
        .unwrap();
    for (path, size) in [(&big, 16 * MIB), (&small, 8 * MIB)] {
        let info = q.info(path, Some(ImageFormat::Qcow2)).await.unwrap();
        assert_eq!(info.virtual_size, size, "{}", path.display());
        assert_eq!(info.backing.as_deref(), Some(template.as_path()));
        assert_eq!(mode(path), 0o644);
    }
    let data = pool.create_data(V3, 4 * MIB).await.unwrap();
    let info = q.info(&data, Some(ImageFormat::Qcow2)).await.unwrap();
    assert_eq!((info.virtual_size, info.backing), (4 * MIB, None));
    assert!(matches!(
        pool.create_data(V3, MIB).await,
        Err(StorageError::AlreadyExists(_))
    ));

    let listed: Vec<String> = pool
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.uuid)
        .collect();
    assert_eq!(listed, vec![V1, V2, V3]);
    assert!(pool.delete(V2).await.unwrap());
    assert!(!pool.delete(V2).await.unwrap());
    assert_eq!(pool.list().await.unwrap().len(), 2);

    // A wrong checksum leaves no template behind.
    let err = pool
        .ensure_template(
            T2,
            ImageFormat::Qcow2,
            Some(&format!("{{SHA-256}}{}", "ab".repeat(32))),
            copy_into(source.clone()),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::ChecksumMismatch { .. }),
        "{err}"
    );
    assert!(!pool
        .template_cache(T2, ImageFormat::Qcow2)
        .unwrap()
        .exists());
}

#[tokio::test]
async fn template_naming_a_backing_file_is_refused() {
    let Some(q) = qemu_img() else { return };
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let (base, _) = make_template(&q, src.path(), MIB).await;
    let sneaky = src.path().join("sneaky.qcow2");
    q.create_overlay(&base, ImageFormat::Qcow2, &sneaky, None)
        .await
        .unwrap();

    let pool = Primary::new(state.path().join("primary"));
    let err = pool
        .ensure_template(T1, ImageFormat::Qcow2, None, copy_into(sneaky.clone()))
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::UnsafeImage { .. }), "{err}");
    assert!(!pool
        .template_cache(T1, ImageFormat::Qcow2)
        .unwrap()
        .exists());

    // Declared raw, the same bytes are only data: QEMU will read them as
    // raw and never follow the header.
    let raw = pool
        .ensure_template(T1, ImageFormat::Raw, None, copy_into(sneaky))
        .await
        .unwrap();
    let info = q.info(&raw, Some(ImageFormat::Raw)).await.unwrap();
    assert_eq!(info.backing, None);
}
