//! `stdin` source: images named or carried by the process's standard input, so that
//! `find photos -name '*.jpg' | sslpipe run p.toml` and `cat shards/*.tar | sslpipe run p.toml`
//! both work.
//!
//! - `format = "paths"`: one image path per line, exactly like the `list` source (blank lines and
//!   `#` comments ignored, the key is the path as written, a repeated path is an error record);
//!   relative paths are relative to the working directory.
//! - `format = "tar"`: a tar stream; concatenated archives work (zero blocks between them are
//!   passed over). Members are classified like the `tar` source's (same `extensions`, same
//!   refusals) and read in order into memory one at a time, each at most
//!   [`MAX_MEMBER_BYTES`](super::tar::MAX_MEMBER_BYTES). The key is the member path without its
//!   extension; a repeated key is an error record. A corrupt header is one error record keyed
//!   `@<byte offset>` and ends the stream (nothing after it can be trusted to line up).
//!
//! Standard input can be read once: the source is single-pass, and a pipeline that would read it
//! again (pretraining, `[export] epochs > 1`) is refused when the config is checked.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::dir::{check_extensions, default_extensions};
use super::list::{Origin, fingerprint, read_paths};
use super::tar::{Member, classify};
use super::{Problem, ReadLater, SourceError, SourceKind, StopFlag, Visit};

/// What standard input holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StdinFormat {
    /// One image path per line.
    Paths,
    /// A tar stream (one archive or several concatenated).
    Tar,
}

/// `[source] kind = "stdin"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdinConfig {
    pub format: StdinFormat,
    /// With `format = "tar"`: extensions of the image members (the `dir` source's by default).
    pub extensions: Option<Vec<String>>,
}

impl SourceKind for StdinConfig {
    fn check(&mut self, _: &dyn Fn(&Path) -> PathBuf) -> Vec<Problem> {
        match (&mut self.extensions, self.format) {
            (Some(_), StdinFormat::Paths) => vec![(
                "source.extensions",
                "applies to format = \"tar\" only: with \"paths\" every listed path is read"
                    .to_string(),
            )],
            (Some(extensions), StdinFormat::Tar) => {
                check_extensions(extensions).into_iter().collect()
            }
            (None, _) => Vec::new(),
        }
    }

    fn list(&self, stop: &StopFlag, visit: Visit) -> Result<(), SourceError> {
        let stdin = std::io::stdin().lock();
        match self.format {
            StdinFormat::Paths => {
                let origin = Origin {
                    action: "read paths from",
                    path: Path::new("standard input"),
                };
                read_paths(stdin, Path::new(""), origin, stop, visit)
            }
            StdinFormat::Tar => {
                let extensions = self.extensions.clone().unwrap_or_else(default_extensions);
                read_tar(stdin, &extensions, stop, visit)
            }
        }
    }

    fn single_pass(&self) -> Option<&'static str> {
        Some("standard input can be read only once")
    }
}

