//! JPEG truncation check.
//!
//! The JPEG decoder behind `image` (zune-jpeg, non-strict) fills the missing part of a truncated
//! file with grey and reports success. Training on half-grey images silently is worse than
//! skipping them, so the decode path asks this module first.
//!
//! Guarantee: [`is_truncated`] is true only when the marker structure up to the first scan (SOS)
//! parses and no end-of-image marker (`FF D9`) follows it. Entropy-coded data cannot contain
//! `FF D9` (an `FF` data byte is always stuffed as `FF 00`), so a complete file always passes;
//! files whose headers do not parse are left to the decoder, which reports its own reason.
//! Reads only; never panics; O(file) in the worst case, usually O(1) since EOI sits at the end.

/// True when `bytes` is a JPEG cut off after its first scan started.
pub(super) fn is_truncated(bytes: &[u8]) -> bool {
    match first_scan_offset(bytes) {
        Some(sos) => !bytes[sos..].windows(2).rev().any(|w| w == [0xFF, 0xD9]),
        None => false,
    }
}

/// Offset just past the first SOS marker, walking the marker segments from SOI.
fn first_scan_offset(b: &[u8]) -> Option<usize> {
    if b.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    let mut i = 2;
    loop {
        if *b.get(i)? != 0xFF {
            return None;
        }
        while *b.get(i)? == 0xFF {
            i += 1;
        }
        let marker = b[i];
        i += 1;
        match marker {
            0xDA => return Some(i),
            0xD9 => return None,
            // Stand-alone markers without a length field.
            0x01 | 0xD0..=0xD8 => {}
            _ => {
                let len = usize::from(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]));
                if len < 2 {
                    return None;
                }
                i += len;
            }
        }
    }
}
