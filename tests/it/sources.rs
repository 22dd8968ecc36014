//! The `tar` and `stdin` sources end to end: shards and piped input → Parquet rows and errors.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use crate::support::*;

fn run_json(p: &Path) -> serde_json::Value {
    let out = run_cli(&["run", "--json", "-q", p.to_str().unwrap()]);
    assert!(out.status.success(), "run failed: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("--json prints JSON")
}

/// A tar header for `path` (written raw: the builder refuses `..` and absolute paths).
fn header(path: &str, size: usize, kind: tar::EntryType, link: &str) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_size(size as u64);
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_cksum();
    h
}

/// Writes a shard of regular members `(member path, bytes)` in the given order.
fn shard(path: &Path, members: &[(String, Vec<u8>)]) {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in members {
        b.append(
            &header(name, data.len(), tar::EntryType::Regular, ""),
            &data[..],
        )
        .unwrap();
    }
    std::fs::write(path, b.into_inner().unwrap()).unwrap();
}

/// The members of a mixed folder in the `dir` source's order (good rows first, as a dir run
/// emits them), then the broken files, then non-image members a WebDataset shard carries.
fn members_of(images: &Path, dir_keys: &[String], broken: &[String]) -> Vec<(String, Vec<u8>)> {
    let mut members: Vec<(String, Vec<u8>)> = dir_keys
        .iter()
        .chain(broken)
        .map(|k| (k.clone(), std::fs::read(images.join(k)).unwrap()))
        .collect();
    members.push(("a.cls".into(), b"3".to_vec()));
    members.push(("a.json".into(), b"{}".to_vec()));
    members
}

fn without_extension(key: &str) -> &str {
    key.rsplit_once('.').map_or(key, |(stem, _)| stem)
}

#[test]
fn tar_rows_equal_folder_rows_but_for_keys_and_are_stable_between_runs() {
    let t = tempfile::tempdir().unwrap();
    let images = t.path().join("images");
    let (_, broken) = mixed_folder(&images);
    let dir_out = t.path().join("dir-out");
    let p = source_pipeline(
        t.path(),
        "dir.toml",
        &format!("kind = \"dir\"\npath = \"{}\"", images.display()),
        &dir_out,
    );
    run_json(&p);
    let dir_rows = read_features(&dir_out);
    let dir_keys: Vec<String> = dir_rows.iter().map(|r| r.key.clone()).collect();

    std::fs::create_dir(t.path().join("shards")).unwrap();
    shard(
        &t.path().join("shards/imgs-000000.tar"),
        &members_of(&images, &dir_keys, &broken),
    );
    let mut runs = Vec::new();
    for name in ["tar-out1", "tar-out2"] {
        let out = t.path().join(name);
        let p = source_pipeline(
            t.path(),
            "tar.toml",
            "kind = \"tar\"\npaths = [\"shards/*.tar\"]",
            &out,
        );
        let s = run_json(&p);
        assert_eq!(s["images"]["ok"], dir_rows.len());
        assert_eq!(s["images"]["failed"], broken.len());
        let mut errors: Vec<String> = read_errors(&out).into_iter().map(|e| e.0).collect();
        errors.sort();
        let mut expected: Vec<String> = broken
            .iter()
            .map(|k| format!("imgs-000000/{}", without_extension(k)))
            .collect();
        expected.sort();
        assert_eq!(errors, expected, "broken members are listed by key");
        runs.push(read_features(&out));
    }
    assert_eq!(runs[0], runs[1], "keys and rows are the same on every run");
    assert_eq!(runs[0].len(), dir_rows.len());
    for (d, t) in dir_rows.iter().zip(&runs[0]) {
        assert_eq!(t.key, format!("imgs-000000/{}", without_extension(&d.key)));
        let d_bits: Vec<u32> = d.embedding.iter().map(|v| v.to_bits()).collect();
        let t_bits: Vec<u32> = t.embedding.iter().map(|v| v.to_bits()).collect();
        assert_eq!(t_bits, d_bits, "{}: bit-identical embedding", t.key);
        assert_eq!(
            (t.width, t.height, &t.model_id, &t.pretext),
            (d.width, d.height, &d.model_id, &d.pretext)
        );
    }
}

