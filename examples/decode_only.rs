//! Throughput of the decode+resize stage alone, on a folder of images, with the same workers the
//! pipeline uses (one `Decoder` per thread) and files read into memory first, so the figure is the
//! stage's ceiling on this machine: `cargo run --release --example decode_only -- DIR SIZE THREADS`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use sslpipe::decode::{DecodeSettings, Decoder};
use sslpipe::source::dir::DirConfig;
use sslpipe::source::{DEFAULT_EXTENSIONS, Emit, SourceConfig, StopFlag};

struct Collect(Vec<Vec<u8>>);
impl Emit for Collect {
    fn emit(&mut self, _key: String, bytes: Result<Vec<u8>, String>) -> bool {
        if let Ok(b) = bytes {
            self.0.push(b);
        }
        true
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).expect("usage: decode_only DIR SIZE THREADS");
    let size: u32 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(96);
    let threads: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(2);
    let spec = SourceConfig::Dir(DirConfig {
        path: dir.into(),
        extensions: DEFAULT_EXTENSIONS.iter().map(|s| s.to_string()).collect(),
        recursive: true,
    })
    .check(&std::path::Path::to_path_buf)
    .expect("DIR is a folder");
    let mut files = Collect(Vec::new());
    sslpipe::source::run(&spec, Default::default(), &StopFlag::default(), &mut files)
        .expect("folder readable");
    let files = files.0;
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut decoder = Decoder::new(DecodeSettings::with_size(size));
                let mut out = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(bytes) = files.get(i) else { break };
                    let _ = decoder.decode_into(bytes, &mut out);
                }
            });
        }
    });
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{{\"images\": {}, \"size\": {size}, \"threads\": {threads}, \"seconds\": {secs:.3}, \"images_per_s\": {:.1}}}",
        files.len(),
        files.len() as f64 / secs
    );
}
