//! `idx` source: the images of an IDX file, the format MNIST and Fashion-MNIST ship in
//! (`*-images-idx3-ubyte`: a big-endian header — magic `0x00000803`, count, rows, columns — then
//! `count·rows·columns` grey bytes). Each record becomes one sample whose bytes are a binary PGM
//! (`P5`) image, which the decoder reads like any other file, so nothing downstream is special.
//!
//! The key is `<prefix>/<index>` with the index zero-padded to 5 digits and the prefix the file
//! name up to its first `-` (`train-images-idx3-ubyte` → `train/00042`), so the train and test
//! files of a dataset never share keys and labels files can name samples.
//!
//! The file is read into memory once (Fashion-MNIST's training set is 47 MB); the header is checked
//! against the file size before anything is emitted.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::{Problem, ReadLater, SourceError, SourceKind, StopFlag, Visit, check_file};

const IMAGES_MAGIC: u32 = 0x0000_0803;
const HEADER: usize = 16;

/// `[source] kind = "idx"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdxConfig {
    /// An IDX images file (`train-images-idx3-ubyte`, unpacked).
    pub path: PathBuf,
}

impl SourceKind for IdxConfig {
    fn check(&mut self, resolve: &dyn Fn(&Path) -> PathBuf) -> Vec<Problem> {
        check_file(&mut self.path, "IDX file", resolve)
    }

    fn list(&self, stop: &StopFlag, visit: Visit) -> Result<(), SourceError> {
        run(&self.path, stop, visit)
    }
}

fn run(
    file: &Path,
    stop: &StopFlag,
    out: &mut dyn FnMut(String, ReadLater) -> bool,
) -> Result<(), SourceError> {
    let err = |reason: String| SourceError::Input {
        action: "read the IDX file",
        path: file.to_path_buf(),
        reason,
    };
    let data = std::fs::read(file).map_err(|e| err(e.to_string()))?;
    let (count, rows, cols) = parse_header(&data).map_err(err)?;
    let prefix = key_prefix(file);
    let data: Arc<[u8]> = data.into();
    for index in 0..count {
        if stop.is_stopped() {
            break;
        }
        let data = data.clone();
        let read: ReadLater = Box::new(move || {
            let start = HEADER + index * rows * cols;
            Ok(pgm(&data[start..start + rows * cols], rows, cols))
        });
        if !out(format!("{prefix}/{index:05}"), read) {
            break;
        }
    }
    Ok(())
}

/// `(count, rows, columns)` of an images file, checked against its length.
fn parse_header(data: &[u8]) -> Result<(usize, usize, usize), String> {
    if data.len() < HEADER {
        return Err(format!(
            "{} bytes is shorter than the 16-byte header",
            data.len()
        ));
    }
    let word = |i: usize| u32::from_be_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
    let magic = word(0);
    if magic != IMAGES_MAGIC {
        return Err(format!(
            "magic number {magic:#010x} is not that of an images file ({IMAGES_MAGIC:#010x}: unsigned bytes, 3 dimensions); a .gz file must be unpacked first"
        ));
    }
    let (count, rows, cols) = (word(4) as usize, word(8) as usize, word(12) as usize);
    if rows == 0 || cols == 0 {
        return Err(format!("image size {rows}x{cols} is empty"));
    }
    let expected = count
        .checked_mul(rows * cols)
        .and_then(|n| n.checked_add(HEADER));
    if expected != Some(data.len()) {
        return Err(format!(
            "the header announces {count} images of {rows}x{cols} ({} bytes with the header), the file has {} bytes",
            expected.map_or("too many".to_string(), |n| n.to_string()),
            data.len()
        ));
    }
    Ok((count, rows, cols))
}

fn key_prefix(file: &Path) -> String {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.split_once('-') {
        Some((head, _)) if !head.is_empty() => head.to_string(),
        _ => name,
    }
}

/// A binary greyscale PGM of `rows × cols` pixels.
fn pgm(pixels: &[u8], rows: usize, cols: usize) -> Vec<u8> {
    let mut out = format!("P5\n{cols} {rows}\n255\n").into_bytes();
    out.extend_from_slice(pixels);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{Emit, Order, SourceConfig};

    /// Writes an IDX images file of `count` images of 2×3 where image i is filled with i.
    pub(crate) fn write_idx(path: &Path, count: u32) {
        let mut bytes = Vec::new();
        for w in [IMAGES_MAGIC, count, 2, 3] {
            bytes.extend_from_slice(&w.to_be_bytes());
        }
        for i in 0..count {
            bytes.extend(std::iter::repeat_n(i as u8, 6));
        }
        std::fs::write(path, bytes).unwrap();
    }

    struct Collect(Vec<(String, Vec<u8>)>);
    impl Emit for Collect {
        fn emit(&mut self, key: String, bytes: Result<Vec<u8>, String>) -> bool {
            self.0.push((key, bytes.unwrap()));
            true
        }
    }

    fn read(path: &Path, order: Order) -> Result<Vec<(String, Vec<u8>)>, SourceError> {
        let mut c = Collect(vec![]);
        let spec = SourceConfig::Idx(IdxConfig {
            path: path.to_path_buf(),
        })
        .check(&Path::to_path_buf)
        .unwrap();
        crate::source::run(&spec, order, &StopFlag::default(), &mut c)?;
        Ok(c.0)
    }

    #[test]
    fn records_become_pgm_samples_with_prefixed_keys() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("t10k-images-idx3-ubyte");
        write_idx(&path, 12);
        let got = read(&path, Order::default()).unwrap();
        assert_eq!(got.len(), 12);
        assert_eq!(got[0].0, "t10k/00000");
        assert_eq!(got[11].0, "t10k/00011");
        let img = image::load_from_memory(&got[7].1).unwrap().to_luma8();
        assert_eq!((img.width(), img.height()), (3, 2));
        assert!(img.pixels().all(|p| p.0[0] == 7));
    }

    #[test]
    fn shuffled_passes_are_permutations_fixed_by_the_seed_and_skip_resumes() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("train-images-idx3-ubyte");
        write_idx(&path, 50);
        let keys = |order| -> Vec<String> {
            read(&path, order)
                .unwrap()
                .into_iter()
                .map(|(k, _)| k)
                .collect()
        };
        let sorted = keys(Order::default());
        let a = keys(Order {
            shuffle: Some(1),
            skip: 0,
            ..Default::default()
        });
        let b = keys(Order {
            shuffle: Some(2),
            skip: 0,
            ..Default::default()
        });
        assert_ne!(a, sorted);
        assert_ne!(a, b);
        assert_eq!(
            a,
            keys(Order {
                shuffle: Some(1),
                skip: 0,
                ..Default::default()
            })
        );
        let mut a_sorted = a.clone();
        a_sorted.sort();
        assert_eq!(a_sorted, sorted);
        let resumed = keys(Order {
            shuffle: Some(1),
            skip: 20,
            ..Default::default()
        });
        assert_eq!(resumed, a[20..]);
    }

    #[test]
    fn truncated_or_foreign_files_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("x-images");
        write_idx(&path, 4);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.pop();
        std::fs::write(&path, &bytes).unwrap();
        let e = read(&path, Order::default()).unwrap_err().to_string();
        assert!(e.contains("announces 4 images"), "{e}");
        std::fs::write(
            &path,
            [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        )
        .unwrap();
        let e = read(&path, Order::default()).unwrap_err().to_string();
        assert!(e.contains(".gz file must be unpacked"), "{e}");
    }
}