#[test]
fn truncated_and_corrupt_shards_are_errors_and_the_run_goes_on() {
    let t = tempfile::tempdir().unwrap();
    let jpeg = |seed: u32| {
        let mut bytes = std::io::Cursor::new(Vec::new());
        synthetic(60, 40, seed)
            .write_to(&mut bytes, image::ImageFormat::Jpeg)
            .unwrap();
        bytes.into_inner()
    };
    let members: Vec<(String, Vec<u8>)> = (0..3).map(|i| (format!("{i}.jpg"), jpeg(i))).collect();
    shard(&t.path().join("a.tar"), &members);
    // b: cut inside its second member; c: its second header's checksum broken; d: empty.
    let full = std::fs::read(t.path().join("a.tar")).unwrap();
    let second = 512 + members[0].1.len().div_ceil(512) * 512;
    std::fs::write(t.path().join("b.tar"), &full[..second + 600]).unwrap();
    let mut corrupt = full.clone();
    corrupt[second + 148] ^= 0x55;
    std::fs::write(t.path().join("c.tar"), &corrupt).unwrap();
    shard(&t.path().join("d.tar"), &[]);
    shard(&t.path().join("e.tar"), &members[..1]);
    let out = t.path().join("out");
    let p = source_pipeline(
        t.path(),
        "p.toml",
        "kind = \"tar\"\npaths = [\"a.tar\", \"[b-e].tar\"]",
        &out,
    );
    let s = run_json(&p);
    let keys: Vec<String> = read_features(&out).into_iter().map(|r| r.key).collect();
    assert_eq!(keys, ["a/0", "a/1", "a/2", "b/0", "c/0", "e/0"]);
    let errors = read_errors(&out);
    let error_keys: Vec<&str> = errors.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(error_keys, ["b/1".to_string(), format!("c/@{second}")]);
    assert!(errors[0].2.contains("truncated"), "{errors:?}");
    assert!(errors[1].2.contains("corrupt"), "{errors:?}");
    assert_eq!(s["images"]["failed"], 2);

    // An empty shard alone: a run with no rows, not a failure.
    let out = t.path().join("empty-out");
    let p = source_pipeline(
        t.path(),
        "e.toml",
        "kind = \"tar\"\npaths = [\"d.tar\"]",
        &out,
    );
    assert_eq!(run_json(&p)["images"]["read"], 0);
}

#[test]
fn members_that_escape_or_link_are_refused_and_nothing_outside_is_touched() {
    let t = tempfile::tempdir().unwrap();
    let outside = t.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret.jpg"), b"not to be read").unwrap();
    let work = t.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let data = b"payload";
    for (name, kind, link) in [
        ("../outside/escape.jpg", tar::EntryType::Regular, ""),
        ("/tmp/absolute.jpg", tar::EntryType::Regular, ""),
        ("link.jpg", tar::EntryType::Symlink, "../outside/secret.jpg"),
        ("hard.jpg", tar::EntryType::Link, "/etc/passwd"),
    ] {
        let body: &[u8] = if link.is_empty() { data } else { b"" };
        b.append(&header(name, body.len(), kind, link), body)
            .unwrap();
    }
    std::fs::write(work.join("evil.tar"), b.into_inner().unwrap()).unwrap();
    let before = tree(t.path());
    let out = work.join("out");
    let p = source_pipeline(
        &work,
        "p.toml",
        "kind = \"tar\"\npaths = [\"evil.tar\"]",
        &out,
    );
    let s = run_json(&p);
    assert_eq!(s["images"]["failed"], 4);
    let errors = read_errors(&out);
    let reasons: Vec<(&str, &str)> = errors
        .iter()
        .map(|e| (e.0.as_str(), e.2.as_str()))
        .collect();
    assert_eq!(reasons.len(), 4);
    assert!(reasons[0].1.contains("`..`"), "{reasons:?}");
    assert!(reasons[1].1.contains("absolute"), "{reasons:?}");
    assert!(reasons[2].1.contains("symbolic link"), "{reasons:?}");
    assert!(reasons[3].1.contains("hard link"), "{reasons:?}");
    assert!(errors.iter().all(|e| e.1 == "read"), "{errors:?}");
    // Nothing appeared or changed outside the output folder and the pipeline file.
    let after: Vec<String> = tree(t.path())
        .into_iter()
        .filter(|p| !p.starts_with("work/out") && p != "work/p.toml")
        .collect();
    assert_eq!(after, before);
    assert!(!Path::new("/tmp/absolute.jpg").exists());
}

