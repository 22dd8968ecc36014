//! `tar` source: the images inside tar shards (WebDataset layout), read as a stream from the
//! shard files, never unpacked to disk.
//!
//! Shards come from `paths` (glob patterns, relative to the pipeline file) or from `list` (a text
//! file of shard paths, one per line, relative to the list file). They are read in a fixed order:
//! glob matches sorted, patterns in the order written (the list file's order for `list`), or, with
//! `shuffle_seed`, in an order that is a pure function of that seed — the same on every pass and
//! every machine (pretraining shuffles entries within its windows on top of that).
//!
//! The key of a member is `<shard file stem>/<member path without its extension>`:
//! `shard-000123.tar` holding `000045.jpg` gives `shard-000123/000045`. Shard stems must differ
//! (checked), so keys are unique across shards; two members of one shard with the same key
//! (`a.jpg` and `a.png`) make the second an error record.
//!
//! Members are images when their extension is in `extensions` (the `dir` source's list by
//! default); other members (WebDataset's `.cls`, `.json`, …), folders and hidden names are
//! skipped silently. Nothing a member says can make sslpipe touch another file: its bytes are only
//! ever read from inside its shard, at its recorded offset, up to [`MAX_MEMBER_BYTES`]. An image
//! member that is a link (symbolic or hard), a device or a FIFO, or whose path is absolute or
//! contains `..`, becomes an error record with a reason and is never followed.
//!
//! Listing walks the headers and seeks over the data, so a shuffle window holds offsets, never
//! bytes; each entry reads its member when its turn comes (open, seek, read exactly its size). A
//! shard that cannot be opened ends the pass ([`SourceError::Input`]); a corrupt header becomes
//! one error record keyed `<stem>/@<byte offset>` and the pass goes on with the next shard; a
//! member cut short by a truncated shard is an error record.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::dir::{check_extensions, default_extensions, has_extension};
use super::list::{fingerprint, lines};
use super::{Problem, ReadLater, SourceError, SourceKind, StopFlag, Visit};

/// The largest member read, in bytes; a larger one is an error record (nothing is allocated).
pub const MAX_MEMBER_BYTES: u64 = 256 << 20;

/// `[source] kind = "tar"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TarConfig {
    /// Shard files or glob patterns (`shards/*.tar`), relative to the pipeline file.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Or: a text file of shard paths, one per line (relative to the list file).
    pub list: Option<PathBuf>,
    /// Extensions of the image members, without the dot, any case.
    #[serde(default = "default_extensions")]
    pub extensions: Vec<String>,
    /// Reads the shards in an order drawn from this seed rather than in sorted order.
    pub shuffle_seed: Option<u64>,
    /// The shard files, in reading order (filled by `check`).
    #[serde(skip)]
    pub shards: Vec<PathBuf>,
}

impl SourceKind for TarConfig {
    fn check(&mut self, resolve: &dyn Fn(&Path) -> PathBuf) -> Vec<Problem> {
        let mut problems = Vec::new();
        problems.extend(check_extensions(&mut self.extensions));
        self.shards = match (&self.list, self.paths.is_empty()) {
            (Some(_), false) => {
                problems.push((
                    "source.list",
                    "and `paths` exclude each other: name the shards one way".to_string(),
                ));
                return problems;
            }
            (None, true) => {
                problems.push((
                    "source.paths",
                    "is missing or empty: name the shards with `paths` (globs allowed) or `list`"
                        .to_string(),
                ));
                return problems;
            }
            (Some(list), true) => {
                let list = resolve(list);
                self.list = Some(list.clone());
                match shards_in_list(&list) {
                    Ok(shards) => shards,
                    Err(e) => {
                        problems.push(("source.list", e));
                        return problems;
                    }
                }
            }
            (None, false) => {
                let mut shards = Vec::new();
                for pattern in &self.paths {
                    match expand(pattern, resolve) {
                        Ok(found) => shards.extend(found),
                        Err(e) => problems.push(("source.paths", e)),
                    }
                }
                shards
            }
        };
        problems.extend(check_stems(&self.shards));
        if let Some(seed) = self.shuffle_seed {
            let mut rng = crate::rng::Rng::new(seed);
            for i in (1..self.shards.len()).rev() {
                let j = rng.index(i + 1);
                self.shards.swap(i, j);
            }
        }
        problems
    }

