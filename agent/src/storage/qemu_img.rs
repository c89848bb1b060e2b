//! `qemu-img` invocations as typed values, and a runner for them.
//!
//! Formats are always given explicitly: letting qemu-img probe a raw image
//! whose content happens to look like qcow2 would follow whatever backing
//! file that content names.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr;

use serde::Deserialize;

use super::StorageError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageFormat {
    Qcow2,
    Raw,
}

impl ImageFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Qcow2 => "qcow2",
            ImageFormat::Raw => "raw",
        }
    }
}

impl fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ImageFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "qcow2" => Ok(ImageFormat::Qcow2),
            "raw" => Ok(ImageFormat::Raw),
            other => Err(format!("unsupported image format {other:?}")),
        }
    }
}

/// What `qemu-img info` reports about an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub virtual_size: u64,
    /// As qemu-img names it (`qcow2`, `raw`, `vmdk`, ...).
    pub format: String,
    /// Bytes allocated on the host.
    pub actual_size: Option<u64>,
    /// Backing file, resolved against the image's directory.
    pub backing: Option<PathBuf>,
    pub backing_format: Option<String>,
    /// Names of the image's internal snapshots, oldest first.
    pub snapshots: Vec<String>,
}

#[derive(Deserialize)]
struct SnapshotJson {
    name: String,
}

#[derive(Deserialize)]
struct InfoJson {
    #[serde(rename = "virtual-size")]
    virtual_size: u64,
    format: String,
    #[serde(rename = "actual-size")]
    actual_size: Option<u64>,
    #[serde(rename = "backing-filename")]
    backing_filename: Option<String>,
    #[serde(rename = "full-backing-filename")]
    full_backing_filename: Option<String>,
    #[serde(rename = "backing-filename-format")]
    backing_filename_format: Option<String>,
    #[serde(default)]
    snapshots: Vec<SnapshotJson>,
}

impl ImageInfo {
    pub fn from_json(json: &str) -> Result<ImageInfo, String> {
        let j: InfoJson = serde_json::from_str(json).map_err(|e| e.to_string())?;
        Ok(ImageInfo {
            virtual_size: j.virtual_size,
            format: j.format,
            actual_size: j.actual_size,
            backing: j
                .full_backing_filename
                .or(j.backing_filename)
                .map(PathBuf::from),
            backing_format: j.backing_filename_format,
            snapshots: j.snapshots.into_iter().map(|s| s.name).collect(),
        })
    }
}

/// One qemu-img invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QemuImgCommand {
    /// A new image; with `backing`, a copy-on-write overlay on it.
    Create {
        path: PathBuf,
        format: ImageFormat,
        /// Bytes; may be left out for an overlay, which then has its
        /// backing image's size.
        size: Option<u64>,
        backing: Option<(PathBuf, ImageFormat)>,
    },
    Resize {
        path: PathBuf,
        format: ImageFormat,
        size: u64,
        /// Allow making the image smaller (losing whatever lies beyond).
        shrink: bool,
    },
    Info {
        path: PathBuf,
        format: Option<ImageFormat>,
    },
    Convert {
        source: PathBuf,
        source_format: ImageFormat,
        target: PathBuf,
        target_format: ImageFormat,
    },
    /// A standalone qcow2 copy of an internal snapshot of a qcow2 image,
    /// read while a running guest may hold the image (its snapshot's
    /// clusters do not change under it).
    ConvertSnapshot {
        source: PathBuf,
        snapshot: String,
        target: PathBuf,
    },
    /// An internal snapshot of a qcow2 image that no running guest holds.
    Snapshot {
        path: PathBuf,
        action: SnapshotAction,
        name: String,
    },
}

/// What `qemu-img snapshot` does with the named internal snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotAction {
    Create,
    /// Puts the image's content back to the snapshot's.
    Apply,
    Delete,
}

impl SnapshotAction {
    fn flag(self) -> &'static str {
        match self {
            SnapshotAction::Create => "-c",
            SnapshotAction::Apply => "-a",
            SnapshotAction::Delete => "-d",
        }
    }
}

