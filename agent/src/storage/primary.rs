//! The primary storage pool: a directory holding instance volumes
//! (`<root>/<uuid>.qcow2`) and the templates they are overlays on
//! (`<root>/templates/<uuid>.<format>`).

use std::collections::HashMap;
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::fs::File;
use tokio::io::AsyncWriteExt;

use super::{normalize_uuid, Checksum, FetchError, ImageFormat, QemuImg, StorageError};

/// Template cache directory under the pool's root.
pub const TEMPLATE_DIR: &str = "templates";

const DIR_MODE: u32 = 0o755;
const IMAGE_MODE: u32 = 0o644;
/// Suffix of files being written; a crash leaves them behind, and
/// [`Primary::init`] removes them.
const PART_SUFFIX: &str = ".part";

/// A volume file found in the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolVolume {
    pub uuid: String,
    pub path: PathBuf,
    /// Bytes allocated on the host (sparse files count only what is
    /// written).
    pub allocated_bytes: u64,
}

pub struct Primary {
    root: PathBuf,
    /// Whether templates are cached here ([`TEMPLATE_DIR`]); a pool of
    /// volumes only (the host's local storage) has no such directory.
    templates: bool,
    qemu_img: QemuImg,
    /// One lock per template file, so concurrent requests for a template
    /// share one download.
    downloads: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
}

/// The volume a disk file holds, told by its name alone: the pool names
/// volume files `<uuid>.qcow2` in lower case, and only templates live in
/// [`TEMPLATE_DIR`]. Which pool directory the file lies in does not matter,
/// since a domain's disks are known by path only (and the pool's location
/// may have been configured differently when the domain was started).
pub fn volume_uuid_of(path: &Path) -> Option<String> {
    let stem = path.file_name()?.to_str()?.strip_suffix(".qcow2")?;
    let in_templates = path
        .parent()
        .and_then(Path::file_name)
        .is_some_and(|d| d == TEMPLATE_DIR);
    match normalize_uuid(stem) {
        Ok(uuid) if uuid == stem && !in_templates => Some(uuid),
        _ => None,
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), StorageError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| StorageError::io(path, e))
}

/// Creates `path` and whatever is missing above it. Every directory made
/// here gets [`DIR_MODE`] whatever the umask, since libvirt's qemu user must
/// traverse all of them (a pool at `/var/lib/orrery/primary` may be the
/// first thing under `/var/lib/orrery`); directories that existed keep
/// their mode, which is the operator's to choose.
fn create_dir(path: &Path) -> Result<(), StorageError> {
    let missing: Vec<&Path> = path
        .ancestors()
        .skip(1)
        .take_while(|p| !p.as_os_str().is_empty() && !p.exists())
        .collect();
    std::fs::create_dir_all(path).map_err(|e| StorageError::io(path, e))?;
    for dir in missing {
        set_mode(dir, DIR_MODE)?;
    }
    set_mode(path, DIR_MODE)
}

/// Moves `from` to `to` unless `to` exists, in one step: a hard link fails
/// on an existing name where a rename would replace it.
fn publish_no_clobber(from: &Path, to: &Path, uuid: &str) -> Result<(), StorageError> {
    let linked = std::fs::hard_link(from, to);
    let _ = std::fs::remove_file(from);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(StorageError::AlreadyExists(uuid.to_string()))
        }
        Err(e) => Err(StorageError::io(to, e)),
    }
}

/// Makes a rename in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io(dir, e))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::io("(storage task)", std::io::Error::other(e)))?
}

/// Removes a file on drop unless disarmed: a failed or abandoned operation
/// leaves no partial image behind.
struct RemoveOnDrop(Option<PathBuf>);

impl RemoveOnDrop {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Primary {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Primary {
            root: root.into(),
            templates: true,
            qemu_img: QemuImg::new(),
            downloads: Mutex::new(HashMap::new()),
        }
    }

    /// A pool of volumes only: [`Primary::init`] makes no template
    /// directory (root volumes here are overlays of templates cached in
    /// another pool).
    pub fn without_templates(mut self) -> Self {
        self.templates = false;
        self
    }