/// Every path below `root`, relative, sorted.
fn tree(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            found.push(path.strip_prefix(root).unwrap().display().to_string());
            if path.is_dir() && !path.is_symlink() {
                stack.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Runs `sslpipe run --json -q p` in `cwd` with `input` piped to its standard input.
fn run_piped(cwd: &Path, p: &Path, input: Vec<u8>) -> serde_json::Value {
    let mut child = sslpipe()
        .args(["run", "--json", "-q", p.to_str().unwrap()])
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input); // the run may stop reading early; that is its business
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success(), "run failed: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("--json prints JSON")
}

#[test]
fn stdin_paths_reads_the_piped_paths_relative_to_the_working_directory() {
    let t = tempfile::tempdir().unwrap();
    let images = t.path().join("images");
    let (_, broken) = mixed_folder(&images);
    let out = t.path().join("out");
    let p = source_pipeline(
        t.path(),
        "p.toml",
        "kind = \"stdin\"\nformat = \"paths\"",
        &out,
    );
    let listed = format!(
        "images/b.png\n# comment\n{}\nimages/{}\nimages/missing.jpg\nimages/b.png\n",
        images.join("a.jpg").display(),
        broken[0]
    );
    let mut runs = Vec::new();
    for _ in 0..2 {
        let s = run_piped(t.path(), &p, listed.clone().into_bytes());
        assert_eq!(s["images"]["read"], 5);
        runs.push(read_features(&out));
        let errors: Vec<String> = read_errors(&out).into_iter().map(|e| e.0).collect();
        assert_eq!(
            errors,
            [
                format!("images/{}", broken[0]),
                "images/missing.jpg".into(),
                "images/b.png".into()
            ]
        );
    }
    let keys: Vec<&str> = runs[0].iter().map(|r| r.key.as_str()).collect();
    let absolute = images.join("a.jpg").display().to_string();
    assert_eq!(keys, ["images/b.png", absolute.as_str()]);
    assert_eq!(runs[0], runs[1], "stable keys and rows between runs");

    // Empty input: nothing read, a successful run.
    let s = run_piped(t.path(), &p, Vec::new());
    assert_eq!(s["images"]["read"], 0);
}

#[test]
fn stdin_tar_reads_concatenated_shards_like_the_tar_source() {
    let t = tempfile::tempdir().unwrap();
    let images = t.path().join("images");
    let (good, broken) = mixed_folder(&images);
    let mut members = members_of(&images, &good, &broken);
    let second = members.split_off(8);
    shard(&t.path().join("s-0.tar"), &members);
    shard(&t.path().join("s-1.tar"), &second);
    let mut stream = std::fs::read(t.path().join("s-0.tar")).unwrap();
    stream.extend(std::fs::read(t.path().join("s-1.tar")).unwrap());
    // A repeated member: its key is taken, so it is an error record.
    let mut b = tar::Builder::new(Vec::new());
    let again = std::fs::read(images.join("a.jpg")).unwrap();
    b.append(
        &header("a.jpg", again.len(), tar::EntryType::Regular, ""),
        &again[..],
    )
    .unwrap();
    stream.extend(b.into_inner().unwrap());

    let out = t.path().join("out");
    let p = source_pipeline(
        t.path(),
        "p.toml",
        "kind = \"stdin\"\nformat = \"tar\"",
        &out,
    );
    let first = {
        let s = run_piped(t.path(), &p, stream.clone());
        assert_eq!(s["images"]["ok"], good.len());
        assert_eq!(s["images"]["failed"], broken.len() + 1);
        read_features(&out)
    };
    let keys: Vec<String> = first.iter().map(|r| r.key.clone()).collect();
    let expected: Vec<String> = good
        .iter()
        .map(|k| without_extension(k).to_string())
        .collect();
    assert_eq!(
        keys, expected,
        "member paths without extension, in stream order"
    );
    let errors = read_errors(&out);
    assert_eq!(errors.last().unwrap().0, "a");
    assert!(errors.last().unwrap().2.contains("repeats"));
    run_piped(t.path(), &p, stream);
    assert_eq!(read_features(&out), first, "stable between runs");

    let s = run_piped(t.path(), &p, Vec::new());
    assert_eq!(s["images"]["read"], 0, "empty input");
    // The tar source over the same shards gives the same rows, keyed by shard.
    let tar_out = t.path().join("tar-out");
    let p = source_pipeline(
        t.path(),
        "t.toml",
        "kind = \"tar\"\npaths = [\"s-*.tar\"]",
        &tar_out,
    );
    run_json(&p);
    let rows = read_features(&tar_out);
    assert_eq!(rows.len(), first.len());
    for (a, b) in rows.iter().zip(&first) {
        assert!(
            a.key.ends_with(&format!("/{}", b.key)),
            "{} {}",
            a.key,
            b.key
        );
        assert_eq!(a.embedding, b.embedding);
    }
}

#[test]
fn stdin_refuses_pipelines_that_would_read_it_twice() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("out");
    let export = pipeline(
        t.path(),
        "export.toml",
        &format!(
            "[source]\nkind = \"stdin\"\nformat = \"paths\"\n[pretext]\nkind = \"rotation\"\n[export]\nepochs = 3\n[output]\ndir = \"{}\"\n",
            out.display()
        ),
    );
    let v = run_cli(&["validate", export.to_str().unwrap()]);
    assert_eq!(v.status.code(), Some(2));
    let err = text(&v.stderr);
    assert!(
        err.contains("export.toml:2: source.kind: is single-pass (standard input can be read only once), but `[export] epochs = 3`"),
        "{err}"
    );
    let pretrain = pipeline(
        t.path(),
        "pretrain.toml",
        &format!(
            "[source]\nkind = \"stdin\"\nformat = \"tar\"\n[pretext]\nkind = \"rotation\"\n[pretrain]\nsteps = 5\n[output]\ndir = \"{}\"\n",
            out.display()
        ),
    );
    let err = text(&run_cli(&["validate", pretrain.to_str().unwrap()]).stderr);
    assert!(
        err.contains("pretrain.toml:2: source.kind: is single-pass")
            && err.contains("pretraining reads its source several times"),
        "{err}"
    );
    // One export pass is fine.
    let once = std::fs::read_to_string(&export)
        .unwrap()
        .replace("epochs = 3", "epochs = 1");
    std::fs::write(&export, once).unwrap();
    let v = run_cli(&["validate", export.to_str().unwrap()]);
    assert!(v.status.success(), "{}", text(&v.stderr));
}