impl QemuImgCommand {
    pub fn subcommand(&self) -> &'static str {
        match self {
            QemuImgCommand::Create { .. } => "create",
            QemuImgCommand::Resize { .. } => "resize",
            QemuImgCommand::Info { .. } => "info",
            QemuImgCommand::Convert { .. } => "convert",
            QemuImgCommand::Snapshot { .. } => "snapshot",
            QemuImgCommand::ConvertSnapshot { .. } => "convert",
        }
    }

    /// The arguments after the program name.
    pub fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![self.subcommand().into()];
        let mut push = |s: &dyn AsRef<OsStr>| a.push(s.as_ref().to_os_string());
        match self {
            QemuImgCommand::Create {
                path,
                format,
                size,
                backing,
            } => {
                push(&"-q");
                push(&"-f");
                push(&format.as_str());
                if let Some((file, fmt)) = backing {
                    push(&"-b");
                    push(file);
                    push(&"-F");
                    push(&fmt.as_str());
                }
                push(path);
                if let Some(size) = size {
                    push(&size.to_string());
                }
            }
            QemuImgCommand::Resize {
                path,
                format,
                size,
                shrink,
            } => {
                push(&"-q");
                if *shrink {
                    push(&"--shrink");
                }
                push(&"-f");
                push(&format.as_str());
                push(path);
                push(&size.to_string());
            }
            QemuImgCommand::Info { path, format } => {
                push(&"--output=json");
                // Readable while a running guest holds the image's lock.
                push(&"--force-share");
                if let Some(fmt) = format {
                    push(&"-f");
                    push(&fmt.as_str());
                }
                push(path);
            }
            QemuImgCommand::Convert {
                source,
                source_format,
                target,
                target_format,
            } => {
                push(&"-q");
                push(&"-f");
                push(&source_format.as_str());
                push(&"-O");
                push(&target_format.as_str());
                push(source);
                push(target);
            }
            QemuImgCommand::ConvertSnapshot {
                source,
                snapshot,
                target,
            } => {
                push(&"-q");
                push(&"-U");
                push(&"-f");
                push(&"qcow2");
                push(&"-l");
                push(&format!("snapshot.name={snapshot}"));
                push(&"-O");
                push(&"qcow2");
                push(source);
                push(target);
            }
            QemuImgCommand::Snapshot { path, action, name } => {
                // `snapshot` has no -f: the format is pinned through the
                // image options instead (a comma in the path doubled, as
                // QEMU's option syntax wants).
                push(&"-q");
                push(&action.flag());
                push(name);
                push(&"--image-opts");
                let mut opts = OsString::from("driver=qcow2,file.filename=");
                opts.push(path.as_os_str().to_string_lossy().replace(',', ",,"));
                push(&opts);
            }
        }
        a
    }
}

/// Runs qemu-img (or a stand-in with the same interface).
#[derive(Debug, Clone)]
pub struct QemuImg {
    program: PathBuf,
}

impl Default for QemuImg {
    fn default() -> Self {
        QemuImg::new()
    }
}

impl QemuImg {
    /// `qemu-img` from `PATH`.
    pub fn new() -> Self {
        QemuImg::with_program("qemu-img")
    }

    pub fn with_program(program: impl Into<PathBuf>) -> Self {
        QemuImg {
            program: program.into(),
        }
    }

    pub fn program(&self) -> &Path {
        &self.program
    }

