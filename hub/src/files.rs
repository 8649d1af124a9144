//! Folders and files only the hub's user may read: folders 0700, files 0600, whatever the
//! process umask (the binary also sets the umask to 0077, which covers what libraries create,
//! such as the local blob store's files). A foundation that uses nothing else of the hub: the
//! database, storage, mail and uploads use it.

use std::path::Path;

/// Creates `dir` and missing parents with mode 0700 (existing folders are left as they are).
pub fn create_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

/// [`create_dir`] for async code.
pub async fn create_dir_async(dir: &Path) -> std::io::Result<()> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || create_dir(&dir)).await.map_err(std::io::Error::other)?
}

/// Creates an empty file with mode 0600 unless it exists; its folder is made with [`create_dir`].
pub fn create_file(path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_dir(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    match opts.open(path) {
        Ok(f) => set_private(&f),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes a new file (mode 0600) with `data`.
pub async fn write_new(path: &Path, data: Vec<u8>) -> std::io::Result<()> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&path)?;
        set_private(&f)?;
        f.write_all(&data)?;
        f.sync_all()
    })
    .await
    .map_err(std::io::Error::other)?
}

/// 0600 even where the umask took bits off the mode given at creation.
fn set_private(f: &std::fs::File) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    #[cfg(not(unix))]
    let _ = f;
    Ok(())
}

#[cfg(all(test, unix))]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn folders_are_0700_and_files_0600() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b");
        create_dir(&deep).unwrap();
        assert_eq!((mode(&dir.path().join("a")), mode(&deep)), (0o700, 0o700));
        let f = deep.join("c/file");
        create_file(&f).unwrap();
        assert_eq!((mode(&deep.join("c")), mode(&f)), (0o700, 0o600));
        create_file(&f).unwrap(); // exists: left alone
        let m = deep.join("mail.eml");
        write_new(&m, b"x".to_vec()).await.unwrap();
        assert_eq!(mode(&m), 0o600);
        assert!(write_new(&m, b"y".to_vec()).await.is_err(), "never overwrites");
    }
}
