//! The session `activity-hub login` saves, so later commands (and the load tool) use it
//! without `--token`: `$XDG_CONFIG_HOME/activity-hub/token`, else
//! `~/.config/activity-hub/token`, readable by its owner only. Its first line is the
//! access token, its second (if any) the session's refresh token, which the commands
//! rotate and save again as they refresh the session.

use std::path::PathBuf;

/// Where `login` keeps the token; `None` without `XDG_CONFIG_HOME` or `HOME`.
pub fn path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("activity-hub").join("token"))
}

/// The access token `login` saved, if any.
pub fn saved() -> Option<String> {
    saved_session().map(|(access, _)| access)
}

/// The access token and refresh token `login` saved, if any.
pub fn saved_session() -> Option<(String, Option<String>)> {
    let text = path().and_then(|p| std::fs::read_to_string(p).ok())?;
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let access = lines.next()?.to_string();
    Some((access, lines.next().map(str::to_string)))
}

/// Saves an access token and, if any, its session's refresh token at `path`.
pub fn save_session(path: &std::path::Path, access: &str, refresh: Option<&str>) -> std::io::Result<()> {
    match refresh {
        Some(r) => save(path, &format!("{access}\n{r}")),
        None => save(path, access),
    }
}

/// Saves `token` at `path` (see [`path`]), creating its folder, readable by its owner
/// only. Written to a temporary file and renamed over the old one, so a reader never
/// sees half a token.
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
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = opts.open(&tmp)?;
    f.write_all(token.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