    fn describe(&self, cmd: &QemuImgCommand) -> String {
        let mut s = self.program.display().to_string();
        for a in cmd.args() {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }

    /// Runs `cmd`, returning its standard output. A failure carries the
    /// command line and what qemu-img wrote to standard error.
    pub async fn run(&self, cmd: &QemuImgCommand) -> Result<String, StorageError> {
        let output = tokio::process::Command::new(&self.program)
            .args(cmd.args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // An abandoned request must not leave qemu-img writing an image.
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|source| StorageError::Spawn {
                program: self.program.display().to_string(),
                source,
            })?;
        if !output.status.success() {
            return Err(StorageError::QemuImg {
                command: self.describe(cmd),
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    pub async fn create(
        &self,
        path: &Path,
        format: ImageFormat,
        size: u64,
    ) -> Result<(), StorageError> {
        self.run(&QemuImgCommand::Create {
            path: path.to_path_buf(),
            format,
            size: Some(size),
            backing: None,
        })
        .await
        .map(drop)
    }

    /// A qcow2 overlay on `backing`; `size` (bytes) only when it should be
    /// larger than the backing image.
    pub async fn create_overlay(
        &self,
        backing: &Path,
        backing_format: ImageFormat,
        path: &Path,
        size: Option<u64>,
    ) -> Result<(), StorageError> {
        self.run(&QemuImgCommand::Create {
            path: path.to_path_buf(),
            format: ImageFormat::Qcow2,
            size,
            backing: Some((backing.to_path_buf(), backing_format)),
        })
        .await
        .map(drop)
    }

    pub async fn resize(
        &self,
        path: &Path,
        format: ImageFormat,
        size: u64,
        shrink: bool,
    ) -> Result<(), StorageError> {
        self.run(&QemuImgCommand::Resize {
            path: path.to_path_buf(),
            format,
            size,
            shrink,
        })
        .await
        .map(drop)
    }

    /// `format`: read the image as this format; `None` lets qemu-img probe,
    /// which is only for images of known origin.
    pub async fn info(
        &self,
        path: &Path,
        format: Option<ImageFormat>,
    ) -> Result<ImageInfo, StorageError> {
        let cmd = QemuImgCommand::Info {
            path: path.to_path_buf(),
            format,
        };
        let out = self.run(&cmd).await?;
        ImageInfo::from_json(&out).map_err(|reason| StorageError::Output {
            command: self.describe(&cmd),
            reason,
        })
    }

    pub async fn convert(
        &self,
        source: &Path,
        source_format: ImageFormat,
        target: &Path,
        target_format: ImageFormat,
    ) -> Result<(), StorageError> {
        self.run(&QemuImgCommand::Convert {
            source: source.to_path_buf(),
            source_format,
            target: target.to_path_buf(),
            target_format,
        })
        .await
        .map(drop)
    }

    /// A standalone qcow2 copy of the image's internal snapshot `snapshot`.
    pub async fn convert_snapshot(
        &self,
        source: &Path,
        snapshot: &str,
        target: &Path,
    ) -> Result<(), StorageError> {
        self.run(&QemuImgCommand::ConvertSnapshot {
            source: source.to_path_buf(),
            snapshot: snapshot.to_string(),
            target: target.to_path_buf(),
        })
        .await
        .map(drop)
    }

    /// Creates, applies or deletes an internal snapshot of a qcow2 image
    /// no running guest holds (qemu-img takes the image's lock).
    pub async fn snapshot(
        &self,
        path: &Path,
        action: SnapshotAction,
        name: &str,
    ) -> Result<(), StorageError> {
        self.run(&QemuImgCommand::Snapshot {
            path: path.to_path_buf(),
            action,
            name: name.to_string(),
        })
        .await
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(cmd: QemuImgCommand) -> Vec<String> {
        cmd.args()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn argument_lists() {
        assert_eq!(
            args(QemuImgCommand::Create {
                path: "/p/v.qcow2".into(),
                format: ImageFormat::Qcow2,
                size: Some(1 << 30),
                backing: None,
            }),
            ["create", "-q", "-f", "qcow2", "/p/v.qcow2", "1073741824"]
        );
        assert_eq!(
            args(QemuImgCommand::Create {
                path: "/p/v.qcow2".into(),
                format: ImageFormat::Qcow2,
                size: None,
                backing: Some(("/p/t/base.raw".into(), ImageFormat::Raw)),
            }),
            [
                "create",
                "-q",
                "-f",
                "qcow2",
                "-b",
                "/p/t/base.raw",
                "-F",
                "raw",
                "/p/v.qcow2"
            ]
        );
        assert_eq!(
            args(QemuImgCommand::Resize {
                path: "/p/v.qcow2".into(),
                format: ImageFormat::Qcow2,
                size: 5,
                shrink: true,
            }),
            ["resize", "-q", "--shrink", "-f", "qcow2", "/p/v.qcow2", "5"]
        );
        assert_eq!(
            args(QemuImgCommand::Resize {
                path: "/p/v.qcow2".into(),
                format: ImageFormat::Raw,
                size: 5,
                shrink: false,
            }),
            ["resize", "-q", "-f", "raw", "/p/v.qcow2", "5"]
        );
        assert_eq!(
            args(QemuImgCommand::Info {
                path: "/p/v.qcow2".into(),
                format: Some(ImageFormat::Qcow2),
            }),
            [
                "info",
                "--output=json",
                "--force-share",
                "-f",
                "qcow2",
                "/p/v.qcow2"
            ]
        );
        assert_eq!(
            args(QemuImgCommand::Info {
                path: "/p/v".into(),
                format: None,
            }),
            ["info", "--output=json", "--force-share", "/p/v"]
        );
        assert_eq!(
            args(QemuImgCommand::Convert {
                source: "/a.raw".into(),
                source_format: ImageFormat::Raw,
                target: "/b.qcow2".into(),
                target_format: ImageFormat::Qcow2,
            }),
            ["convert", "-q", "-f", "raw", "-O", "qcow2", "/a.raw", "/b.qcow2"]
        );
    }

    #[test]
    fn info_json() {
        let info = ImageInfo::from_json(
            r#"{
                "virtual-size": 22020096, "filename": "/p/v.qcow2", "cluster-size": 65536,
                "format": "qcow2", "actual-size": 200704,
                "backing-filename": "base.qcow2",
                "full-backing-filename": "/p/t/base.qcow2",
                "backing-filename-format": "qcow2",
                "format-specific": {"type": "qcow2", "data": {"compat": "1.1"}},
                "dirty-flag": false
            }"#,
        )
        .unwrap();
        assert_eq!(
            info,
            ImageInfo {
                virtual_size: 22020096,
                format: "qcow2".to_string(),
                actual_size: Some(200704),
                backing: Some("/p/t/base.qcow2".into()),
                backing_format: Some("qcow2".to_string()),
                snapshots: vec![],
            }
        );
        let snaps = ImageInfo::from_json(
            r#"{"virtual-size": 5, "format": "qcow2", "snapshots": [
                {"id": "1", "name": "a", "vm-state-size": 0},
                {"id": "2", "name": "b", "vm-state-size": 1024}]}"#,
        )
        .unwrap();
        assert_eq!(snaps.snapshots, vec!["a".to_string(), "b".to_string()]);
        let raw = ImageInfo::from_json(r#"{"virtual-size": 5, "format": "raw"}"#).unwrap();
        assert_eq!(raw.backing, None);
        assert!(ImageInfo::from_json("qemu-img: oops").is_err());
    }

    #[test]
    fn snapshots_pin_the_format_through_image_options() {
        let a = QemuImgCommand::Snapshot {
            path: "/p/a,b.qcow2".into(),
            action: SnapshotAction::Apply,
            name: "s1".into(),
        }
        .args();
        let a: Vec<String> = a.iter().map(|x| x.to_string_lossy().into_owned()).collect();
        assert_eq!(
            a,
            [
                "snapshot",
                "-q",
                "-a",
                "s1",
                "--image-opts",
                "driver=qcow2,file.filename=/p/a,,b.qcow2"
            ]
        );
    }

    #[test]
    fn formats() {
        assert_eq!("QCOW2".parse::<ImageFormat>(), Ok(ImageFormat::Qcow2));
        assert_eq!("raw".parse::<ImageFormat>(), Ok(ImageFormat::Raw));
        assert!("vmdk".parse::<ImageFormat>().is_err());
        assert_eq!(ImageFormat::Qcow2.to_string(), "qcow2");
    }
}