/// Lists (and reads, one at a time) the image members of a tar stream.
fn read_tar(
    input: impl Read,
    extensions: &[String],
    stop: &StopFlag,
    visit: Visit,
) -> Result<(), SourceError> {
    let input_err = |e: std::io::Error| SourceError::Input {
        action: "read a tar stream from",
        path: PathBuf::from("standard input"),
        reason: e.to_string(),
    };
    let mut archive = ::tar::Archive::new(input);
    archive.set_ignore_zeros(true);
    let mut seen: HashSet<u128> = HashSet::new();
    let mut next_header = 0u64;
    for entry in archive.entries().map_err(input_err)? {
        if stop.is_stopped() {
            return Ok(());
        }
        let mut entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                let reason = format!(
                    "the tar stream on standard input is corrupt at byte {next_header}: {e}; the rest of the stream is skipped"
                );
                visit(format!("@{next_header}"), Box::new(move || Err(reason)));
                return Ok(());
            }
        };
        let size = entry.size();
        next_header = entry
            .raw_file_position()
            .saturating_add(size.div_ceil(512).saturating_mul(512));
        let (key, bytes) = match classify(&entry, extensions) {
            Member::Skip => continue,
            Member::Refused(key, reason) => (key, Err(reason)),
            Member::Image(key) if !seen.insert(fingerprint(&key)) => {
                let reason = format!("member {key}: its key repeats an earlier member's");
                (key, Err(reason))
            }
            Member::Image(key) => {
                let mut bytes = Vec::with_capacity(size as usize);
                let read = entry.read_to_end(&mut bytes);
                let bytes = match read {
                    Ok(_) if bytes.len() as u64 == size => Ok(bytes),
                    Ok(_) => Err(format!(
                        "member {key}: the stream ends inside it (truncated: {} of {size} bytes)",
                        bytes.len()
                    )),
                    Err(e) => Err(format!("member {key}: {e}")),
                };
                (key, bytes)
            }
        };
        // A stream cut inside a member has nothing after it.
        let cut = bytes.as_ref().is_err_and(|e| e.contains("(truncated"));
        let bytes = bytes.map_err(|reason| format!("tar stream on standard input: {reason}"));
        let read: ReadLater = Box::new(move || bytes);
        if !visit(key, read) || cut {
            return Ok(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(b: &mut ::tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
        let mut h = ::tar::Header::new_ustar();
        h.set_path(name).unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    fn archive(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = ::tar::Builder::new(Vec::new());
        for (name, data) in members {
            member(&mut b, name, data);
        }
        b.into_inner().unwrap()
    }

    fn listed(input: &[u8]) -> Vec<(String, Result<Vec<u8>, String>)> {
        let mut got = Vec::new();
        let exts = default_extensions();
        read_tar(input, &exts, &StopFlag::default(), &mut |key, read| {
            got.push((key, read()));
            true
        })
        .unwrap();
        got
    }

    #[test]
    fn concatenated_archives_are_read_in_order_and_repeated_keys_are_errors() {
        let mut input = archive(&[("a/1.jpg", b"one"), ("a/1.cls", b"0")]);
        input.extend(archive(&[("b.png", b"two"), ("a/1.png", b"dup")]));
        let got = listed(&input);
        let keys: Vec<_> = got.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a/1", "b", "a/1"]);
        assert_eq!(got[0].1.as_deref().unwrap(), b"one");
        assert_eq!(got[1].1.as_deref().unwrap(), b"two");
        assert!(got[2].1.as_ref().unwrap_err().contains("repeats"));
        assert!(listed(b"").is_empty(), "empty input: no entries");
    }

    #[test]
    fn a_truncated_or_corrupt_stream_ends_with_an_error_record() {
        let big = vec![9u8; 2000];
        let full = archive(&[("1.jpg", b"one"), ("2.jpg", &big)]);
        let got = listed(&full[..1024 + 512 + 100]);
        assert_eq!(got.len(), 2);
        assert!(got[1].1.as_ref().unwrap_err().contains("truncated"));
        let mut corrupt = full.clone();
        corrupt[1024 + 148] ^= 0x55;
        let got = listed(&corrupt);
        let keys: Vec<_> = got.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["1", "@1024"]);
    }

    #[test]
    fn extensions_apply_to_tar_only() {
        let mut c: StdinConfig =
            toml::from_str("format = \"paths\"\nextensions = [\"jpg\"]").unwrap();
        assert_eq!(c.check(&Path::to_path_buf)[0].0, "source.extensions");
        let mut c: StdinConfig =
            toml::from_str("format = \"tar\"\nextensions = [\".PNG\"]").unwrap();
        assert!(c.check(&Path::to_path_buf).is_empty());
        assert_eq!(c.extensions.unwrap(), ["png"]);
        assert!(toml::from_str::<StdinConfig>("format = \"zip\"").is_err());
    }
}
