//! The access token `activity-hub login` saves, so later commands (and the load tool)
//! use it without `--token`: `$XDG_CONFIG_HOME/activity-hub/token`, else
//! `~/.config/activity-hub/token`, readable by its owner only.

use std::path::PathBuf;

/// Where `login` keeps the token; `None` without `XDG_CONFIG_HOME` or `HOME`.
pub fn path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("activity-hub").join("token"))
}

/// The token `login` saved, if any.
pub fn saved() -> Option<String> {
    path()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .map(|t| t.trim().to_string())
}

/// Saves `token` at `path` (see [`path`]), creating its folder, readable by its owner
/// only.
pub fn save(path: &std::path::Path, token: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(token.as_bytes())?;
    f.write_all(b"\n")
}