    fn list(&self, stop: &StopFlag, visit: Visit) -> Result<(), SourceError> {
        for shard in &self.shards {
            if stop.is_stopped() || !list_shard(shard, &self.extensions, stop, visit)? {
                break;
            }
        }
        Ok(())
    }
}

/// The files one `paths` entry names: a glob's matches in sorted order, or the file itself.
fn expand(pattern: &str, resolve: &dyn Fn(&Path) -> PathBuf) -> Result<Vec<PathBuf>, String> {
    let full = resolve(Path::new(pattern));
    let text = full
        .to_str()
        .ok_or_else(|| format!("{} is not valid UTF-8", full.display()))?;
    let matches =
        glob::glob(text).map_err(|e| format!("`{pattern}` is not a valid pattern: {e}"))?;
    let mut found = Vec::new();
    for m in matches {
        let path = m.map_err(|e| e.to_string())?;
        if path.is_file() {
            found.push(path);
        }
    }
    found.sort();
    if found.is_empty() {
        return Err(format!("{text} matches no shard file"));
    }
    Ok(found)
}

/// The shard paths written in a list file, relative to its folder.
fn shards_in_list(list: &Path) -> Result<Vec<PathBuf>, String> {
    let file = File::open(list).map_err(|e| format!("cannot read {}: {e}", list.display()))?;
    let base = list.parent().unwrap_or(Path::new(""));
    let mut shards = Vec::new();
    for entry in lines(std::io::BufReader::new(file)) {
        let entry = entry.map_err(|e| format!("cannot read {}: {e}", list.display()))?;
        let path = base.join(&entry);
        if !path.is_file() {
            return Err(format!(
                "{} lists {entry}, which is not a file",
                list.display()
            ));
        }
        shards.push(path);
    }
    if shards.is_empty() {
        return Err(format!("{} lists no shard", list.display()));
    }
    Ok(shards)
}

/// Two shards with the same stem would give the same keys: report each pair.
fn check_stems(shards: &[PathBuf]) -> Vec<Problem> {
    let mut seen: std::collections::HashMap<String, &Path> = std::collections::HashMap::new();
    let mut problems = Vec::new();
    for shard in shards {
        let stem = shard_stem(shard);
        if let Some(first) = seen.insert(stem.clone(), shard) {
            problems.push((
                "source.paths",
                format!(
                    "{} and {} share the name `{stem}`, which starts every key: keys would repeat",
                    first.display(),
                    shard.display()
                ),
            ));
        }
    }
    problems
}