    pub fn with_qemu_img(mut self, qemu_img: QemuImg) -> Self {
        self.qemu_img = qemu_img;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn qemu_img(&self) -> &QemuImg {
        &self.qemu_img
    }

    fn template_dir(&self) -> PathBuf {
        self.root.join(TEMPLATE_DIR)
    }

    /// Creates the pool's directories and removes partial files left by a
    /// crash.
    pub async fn init(&self) -> Result<(), StorageError> {
        let root = self.root.clone();
        let templates = self.templates.then(|| self.template_dir());
        blocking(move || {
            create_dir(&root)?;
            if let Some(t) = &templates {
                create_dir(t)?;
            }
            for dir in std::iter::once(&root).chain(&templates) {
                let entries = std::fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))?;
                for entry in entries.flatten() {
                    let name = entry.file_name();
                    let name = name.to_string_lossy();
                    if name.starts_with('.') && name.ends_with(PART_SUFFIX) {
                        let _ = std::fs::remove_file(entry.path());
                    }
                }
            }
            Ok(())
        })
        .await
    }

    pub fn volume_path(&self, uuid: &str) -> Result<PathBuf, StorageError> {
        Ok(self.root.join(format!("{}.qcow2", normalize_uuid(uuid)?)))
    }

    /// Names of the internal snapshots inside a volume's image.
    pub async fn volume_snapshots(&self, uuid: &str) -> Result<Vec<String>, StorageError> {
        let path = self.volume_path(uuid)?;
        Ok(self
            .qemu_img
            .info(&path, Some(ImageFormat::Qcow2))
            .await?
            .snapshots)
    }

    /// Creates, applies or deletes an internal snapshot of a volume whose
    /// instance is not running.
    pub async fn snapshot_volume(
        &self,
        uuid: &str,
        action: super::SnapshotAction,
        name: &str,
    ) -> Result<(), StorageError> {
        let path = self.volume_path(uuid)?;
        self.qemu_img.snapshot(&path, action, name).await
    }

    pub fn template_cache(&self, uuid: &str, format: ImageFormat) -> Result<PathBuf, StorageError> {
        Ok(self
            .template_dir()
            .join(format!("{}.{}", normalize_uuid(uuid)?, format.as_str())))
    }

    fn part_path(final_path: &Path) -> PathBuf {
        let name = final_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        final_path.with_file_name(format!(".{name}{PART_SUFFIX}"))
    }

    fn download_lock(&self, path: &Path) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.downloads.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(map.entry(path.to_path_buf()).or_default())
    }

    fn release_download_lock(&self, path: &Path, lock: Arc<tokio::sync::Mutex<()>>) {
        let mut map = self.downloads.lock().unwrap_or_else(|e| e.into_inner());
        // Clones are only taken under the map's lock, so nobody can be about
        // to wait on this one when only the map and we hold it.
        if Arc::strong_count(&lock) == 2 {
            map.remove(path);
        }
    }

    /// The cached template, downloading it first if this host does not
    /// have it yet.
    ///
    /// `fetch` is handed an empty file, writes the template into it and
    /// hands it back. Concurrent callers for one template wait for a
    /// single download; the others' `fetch` is not called. The download is
    /// checked against `checksum` (when given) and must not be an image
    /// with a backing file; only then does it appear, by an atomic rename,
    /// at [`Primary::template_cache`]. A failed download leaves nothing.
    pub async fn ensure_template<F, Fut, E>(
        &self,
        uuid: &str,
        format: ImageFormat,
        checksum: Option<&str>,
        fetch: F,
    ) -> Result<PathBuf, StorageError>
    where
        F: FnOnce(File) -> Fut,
        Fut: Future<Output = Result<File, E>>,
        E: Into<FetchError>,
    {
        let path = self.template_cache(uuid, format)?;
        let uuid = normalize_uuid(uuid)?;
        let checksum: Option<Checksum> = checksum.map(str::parse).transpose()?;
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok(path);
        }
        let lock = self.download_lock(&path);
        let result = {
            let _guard = lock.lock().await;
            if tokio::fs::try_exists(&path).await.unwrap_or(false) {
                Ok(path.clone())
            } else {
                self.download(&uuid, format, checksum, &path, fetch).await
            }
        };
        self.release_download_lock(&path, lock);
        result
    }

    async fn download<F, Fut, E>(
        &self,
        uuid: &str,
        format: ImageFormat,
        checksum: Option<Checksum>,
        path: &Path,
        fetch: F,
    ) -> Result<PathBuf, StorageError>
    where
        F: FnOnce(File) -> Fut,
        Fut: Future<Output = Result<File, E>>,
        E: Into<FetchError>,
    {
        let dir = self.template_dir();
        {
            let dir = dir.clone();
            blocking(move || create_dir(&dir)).await?;
        }
        let part = Primary::part_path(path);
        let file = File::create(&part)
            .await
            .map_err(|e| StorageError::io(&part, e))?;
        let mut cleanup = RemoveOnDrop(Some(part.clone()));

        let mut file = fetch(file).await.map_err(|e| StorageError::Fetch {
            uuid: uuid.to_string(),
            source: e.into(),
        })?;
        // tokio writes in the background: only a flush says all of it
        // reached the file.
        file.flush().await.map_err(|e| StorageError::io(&part, e))?;
        file.sync_all()
            .await
            .map_err(|e| StorageError::io(&part, e))?;
        drop(file);

        if let Some(expected) = checksum {
            let p = part.clone();
            let actual =
                blocking(move || expected.digest_of_file(&p).map(|a| (expected, a))).await?;
            if actual.0 != actual.1 {
                return Err(StorageError::ChecksumMismatch {
                    uuid: uuid.to_string(),
                    expected: actual.0.to_string(),
                    actual: actual.1.to_string(),
                });
            }
        }

        let info = self.qemu_img.info(&part, Some(format)).await?;
        if let Some(backing) = &info.backing {
            return Err(StorageError::UnsafeImage {
                uuid: uuid.to_string(),
                reason: format!("it names a backing file ({})", backing.display()),
            });
        }

        let (p, dest) = (part.clone(), path.to_path_buf());
        blocking(move || {
            set_mode(&p, IMAGE_MODE)?;
            std::fs::rename(&p, &dest).map_err(|e| StorageError::io(&dest, e))?;
            sync_dir(dest.parent().unwrap_or(Path::new("/")))
        })
        .await?;
        cleanup.disarm();
        Ok(path.to_path_buf())
    }

    /// Writes a new image at `part` with `create`, then publishes it as
    /// `dest` unless that exists.
    async fn create_volume<Fut>(
        &self,
        uuid: &str,
        dest: PathBuf,
        create: impl FnOnce(PathBuf) -> Fut,
    ) -> Result<PathBuf, StorageError>
    where
        Fut: Future<Output = Result<(), StorageError>>,
    {
        if tokio::fs::try_exists(&dest).await.unwrap_or(false) {
            return Err(StorageError::AlreadyExists(uuid.to_string()));
        }
        {
            let root = self.root.clone();
            blocking(move || create_dir(&root)).await?;
        }
        let part = Primary::part_path(&dest);
        let mut cleanup = RemoveOnDrop(Some(part.clone()));
        create(part.clone()).await?;
        let (p, d, id) = (part, dest.clone(), uuid.to_string());
        blocking(move || {
            set_mode(&p, IMAGE_MODE)?;
            publish_no_clobber(&p, &d, &id)?;
            sync_dir(d.parent().unwrap_or(Path::new("/")))
        })
        .await?;
        cleanup.disarm();
        Ok(dest)
    }

    /// A new volume `uuid` whose content `fill` writes into the path it is
    /// given (a part file, published only when complete).
    pub async fn create_filled<Fut>(
        &self,
        uuid: &str,
        fill: impl FnOnce(PathBuf) -> Fut,
    ) -> Result<PathBuf, StorageError>
    where
        Fut: Future<Output = Result<(), StorageError>>,
    {
        let dest = self.volume_path(uuid)?;
        let uuid = normalize_uuid(uuid)?;
        self.create_volume(&uuid, dest, fill).await
    }

    /// Replaces volume `uuid`'s content with what `fill` writes: into a part
    /// file first, renamed over the volume only when complete, so a failure
    /// leaves the volume as it was.
    pub async fn replace_filled<Fut>(
        &self,
        uuid: &str,
        fill: impl FnOnce(PathBuf) -> Fut,
    ) -> Result<PathBuf, StorageError>
    where
        Fut: Future<Output = Result<(), StorageError>>,
    {
        let dest = self.volume_path(uuid)?;
        let part = Primary::part_path(&dest);
        let mut cleanup = RemoveOnDrop(Some(part.clone()));
        fill(part.clone()).await?;
        let (p, d) = (part, dest.clone());
        blocking(move || {
            set_mode(&p, IMAGE_MODE)?;
            std::fs::rename(&p, &d).map_err(|e| StorageError::io(&d, e))?;
            sync_dir(d.parent().unwrap_or(Path::new("/")))
        })
        .await?;
        cleanup.disarm();
        Ok(dest)
    }

    /// A scratch file in the pool for `name` (removed by the caller; one a
    /// crash leaves behind goes at the next start, as part files do).
    pub fn scratch_path(&self, name: &str) -> Result<PathBuf, StorageError> {
        let name = normalize_uuid(name)?;
        Ok(self.root.join(format!(".scratch-{name}{PART_SUFFIX}")))
    }

    /// A root volume: a qcow2 overlay on `template`, as large as the
    /// template or `size_bytes`, whichever is larger (a disk cannot be
    /// smaller than the image it starts from).
    pub async fn create_root(
        &self,
        volume_uuid: &str,
        template: &Path,
        template_format: ImageFormat,
        size_bytes: u64,
    ) -> Result<PathBuf, StorageError> {
        let dest = self.volume_path(volume_uuid)?;
        let uuid = normalize_uuid(volume_uuid)?;
        let info = self.qemu_img.info(template, Some(template_format)).await?;
        let size = (size_bytes > info.virtual_size).then_some(size_bytes);
        let template = template.to_path_buf();
        self.create_volume(&uuid, dest, |part| async move {
            self.qemu_img
                .create_overlay(&template, template_format, &part, size)
                .await
        })
        .await
    }

    /// An empty qcow2 data volume of `size_bytes`.
    pub async fn create_data(&self, uuid: &str, size_bytes: u64) -> Result<PathBuf, StorageError> {
        let dest = self.volume_path(uuid)?;
        let uuid = normalize_uuid(uuid)?;
        self.create_volume(&uuid, dest, |part| async move {
            self.qemu_img
                .create(&part, ImageFormat::Qcow2, size_bytes)
                .await
        })
        .await
    }

    /// A standalone copy of another image (its backing chain flattened) as
    /// this pool's volume `uuid`: a volume moving between pools.
    pub async fn copy_in(&self, uuid: &str, source: &Path) -> Result<PathBuf, StorageError> {
        let dest = self.volume_path(uuid)?;
        let uuid = normalize_uuid(uuid)?;
        let source = source.to_path_buf();
        self.create_volume(&uuid, dest, |part| async move {
            self.qemu_img
                .convert(&source, ImageFormat::Qcow2, &part, ImageFormat::Qcow2)
                .await
        })
        .await
    }

    /// Removes a volume; `false` when there was none.
    pub async fn delete(&self, uuid: &str) -> Result<bool, StorageError> {
        let path = self.volume_path(uuid)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StorageError::io(path, e)),
        }
    }

    /// The pool's volumes, by UUID. Templates and partial files are not
    /// volumes.
    pub async fn list(&self) -> Result<Vec<PoolVolume>, StorageError> {
        let root = self.root.clone();
        blocking(move || {
            let entries = match std::fs::read_dir(&root) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(StorageError::io(&root, e)),
            };
            let mut out = Vec::new();
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".qcow2")) else {
                    continue;
                };
                let Ok(uuid) = normalize_uuid(stem) else {
                    continue;
                };
                // File names are written lower-case; anything else was not
                // made here.
                if uuid != stem {
                    continue;
                }
                let Ok(meta) = entry.metadata() else {
                    continue;
                };
                if !meta.is_file() {
                    continue;
                }
                out.push(PoolVolume {
                    uuid,
                    path: entry.path(),
                    allocated_bytes: std::os::unix::fs::MetadataExt::blocks(&meta) * 512,
                });
            }
            out.sort_by(|a, b| a.uuid.cmp(&b.uuid));
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_files_are_told_by_name() {
        let pool = Primary::new("/var/lib/orrery/primary");
        let uuid = "0c5f7d1e-aaaa-bbbb-cccc-000000000001";
        let path = pool.volume_path(uuid).unwrap();
        assert_eq!(volume_uuid_of(&path).as_deref(), Some(uuid));
        // Another pool location: still a volume file.
        assert_eq!(
            volume_uuid_of(Path::new(&format!("/srv/pool/{uuid}.qcow2"))).as_deref(),
            Some(uuid)
        );
        let template = pool.template_cache(uuid, ImageFormat::Qcow2).unwrap();
        for other in [
            template.as_path(),
            Path::new("/var/lib/orrery/primary/0C5F7D1E-AAAA-BBBB-CCCC-000000000001.qcow2"),
            Path::new("/var/lib/orrery/primary/root.qcow2"),
            Path::new("/var/lib/orrery/primary/0c5f7d1e-aaaa-bbbb-cccc-000000000001.iso"),
            Path::new("/dev/sdb"),
            Path::new(""),
        ] {
            assert_eq!(volume_uuid_of(other), None, "{}", other.display());
        }
    }
    use std::sync::atomic::{AtomicUsize, Ordering};

    const T1: &str = "11111111-2222-3333-4444-555555555555";
    const V1: &str = "aaaaaaaa-bbbb-cccc-dddd-000000000001";
    const V2: &str = "aaaaaaaa-bbbb-cccc-dddd-000000000002";

    /// A stand-in for qemu-img: logs its arguments, creates the file a
    /// `create` names, prints `info.json` for `info`, and fails with the
    /// content of `fail` as its error output when that file exists.
    struct FakeQemuImg {
        dir: tempfile::TempDir,
    }

    const SCRIPT: &str = r#"#!/bin/sh