#[test]
fn pretraining_streams_tar_shards_again_on_every_epoch() {
    let t = tempfile::tempdir().unwrap();
    for s in 0..2 {
        let members: Vec<(String, Vec<u8>)> = (0..10)
            .map(|i| {
                let mut png = std::io::Cursor::new(Vec::new());
                synthetic(48, 40, s * 10 + i)
                    .write_to(&mut png, image::ImageFormat::Png)
                    .unwrap();
                (format!("{i:06}.png"), png.into_inner())
            })
            .collect();
        shard(&t.path().join(format!("s-{s:06}.tar")), &members);
    }
    let out = t.path().join("out");
    let p = pipeline(
        t.path(),
        "pretrain-tar.toml",
        &format!(
            "[source]\nkind = \"tar\"\npaths = [\"{}/s-*.tar\"]\n[decode]\nsize = 32\n[pretext]\nkind = \"rotation\"\n[model]\nkind = \"builtin\"\nwidth = 8\nstages = [1, 1]\nembedding_dim = 16\n[pretrain]\nepochs = 2\nbatch_size = 4\nholdout = 2\n[embed]\nenabled = false\n[output]\ndir = \"{}\"\n",
            t.path().display(),
            out.display()
        ),
    );
    let summary = run_json(&p);
    let pretrain = &summary["pretrain"];
    // 20 images, 2 held out: two passes over the other 18 are 36 images, 9 steps of 4 (a batch
    // may span the end of one pass and the start of the next).
    assert_eq!(pretrain["images"], 36, "{pretrain}");
    assert_eq!(pretrain["steps"], 9, "{pretrain}");
    assert_eq!(pretrain["skipped_images"], 0, "{pretrain}");
    assert!(out.join("encoder.onnx").is_file());
}