fn shard_stem(shard: &Path) -> String {
    shard
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// What one tar member is to the source.
pub(super) enum Member {
    /// Not an image (or a folder, or hidden): passed over silently.
    Skip,
    /// An image member: its key (member path without extension).
    Image(String),
    /// An image member that must not be read: its key and why.
    Refused(String, String),
}

/// Classifies a member from its header: path bytes, type, size and (for links) target.
pub(super) fn classify(entry: &::tar::Entry<'_, impl Read>, extensions: &[String]) -> Member {
    let raw = entry.path_bytes();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let kind = entry.header().entry_type();
    if kind.is_dir() || kind.is_pax_global_extensions() {
        return Member::Skip;
    }
    let parts: Vec<&str> = text
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    let Some(name) = parts.last() else {
        return Member::Skip;
    };
    if name.starts_with('.') || !has_extension(name, extensions) {
        return Member::Skip;
    }
    let stem = name.rsplit_once('.').map_or(*name, |(stem, _)| stem);
    let mut key = parts[..parts.len() - 1].join("/");
    if !key.is_empty() {
        key.push('/');
    }
    key.push_str(stem);
    let refuse = |reason: String| Member::Refused(key.clone(), format!("member {text}: {reason}"));
    if matches!(raw.first(), Some(b'/')) {
        return refuse("its path is absolute; members are only read from inside the shard".into());
    }
    if parts.contains(&"..") {
        return refuse(
            "its path contains `..`; members are only read from inside the shard".into(),
        );
    }
    if std::str::from_utf8(&raw).is_err() {
        return refuse("its path is not valid UTF-8".into());
    }
    if !(kind.is_file() || kind.is_contiguous()) {
        let what = if kind.is_symlink() {
            "a symbolic link"
        } else if kind.is_hard_link() {
            "a hard link"
        } else {
            "not a regular file"
        };
        let target = entry
            .link_name_bytes()
            .map(|t| format!(" (to {})", String::from_utf8_lossy(&t)))
            .unwrap_or_default();
        return refuse(format!("is {what}{target}; links are never followed"));
    }
    if entry.size() > MAX_MEMBER_BYTES {
        return refuse(format!(
            "{} bytes is more than the {} MiB a member may have",
            entry.size(),
            MAX_MEMBER_BYTES >> 20
        ));
    }
    Member::Image(key)
}

/// Lists the image members of one shard; returns `false` when the listing should end.
fn list_shard(
    shard: &Path,
    extensions: &[String],
    stop: &StopFlag,
    visit: Visit,
) -> Result<bool, SourceError> {
    let input_err = |e: std::io::Error| SourceError::Input {
        action: "open the tar shard",
        path: shard.to_path_buf(),
        reason: e.to_string(),
    };
    let file = File::open(shard).map_err(input_err)?;
    let length = file.metadata().map_err(input_err)?.len();
    let stem = shard_stem(shard);
    let path: Arc<Path> = shard.into();
    let mut archive = ::tar::Archive::new(file);
    let mut entries = archive.entries_with_seek().map_err(input_err)?;
    let mut seen: HashSet<u128> = HashSet::new();
    // Where the next header starts, for the key of a corrupt one.
    let mut next_header = 0u64;
    loop {
        if stop.is_stopped() {
            return Ok(false);
        }
        let entry = match entries.next() {
            None => return Ok(true),
            Some(Ok(entry)) => entry,
            Some(Err(e)) => {
                let reason = format!(
                    "tar shard {} is corrupt at byte {next_header}: {e}; the rest of the shard is skipped",
                    shard.display()
                );
                return Ok(visit(
                    format!("{stem}/@{next_header}"),
                    Box::new(move || Err(reason)),
                ));
            }
        };
        let (offset, size) = (entry.raw_file_position(), entry.size());
        next_header = offset.saturating_add(size.div_ceil(512).saturating_mul(512));
        let (key, read): (String, ReadLater) = match classify(&entry, extensions) {
            Member::Skip => continue,
            Member::Refused(key, reason) => (key, refused(shard, reason)),
            Member::Image(key) if !seen.insert(fingerprint(&key)) => {
                let reason = format!("member {key}: its key repeats an earlier member's");
                (key, refused(shard, reason))
            }
            Member::Image(key) if offset.saturating_add(size) > length => {
                let reason = format!(
                    "member {key}: the shard ends inside it (truncated: {length} bytes, the member ends at {})",
                    offset.saturating_add(size)
                );
                (key, refused(shard, reason))
            }
            Member::Image(key) => {
                let path = path.clone();
                (key, Box::new(move || read_member(&path, offset, size)))
            }
        };
        if !visit(format!("{stem}/{key}"), read) {
            return Ok(false);
        }
    }
}

fn refused(shard: &Path, reason: String) -> ReadLater {
    let reason = format!("tar shard {}: {reason}", shard.display());
    Box::new(move || Err(reason))
}

/// Reads `size` bytes at `offset` of the shard (at most [`MAX_MEMBER_BYTES`], checked by listing).
fn read_member(shard: &Path, offset: u64, size: u64) -> Result<Vec<u8>, String> {
    let fail = |e: std::io::Error| format!("cannot read tar shard {}: {e}", shard.display());
    let mut file = File::open(shard).map_err(fail)?;
    file.seek(SeekFrom::Start(offset)).map_err(fail)?;
    let mut bytes = Vec::with_capacity(size.min(MAX_MEMBER_BYTES) as usize);
    file.take(size).read_to_end(&mut bytes).map_err(fail)?;
    if bytes.len() as u64 != size {
        return Err(format!(
            "tar shard {} ends inside a member at byte {offset} ({} of {size} bytes)",
            shard.display(),
            bytes.len()
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{Emit, Order, SourceConfig};

    type Got = Vec<(String, Result<Vec<u8>, String>)>;

    struct Collect(Got);
    impl Emit for Collect {
        fn emit(&mut self, key: String, bytes: Result<Vec<u8>, String>) -> bool {
            self.0.push((key, bytes));
            true
        }
    }

    fn file_header(path: &str, size: u64, kind: ::tar::EntryType) -> ::tar::Header {
        let mut h = ::tar::Header::new_gnu();
        // `set_path` refuses `..` and absolute paths: write the name bytes directly.
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_size(size);
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_cksum();
        h
    }

    /// A shard with the given (path, bytes) regular members.
    pub(crate) fn shard(path: &Path, members: &[(&str, &[u8])]) {
        let mut b = ::tar::Builder::new(File::create(path).unwrap());
        for (name, data) in members {
            let h = file_header(name, data.len() as u64, ::tar::EntryType::Regular);
            b.append(&h, *data).unwrap();
        }
        b.finish().unwrap();
    }

    fn run(config: &str, base: &Path) -> Got {
        let config: SourceConfig = toml::from_str(config).unwrap();
        let spec = config.check(&|p: &Path| base.join(p)).unwrap();
        let mut got = Collect(vec![]);
        crate::source::run(&spec, Order::default(), &StopFlag::default(), &mut got).unwrap();
        got.0
    }

    #[test]
    fn lists_image_members_keyed_by_shard_and_path_in_order() {
        let t = tempfile::tempdir().unwrap();
        shard(
            &t.path().join("s-000001.tar"),
            &[("b.jpg", b"B"), ("b.cls", b"3")],
        );
        shard(
            &t.path().join("s-000000.tar"),
            &[
                ("./x/000045.JPG", b"X"),
                ("x/000045.json", b"{}"),
                ("._hidden.jpg", b"H"),
                ("a.png", b"A"),
                ("a.jpg", b"A2"),
            ],
        );
        let got = run("kind = \"tar\"\npaths = [\"s-*.tar\"]", t.path());
        let keys: Vec<_> = got.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "s-000000/x/000045",
                "s-000000/a",
                "s-000000/a",
                "s-000001/b"
            ]
        );
        assert_eq!(got[0].1.as_deref().unwrap(), b"X");
        assert_eq!(got[1].1.as_deref().unwrap(), b"A");
        assert!(got[2].1.as_ref().unwrap_err().contains("repeats"));
        assert_eq!(got[3].1.as_deref().unwrap(), b"B");
    }

    #[test]
    fn escaping_and_link_members_are_refused_never_followed() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("secret.jpg"), b"SECRET").unwrap();
        let path = t.path().join("evil.tar");
        let mut b = ::tar::Builder::new(File::create(&path).unwrap());
        for (name, kind) in [
            ("../secret.jpg", ::tar::EntryType::Regular),
            ("/etc/passwd.jpg", ::tar::EntryType::Regular),
            ("link.jpg", ::tar::EntryType::Symlink),
            ("hard.jpg", ::tar::EntryType::Link),
        ] {
            let data: &[u8] = if kind == ::tar::EntryType::Regular {
                b"Z"
            } else {
                b""
            };
            let mut h = file_header(name, data.len() as u64, kind);
            if kind != ::tar::EntryType::Regular {
                h.as_old_mut().linkname[..13].copy_from_slice(b"../secret.jpg");
                h.set_cksum();
            }
            b.append(&h, data).unwrap();
        }
        b.finish().unwrap();
        let got = run("kind = \"tar\"\npaths = [\"evil.tar\"]", t.path());
        assert_eq!(got.len(), 4);
        for (key, bytes) in &got {
            let reason = bytes.as_ref().unwrap_err();
            assert!(!reason.contains("SECRET"), "{key}: {reason}");
        }
        assert!(got[0].1.as_ref().unwrap_err().contains("`..`"));
        assert!(got[1].1.as_ref().unwrap_err().contains("absolute"));
        assert!(got[2].1.as_ref().unwrap_err().contains("symbolic link"));
        assert!(got[3].1.as_ref().unwrap_err().contains("hard link"));
    }

    #[test]
    fn a_truncated_or_corrupt_shard_is_an_error_record_and_the_next_shard_is_read() {
        let t = tempfile::tempdir().unwrap();
        let big = vec![7u8; 3000];
        shard(
            &t.path().join("a.tar"),
            &[("1.jpg", b"one"), ("2.jpg", &big)],
        );
        let bytes = std::fs::read(t.path().join("a.tar")).unwrap();
        std::fs::write(t.path().join("a.tar"), &bytes[..512 * 3 + 100]).unwrap();
        let mut corrupt = bytes.clone();
        corrupt[512 * 2 + 148] ^= 0x55; // the second header's checksum
        std::fs::write(t.path().join("b.tar"), &corrupt).unwrap();
        shard(&t.path().join("c.tar"), &[("3.jpg", b"three")]);
        let got = run("kind = \"tar\"\npaths = [\"*.tar\"]", t.path());
        let keys: Vec<_> = got.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a/1", "a/2", "b/1", "b/@1024", "c/3"]);
        assert!(got[1].1.as_ref().unwrap_err().contains("truncated"));
        assert!(got[3].1.as_ref().unwrap_err().contains("corrupt"));
        assert_eq!(got[4].1.as_deref().unwrap(), b"three");
    }

    #[test]
    fn check_reports_missing_shards_clashing_stems_and_both_ways_of_naming() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("d")).unwrap();
        shard(&t.path().join("s.tar"), &[]);
        shard(&t.path().join("d/s.tar"), &[]);
        std::fs::write(t.path().join("shards.txt"), "# shards\ns.tar\n\nd/s.tar\n").unwrap();
        let problems = |text: &str| {
            toml::from_str::<SourceConfig>(text)
                .unwrap()
                .check(&|p: &Path| t.path().join(p))
                .unwrap_err()
        };
        let p = problems("kind = \"tar\"\npaths = [\"none-*.tar\"]");
        assert!(p[0].1.contains("matches no shard"), "{p:?}");
        let p = problems("kind = \"tar\"\nlist = \"shards.txt\"");
        assert!(p[0].1.contains("share the name `s`"), "{p:?}");
        let p = problems("kind = \"tar\"\nlist = \"shards.txt\"\npaths = [\"s.tar\"]");
        assert_eq!(p[0].0, "source.list");
        let p = problems("kind = \"tar\"");
        assert_eq!(p[0].0, "source.paths");
        // An empty shard lists nothing; the shuffle is the same every time.
        assert!(run("kind = \"tar\"\npaths = [\"s.tar\"]", t.path()).is_empty());
    }

    #[test]
    fn shuffled_shard_order_is_a_function_of_the_seed() {
        let t = tempfile::tempdir().unwrap();
        for i in 0..8 {
            shard(&t.path().join(format!("s{i}.tar")), &[("x.jpg", b"x")]);
        }
        let order = |seed: &str| -> Vec<String> {
            run(
                &format!("kind = \"tar\"\npaths = [\"*.tar\"]\n{seed}"),
                t.path(),
            )
            .into_iter()
            .map(|(k, _)| k)
            .collect()
        };
        let sorted = order("");
        assert_eq!(sorted[0], "s0/x");
        let a = order("shuffle_seed = 3");
        assert_eq!(a, order("shuffle_seed = 3"));
        assert_ne!(a, sorted);
        let mut b = a.clone();
        b.sort();
        assert_eq!(b, sorted);
    }
}