dir=$(dirname "$0")
printf '%s\n' "$*" >> "$dir/calls.log"
if [ -e "$dir/fail" ]; then cat "$dir/fail" >&2; exit 1; fi
case "$1" in
create)
    shift
    while [ $# -gt 0 ]; do
        case "$1" in
        -q) shift ;;
        -f|-b|-F) shift 2 ;;
        *) printf 'image\n' > "$1"; break ;;
        esac
    done ;;
info) cat "$dir/info.json" ;;
esac
"#;

    impl FakeQemuImg {
        fn new(virtual_size: u64) -> FakeQemuImg {
            let dir = tempfile::tempdir().unwrap();
            let script = dir.path().join("qemu-img");
            std::fs::write(&script, SCRIPT).unwrap();
            set_mode(&script, 0o755).unwrap();
            let f = FakeQemuImg { dir };
            f.set_info(&format!(
                r#"{{"virtual-size": {virtual_size}, "format": "qcow2"}}"#
            ));
            f
        }

        fn set_info(&self, json: &str) {
            std::fs::write(self.dir.path().join("info.json"), json).unwrap();
        }

        fn fail_with(&self, stderr: &str) {
            std::fs::write(self.dir.path().join("fail"), stderr).unwrap();
        }

        fn qemu_img(&self) -> QemuImg {
            QemuImg::with_program(self.dir.path().join("qemu-img"))
        }

        fn calls(&self) -> Vec<String> {
            std::fs::read_to_string(self.dir.path().join("calls.log"))
                .unwrap_or_default()
                .lines()
                .map(String::from)
                .collect()
        }
    }

    fn pool(fake: &FakeQemuImg) -> (tempfile::TempDir, Primary) {
        let state = tempfile::tempdir().unwrap();
        let p = Primary::new(state.path().join("primary")).with_qemu_img(fake.qemu_img());
        (state, p)
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    async fn write_all(mut f: File, data: &'static [u8]) -> Result<File, std::io::Error> {
        f.write_all(data).await?;
        Ok(f)
    }

    #[tokio::test]
    async fn paths() {
        let fake = FakeQemuImg::new(1);
        let (state, p) = pool(&fake);
        let root = state.path().join("primary");
        assert_eq!(p.root(), root);
        assert_eq!(
            p.volume_path(&V1.to_uppercase()).unwrap(),
            root.join(format!("{V1}.qcow2"))
        );
        assert_eq!(
            p.template_cache(T1, ImageFormat::Raw).unwrap(),
            root.join(format!("templates/{T1}.raw"))
        );
        assert!(matches!(
            p.volume_path("../x"),
            Err(StorageError::InvalidUuid(_))
        ));
    }

    #[tokio::test]
    async fn init_makes_reachable_directories_and_drops_partial_files() {
        let fake = FakeQemuImg::new(1);
        let (_state, p) = pool(&fake);
        p.init().await.unwrap();
        let stale = p.root().join(format!(".{V1}.qcow2.part"));
        std::fs::write(&stale, b"x").unwrap();
        p.init().await.unwrap();
        assert!(!stale.exists());
        assert_eq!(mode(p.root()), 0o755);
        assert_eq!(mode(&p.root().join(TEMPLATE_DIR)), 0o755);

        let volumes_only = Primary::new(p.root().join("local"))
            .with_qemu_img(fake.qemu_img())
            .without_templates();
        volumes_only.init().await.unwrap();
        let stale = volumes_only.root().join(format!(".{V1}.qcow2.part"));
        std::fs::write(&stale, b"x").unwrap();
        volumes_only.init().await.unwrap();
        assert!(!stale.exists());
        assert_eq!(mode(volumes_only.root()), 0o755);
        assert!(!volumes_only.root().join(TEMPLATE_DIR).exists());
    }

    #[tokio::test]
    async fn init_opens_the_directories_it_creates_and_no_others() {
        let fake = FakeQemuImg::new(1);
        let base = tempfile::tempdir().unwrap();
        std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let p = Primary::new(base.path().join("a/b/primary")).with_qemu_img(fake.qemu_img());
        // SAFETY: umask only changes this process's file creation mask; a
        // restrictive one is what the created directories must not inherit.
        let old = unsafe { libc::umask(0o077) };
        let result = p.init().await;
        // SAFETY: as above, restoring the previous mask.
        unsafe { libc::umask(old) };
        result.unwrap();
        assert_eq!(mode(&base.path().join("a")), 0o755);
        assert_eq!(mode(&base.path().join("a/b")), 0o755);
        assert_eq!(mode(p.root()), 0o755);
        // Not ours to open up.
        assert_eq!(mode(base.path()), 0o700);
    }

    #[tokio::test]
    async fn template_downloaded_once_for_concurrent_callers() {
        let fake = FakeQemuImg::new(1 << 20);
        let (_state, p) = pool(&fake);
        let calls = AtomicUsize::new(0);
        let sha = "{SHA-256}ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let fetch = |file: File| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                write_all(file, b"abc").await
            }
        };
        let (a, b, c) = tokio::join!(
            p.ensure_template(T1, ImageFormat::Qcow2, Some(sha), fetch),
            p.ensure_template(T1, ImageFormat::Qcow2, Some(sha), fetch),
            p.ensure_template(T1, ImageFormat::Qcow2, Some(sha), fetch),
        );
        let path = a.unwrap();
        assert_eq!(b.unwrap(), path);
        assert_eq!(c.unwrap(), path);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(std::fs::read(&path).unwrap(), b"abc");
        assert_eq!(mode(&path), 0o644);
        // Cached: later callers do not fetch at all.
        p.ensure_template(T1, ImageFormat::Qcow2, Some(sha), fetch)
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(p.downloads.lock().unwrap().is_empty());
        // The download was checked as the declared format.
        assert!(fake
            .calls()
            .iter()
            .any(|c| c.starts_with("info --output=json --force-share -f qcow2 ")));
    }

    fn leftovers(p: &Primary) -> Vec<String> {
        std::fs::read_dir(p.root().join(TEMPLATE_DIR))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn checksum_mismatch_leaves_nothing() {
        let fake = FakeQemuImg::new(1);
        let (_state, p) = pool(&fake);
        let err = p
            .ensure_template(
                T1,
                ImageFormat::Raw,
                Some("900150983cd24fb0d6963f7d28e17f72"),
                |f| write_all(f, b"abd"),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, StorageError::ChecksumMismatch { .. }),
            "{err}"
        );
        assert!(leftovers(&p).is_empty(), "{:?}", leftovers(&p));
        // A good download afterwards succeeds.
        p.ensure_template(
            T1,
            ImageFormat::Raw,
            Some("900150983cd24fb0d6963f7d28e17f72"),
            |f| write_all(f, b"abc"),
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn bad_checksum_is_refused_before_downloading() {
        let fake = FakeQemuImg::new(1);
        let (_state, p) = pool(&fake);
        let err = p
            .ensure_template(
                T1,
                ImageFormat::Raw,
                Some("{CRC32}1234"),
                |f: File| async move {
                    assert!(
                        f.metadata().await.is_err(),
                        "fetched despite a bad checksum"
                    );
                    Ok::<File, std::io::Error>(f)
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::InvalidChecksum(_)));
    }

    #[tokio::test]
    async fn failed_download_leaves_nothing() {
        let fake = FakeQemuImg::new(1);
        let (_state, p) = pool(&fake);
        let err = p
            .ensure_template(T1, ImageFormat::Qcow2, None, |mut f: File| async move {
                f.write_all(b"partial").await.unwrap();
                Err::<File, _>(std::io::Error::other("connection reset"))
            })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("connection reset"), "{err}");
        assert!(leftovers(&p).is_empty(), "{:?}", leftovers(&p));
    }

    #[tokio::test]
    async fn template_with_a_backing_file_is_refused() {
        let fake = FakeQemuImg::new(1);
        fake.set_info(
            r#"{"virtual-size": 1, "format": "qcow2", "backing-filename": "/etc/shadow"}"#,
        );
        let (_state, p) = pool(&fake);
        let err = p
            .ensure_template(T1, ImageFormat::Qcow2, None, |f| write_all(f, b"x"))
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::UnsafeImage { .. }), "{err}");
        assert!(leftovers(&p).is_empty());
    }

    #[tokio::test]
    async fn root_volume_grows_only_beyond_the_template() {
        let fake = FakeQemuImg::new(1000);
        let (_state, p) = pool(&fake);
        let template = p
            .ensure_template(T1, ImageFormat::Qcow2, None, |f| write_all(f, b"t"))
            .await
            .unwrap();
        let v1 = p
            .create_root(V1, &template, ImageFormat::Qcow2, 500)
            .await
            .unwrap();
        let v2 = p
            .create_root(V2, &template, ImageFormat::Qcow2, 4096)
            .await
            .unwrap();
        assert_eq!(v1, p.volume_path(V1).unwrap());
        assert_eq!(mode(&v1), 0o644);
        let creates: Vec<String> = fake
            .calls()
            .into_iter()
            .filter(|c| c.starts_with("create"))
            .collect();
        let t = template.display();
        assert_eq!(
            creates,
            vec![
                format!(
                    "create -q -f qcow2 -b {t} -F qcow2 {}/.{V1}.qcow2.part",
                    p.root().display()
                ),
                format!(
                    "create -q -f qcow2 -b {t} -F qcow2 {}/.{V2}.qcow2.part 4096",
                    p.root().display()
                ),
            ]
        );
        assert!(v2.exists());
        let err = p
            .create_root(V1, &template, ImageFormat::Qcow2, 1)
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::AlreadyExists(_)));
    }

    #[tokio::test]
    async fn qemu_img_errors_carry_its_output_and_leave_nothing() {
        let fake = FakeQemuImg::new(1);
        let (_state, p) = pool(&fake);
        fake.fail_with("qemu-img: Could not create: No space left on device\n");
        let err = p.create_data(V1, 1 << 30).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains("No space left on device"), "{text}");
        assert!(text.contains("create -q -f qcow2"), "{text}");
        assert!(p.list().await.unwrap().is_empty());
        assert_eq!(std::fs::read_dir(p.root()).unwrap().count(), 0);

        let missing = QemuImg::with_program("/nonexistent/qemu-img");
        let err = missing.info(Path::new("/x"), None).await.unwrap_err();
        assert!(matches!(err, StorageError::Spawn { .. }), "{err}");
    }

    #[tokio::test]
    async fn data_volumes_list_and_delete() {
        let fake = FakeQemuImg::new(1);
        let (_state, p) = pool(&fake);
        assert!(p.list().await.unwrap().is_empty());
        p.create_data(V2, 1 << 20).await.unwrap();
        p.create_data(V1, 1 << 20).await.unwrap();
        // Not volumes: a template, a partial file, a stranger.
        p.ensure_template(T1, ImageFormat::Qcow2, None, |f| write_all(f, b"t"))
            .await
            .unwrap();
        std::fs::write(p.root().join(format!(".{V1}.qcow2.part")), b"").unwrap();
        std::fs::write(p.root().join("notes.qcow2"), b"").unwrap();
        let list = p.list().await.unwrap();
        assert_eq!(
            list.iter().map(|v| v.uuid.as_str()).collect::<Vec<_>>(),
            vec![V1, V2]
        );
        assert_eq!(list[0].path, p.volume_path(V1).unwrap());
        assert!(fake.calls().contains(&format!(
            "create -q -f qcow2 {}/.{V2}.qcow2.part 1048576",
            p.root().display()
        )));
        assert!(p.delete(V1).await.unwrap());
        assert!(!p.delete(V1).await.unwrap());
        assert_eq!(p.list().await.unwrap().len(), 1);
    }
}