/// A PNG of a synthetic image, as bytes.
fn png(seed: u32) -> Vec<u8> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    synthetic(48, 40, seed)
        .write_to(&mut bytes, image::ImageFormat::Png)
        .unwrap();
    bytes.into_inner()
}

/// Waits (up to a minute) for `key`'s row to be readable in a published part file of `out`.
fn wait_for_row(out: &Path, key: &str, run: &mut std::process::Child) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if out.is_dir() && read_features(out).iter().any(|r| r.key == key) {
            return true;
        }
        if run.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    false
}

#[test]
fn a_watched_folder_takes_complete_files_shows_rows_while_running_and_resumes() {
    let t = tempfile::tempdir().unwrap();
    let incoming = t.path().join("incoming");
    std::fs::create_dir(&incoming).unwrap();
    let out = t.path().join("out");
    let source = format!(
        "kind = \"watch\"\npath = \"{}\"\nsettle_ms = 400\npoll_ms = 50\nidle_exit_s = 4.0",
        incoming.display()
    );
    let p = source_pipeline(t.path(), "watch.toml", &source, &out);
    let body = std::fs::read_to_string(&p).unwrap() + "roll_seconds = 0.5\n";
    std::fs::write(&p, body).unwrap();

    let mut run = spawn_cli(&["run", "-q", p.to_str().unwrap()]);
    // A file written in pieces, with pauses shorter than settle_ms: only the whole file is read.
    let whole = png(1);
    let mut file = std::fs::File::create(incoming.join("slow.png")).unwrap();
    for piece in whole.chunks(whole.len() / 3 + 1) {
        file.write_all(piece).unwrap();
        file.flush().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(150));
    }
    drop(file);
    assert!(
        wait_for_row(&out, "slow.png", &mut run),
        "the row of a finished file is published while the run goes on"
    );
    std::fs::write(incoming.join("b.png"), png(2)).unwrap();
    std::fs::write(incoming.join("broken.png"), b"not a png").unwrap();
    let done = run.wait_with_output().unwrap();
    assert!(done.status.success(), "{}", text(&done.stderr));
    let rows = read_features(&out);
    let mut keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    keys.sort();
    assert_eq!(keys, ["b.png", "slow.png"]);
    assert_eq!(read_errors(&out).len(), 1, "the broken file is listed");

    // A restart appends: published keys are not computed again, earlier files and errors stay.
    std::fs::write(incoming.join("c.png"), png(3)).unwrap();
    std::fs::write(out.join("part-00099.parquet.tmp"), b"left by a killed run").unwrap();
    let again = run_cli(&["run", "-q", p.to_str().unwrap()]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    let rows = read_features(&out);
    let mut keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    keys.sort();
    assert_eq!(keys, ["b.png", "c.png", "slow.png"], "no key twice");
    assert!(
        !file_names(&out).iter().any(|n| n.ends_with(".tmp")),
        "an interrupted run's temporaries are cleared"
    );
    let errors = read_errors(&out);
    assert_eq!(
        errors.len(),
        2,
        "the earlier record is kept, broken.png again: {errors:?}"
    );

    // A watched folder is read once: pretraining on it is refused at validation.
    let pretrain = pipeline(
        t.path(),
        "pretrain-watch.toml",
        &format!(
            "[source]\n{source}\n[pretext]\nkind = \"rotation\"\n[pretrain]\nsteps = 2\n[output]\ndir = \"{}\"\n",
            out.display()
        ),
    );
    let refused = run_cli(&["validate", pretrain.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(text(&refused.stderr).contains("source.kind: is single-pass"));
}
