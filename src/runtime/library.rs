//! Where the ONNX Runtime shared library is looked for, in order. Kept apart from session code so
//! the order is easy to read and to test without loading anything.

use std::path::{Path, PathBuf};

/// The ONNX Runtime release `scripts/setup.sh` installs.
pub const ORT_VERSION: &str = "1.31.1";

#[cfg(target_os = "linux")]
pub const LIBRARY_FILE: &str = "libonnxruntime.so";
#[cfg(target_os = "macos")]
pub const LIBRARY_FILE: &str = "libonnxruntime.dylib";
#[cfg(target_os = "windows")]
pub const LIBRARY_FILE: &str = "onnxruntime.dll";

/// The project's own install location: `$SSLPIPE_HOME/onnxruntime`, where `SSLPIPE_HOME`
/// defaults to `$XDG_DATA_HOME/sslpipe` or `~/.local/share/sslpipe`.
pub fn install_dir() -> PathBuf {
    sslpipe_home().join("onnxruntime")
}

fn sslpipe_home() -> PathBuf {
    if let Some(home) = std::env::var_os("SSLPIPE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home);
    }
    if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(data).join("sslpipe");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/sslpipe")
}

/// The places looked at, in order, with where each came from.
pub fn library_candidates(explicit: Option<&Path>) -> Vec<(PathBuf, &'static str)> {
    let mut out = Vec::new();
    if let Some(p) = explicit {
        out.push((p.to_path_buf(), "[runtime] library / --ort-lib"));
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty()) {
        out.push((PathBuf::from(p), "ORT_DYLIB_PATH"));
    }
    out.push((install_dir().join(LIBRARY_FILE), "sslpipe install location"));
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        out.push((dir.join(LIBRARY_FILE), "beside the executable"));
    }
    out
}

/// The first candidate that exists. An explicit path or `ORT_DYLIB_PATH` that does not exist is
/// not skipped silently: the user asked for that file, so it is an error.
pub(super) fn find(explicit: Option<&Path>) -> Result<PathBuf, super::RuntimeError> {
    let candidates = library_candidates(explicit);
    for (path, why) in &candidates {
        let asked_for = matches!(*why, "[runtime] library / --ort-lib" | "ORT_DYLIB_PATH");
        if path.is_file() {
            return Ok(path.clone());
        }
        if asked_for {
            return Err(super::RuntimeError::LibraryLoad {
                path: path.clone(),
                reason: format!("no such file (given by {why})"),
            });
        }
    }
    Err(super::RuntimeError::LibraryNotFound { tried: candidates })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_path_comes_first() {
        let c = library_candidates(Some(Path::new("/x/libonnxruntime.so")));
        assert_eq!(c[0].0, PathBuf::from("/x/libonnxruntime.so"));
        assert!(c.iter().any(|(_, why)| *why == "sslpipe install location"));
    }

    #[test]
    fn missing_explicit_path_is_an_error_not_a_fallthrough() {
        let err = find(Some(Path::new("/definitely/not/here/libonnxruntime.so"))).unwrap_err();
        assert!(err.to_string().contains("no such file"), "{err}");
    }
}
