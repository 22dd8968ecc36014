//! `s3` source: the image objects below a prefix of an S3-compatible object store (AWS S3, MinIO,
//! Ceph, R2, moto, …), through the `object_store` crate.
//!
//! `url = "s3://bucket/prefix"` names the objects; the key of an object is its name relative to
//! the prefix, extension kept, like the `dir` source's (`s3://b/photos` holding
//! `photos/a/x.jpg` gives `a/x.jpg`), so the same images give the same keys from a folder or a
//! bucket. A pass lists the prefix once and sorts the keys (byte order), so the order and keys are
//! the same on every run; like a `dir` folder listing, that list of keys (and sizes, ~100 bytes an
//! object) is held for the pass — never any bytes. Objects whose name has a segment starting with
//! `.` (hidden) or whose extension is not in `extensions` are passed over silently.
//!
//! Credentials, region and endpoint come from the standard AWS environment variables
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION` or
//! `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL`, …; `AmazonS3Builder::from_env`); `endpoint` and
//! `region` in the pipeline take precedence. Plain `http://` endpoints are allowed on loopback
//! (a local test server) and otherwise only with `AWS_ALLOW_HTTP=true`. [`check`](SourceKind::check)
//! never touches the network, so `sslpipe validate` works offline.
//!
//! Reading: each object is one GET, bounded: an object listed larger than
//! [`MAX_MEMBER_BYTES`](super::tar::MAX_MEMBER_BYTES) is an error record without any request, and
//! a body that grows past its listed size while it streams in is cut off and reported. Requests
//! are retried with exponential backoff ([`retry_config`]: 100 ms doubling to at most 5 s, at most
//! 5 retries, never past 60 s from the first try) on connection errors, timeouts, 5xx and 429
//! answers; other 4xx answers are final. When a pass reads every listed entry in listing order (no
//! shuffle, no skip, no held-out subset: [`SourceKind::list_pass`] says so), the source keeps
//! up to `concurrency` GETs in flight from the entry being read on (together at most
//! [`MAX_AHEAD_BYTES`] of listed size; a larger object goes alone); otherwise it makes exactly one GET
//! per entry when its turn comes, so skipped or held-out entries are never read and a shuffle
//! window holds names, not bytes. The requests run on a small tokio runtime (one worker thread)
//! owned by the pass; the source thread waits on them.
//!
//! Errors: a bucket that does not exist, a refused credential or an unreachable endpoint ends the
//! pass ([`SourceError::Input`], naming the URL and the server's answer). An object that cannot be
//! read (deleted between listing and reading, refused, cut short, too large) is an error record
//! with its key and the run goes on.
//!
//! Safety: an object name is never turned into a local path — bytes only ever go to the decoder.
//! A name with a `..` or `.` segment, an empty segment or a leading `/` is refused: it becomes an
//! error record without a request (`object_store` itself refuses to list such names, which then
//! ends the pass with an [`SourceError::Input`] naming the name).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ObjectStore, ObjectStoreExt, RetryConfig};
use serde::Deserialize;

use super::dir::{check_extensions, default_extensions, has_extension};
use super::tar::MAX_MEMBER_BYTES;
use super::{Problem, ReadLater, SourceError, SourceKind, StopFlag, Visit};

/// GETs in flight at once by default (ahead of the entry being read, on an in-order pass).
pub const DEFAULT_CONCURRENCY: usize = 8;
/// The largest `concurrency` accepted.
pub const MAX_CONCURRENCY: usize = 64;
/// Listed bytes of the GETs in flight on an in-order pass, at most (an object larger than this
/// goes alone): memory stays bounded whatever `concurrency` and the object sizes are.
pub const MAX_AHEAD_BYTES: u64 = 256 << 20;

/// `[source] kind = "s3"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// `s3://bucket` or `s3://bucket/prefix`.
    pub url: String,
    /// An S3-compatible server's address (`https://minio.example:9000`, `http://127.0.0.1:9000`);
    /// otherwise `AWS_ENDPOINT_URL`, otherwise AWS itself.
    pub endpoint: Option<String>,
    /// The region to sign requests for; otherwise `AWS_REGION` / `AWS_DEFAULT_REGION`.
    pub region: Option<String>,
    /// Extensions of the objects read, without the dot, any case.
    #[serde(default = "default_extensions")]
    pub extensions: Vec<String>,
    /// GETs in flight at once on an in-order pass (1 to [`MAX_CONCURRENCY`]).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// The bucket, from `url` (filled by `check`).
    #[serde(skip)]
    pub bucket: String,
    /// The prefix, from `url`, without a trailing `/` (filled by `check`; may be empty).
    #[serde(skip)]
    pub prefix: String,
}

fn default_concurrency() -> usize {
    DEFAULT_CONCURRENCY
}

/// Retries with backoff for every request: 100 ms, doubling (with jitter), at most 5 s apart; at
/// most 5 retries and never later than 60 s after the first try. Connection errors, timeouts,
/// 5xx and 429 answers are retried; other 4xx answers are final.
pub fn retry_config() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: 5,
        retry_timeout: Duration::from_secs(60),
    }
}

impl SourceKind for S3Config {
    fn check(&mut self, _: &dyn Fn(&Path) -> PathBuf) -> Vec<Problem> {
        let mut problems = Vec::new();
        match parse_url(&self.url) {
            Ok((bucket, prefix)) => (self.bucket, self.prefix) = (bucket, prefix),
            Err(e) => problems.push(("source.url", e)),
        }
        if let Some(endpoint) = &self.endpoint
            && let Err(e) = check_endpoint(endpoint, allow_http_from_env())
        {
            problems.push(("source.endpoint", e));
        }
        if self.region.as_deref().is_some_and(str::is_empty) {
            problems.push(("source.region", "is empty".to_string()));
        }
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            problems.push((
                "source.concurrency",
                format!(
                    "is {}: GETs in flight must be 1 to {MAX_CONCURRENCY}",
                    self.concurrency
                ),
            ));
        }
        problems.extend(check_extensions(&mut self.extensions));
        problems
    }

    fn list(&self, stop: &StopFlag, visit: Visit) -> Result<(), SourceError> {
        self.list_pass(false, stop, visit)
    }

    fn list_pass(&self, in_order: bool, stop: &StopFlag, visit: Visit) -> Result<(), SourceError> {
        let store = Arc::new(self.store()?);
        let runtime = Arc::new(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("sslpipe-s3")
                .enable_all()
                .build()
                .map_err(|e| self.input_error("start the S3 client for", e.to_string()))?,
        );
        let objects = self.objects(&runtime, &store, stop)?;
        let url = Arc::<str>::from(self.url.trim_end_matches('/'));
        let fetch = |i: usize| {
            let (store, path) = (store.clone(), objects[i].path.clone());
            let (size, url) = (objects[i].size, url.clone());
            async move { get(&store, &path, size, &url).await }
        };
        // In flight ahead of the entry being read (in-order passes only), by listing index.
        let mut ahead = std::collections::VecDeque::new();
        let mut next_spawn = 0;
        let mut ahead_bytes = 0u64;
        for (i, object) in objects.iter().enumerate() {
            if stop.is_stopped() {
                break;
            }
            let refused = |reason: &String| -> ReadLater {
                let reason = reason.clone();
                Box::new(move || Err(reason))
            };
            let read: ReadLater = if in_order {
                // `ahead` holds the GETs of entries i, i + 1, … (none for refused entries): at
                // most `concurrency` of them, together at most [`MAX_AHEAD_BYTES`] listed bytes.
                if next_spawn <= i {
                    next_spawn = i;
                    ahead_bytes = 0;
                }
                while next_spawn < objects.len() && next_spawn < i + self.concurrency {
                    let next = &objects[next_spawn];
                    let size = if next.refused.is_none() { next.size } else { 0 };
                    if next_spawn > i && ahead_bytes + size > MAX_AHEAD_BYTES {
                        break;
                    }
                    ahead_bytes += size;
                    let handle = next
                        .refused
                        .is_none()
                        .then(|| runtime.spawn(fetch(next_spawn)));
                    ahead.push_back((handle, size));
                    next_spawn += 1;
                }
                let (handle, size) = ahead.pop_front().expect("entry i is spawned");
                ahead_bytes -= size;
                match (&object.refused, handle) {
                    (Some(reason), _) => refused(reason),
                    (None, Some(handle)) => {
                        let runtime = runtime.clone();
                        Box::new(move || {
                            wait(&runtime, handle)
                                .unwrap_or_else(|e| Err(format!("the GET did not finish: {e}")))
                        })
                    }
                    (None, None) => unreachable!("every readable entry's GET is spawned"),
                }
            } else {
                match &object.refused {
                    Some(reason) => refused(reason),
                    None => {
                        let (runtime, fetch) = (runtime.clone(), fetch(i));
                        Box::new(move || wait(&runtime, fetch))
                    }
                }
            };
            if !visit(object.key.clone(), read) {
                break;
            }
        }
        for (handle, _) in ahead {
            let Some(handle) = handle else { continue };
            handle.abort();
        }
        Ok(())
    }
}

/// One listed object: its key, where it is, its listed size, and why it must not be read.
struct Object {
    key: String,
    path: ObjectPath,
    size: u64,
    refused: Option<String>,
}

impl S3Config {
    fn input_error(&self, action: &'static str, reason: String) -> SourceError {
        SourceError::Input {
            action,
            path: PathBuf::from(&self.url),
            reason,
        }
    }

    /// The store client: the environment's settings, then the pipeline's. Nothing is sent yet.
    fn store(&self) -> Result<AmazonS3, SourceError> {
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&self.bucket)
            .with_retry(retry_config());
        if let Some(endpoint) = &self.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(region) = &self.region {
            builder = builder.with_region(region);
        }
        if let Some(endpoint) = builder.get_config_value(&AmazonS3ConfigKey::Endpoint)
            && is_loopback_http(&endpoint)
        {
            builder = builder.with_allow_http(true);
        }
        builder
            .build()
            .map_err(|e| self.input_error("set up the S3 client for", e.to_string()))
    }

    /// Lists the prefix, sorted by key, refusing names that must not be read.
    fn objects(
        &self,
        runtime: &tokio::runtime::Runtime,
        store: &Arc<AmazonS3>,
        stop: &StopFlag,
    ) -> Result<Vec<Object>, SourceError> {
        let prefix = (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()));
        let (store, stop) = (store.clone(), stop.clone());
        let listed = wait(runtime, async move {
            let mut stream = store.list(prefix.as_ref());
            let mut listed = Vec::new();
            while let Some(meta) = stream.next().await {
                if stop.is_stopped() {
                    break;
                }
                listed.push(meta?);
            }
            Ok::<_, object_store::Error>(listed)
        })
        .map_err(|e| {
            let advice = match e {
                object_store::Error::InvalidPath { .. } => {
                    "an object name with a `.`, `..` or empty segment is refused and cannot be \
                     listed past: rename or remove that object, or name a prefix without it"
                }
                _ => {
                    "check the bucket name in source.url, the endpoint and region \
                     (source.endpoint / AWS_ENDPOINT_URL, source.region / AWS_REGION) and the \
                     credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"
                }
            };
            self.input_error("list", format!("{e} ({advice})"))
        })?;
        let url = self.url.trim_end_matches('/');
        let mut objects: Vec<Object> = listed
            .into_iter()
            .filter_map(|meta| {
                let name = meta.location.as_ref();
                let key = key_of(name, &self.prefix)?;
                if key
                    .split('/')
                    .any(|s| s.starts_with('.') && s != "." && s != "..")
                    || !has_extension(&key, &self.extensions)
                {
                    return None;
                }
                let refused = refusal(&key, meta.size).map(|r| format!("object {url}/{key}: {r}"));
                Some(Object {
                    key,
                    path: meta.location,
                    size: meta.size,
                    refused,
                })
            })
            .collect();
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }
}

/// `s3://bucket/prefix` → (bucket, prefix without a trailing `/`).
fn parse_url(url: &str) -> Result<(String, String), String> {
    let rest = url.strip_prefix("s3://").ok_or_else(|| {
        format!("`{url}` is not an S3 URL: write s3://bucket or s3://bucket/prefix")
    })?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty()
        || !bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return Err(format!(
            "`{url}`: the bucket name `{bucket}` must be lowercase letters, digits, `.` and `-`"
        ));
    }
    let prefix = prefix.trim_end_matches('/');
    if !prefix.is_empty()
        && prefix
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == ".." || s.chars().any(|c| c.is_control()))
    {
        return Err(format!(
            "`{url}`: the prefix has an empty, `.` or `..` segment or a control character"
        ));
    }
    Ok((bucket.to_string(), prefix.to_string()))
}

fn allow_http_from_env() -> bool {
    std::env::var("AWS_ALLOW_HTTP").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
}

/// An endpoint is `https://host[:port]`, or `http://` on loopback (or anywhere with
/// `AWS_ALLOW_HTTP=true`).
fn check_endpoint(endpoint: &str, allow_http: bool) -> Result<(), String> {
    let host = |rest: &str| rest.split(['/', '?']).next().unwrap_or("").to_string();
    if let Some(rest) = endpoint.strip_prefix("https://") {
        if host(rest).is_empty() {
            return Err(format!("`{endpoint}` names no host"));
        }
        return Ok(());
    }
    if let Some(rest) = endpoint.strip_prefix("http://") {
        if host(rest).is_empty() {
            return Err(format!("`{endpoint}` names no host"));
        }
        if is_loopback_http(endpoint) || allow_http {
            return Ok(());
        }
        return Err(format!(
            "`{endpoint}` is plain HTTP to a host that is not loopback: use https://, or set \
             AWS_ALLOW_HTTP=true to send requests in the clear"
        ));
    }
    Err(format!(
        "`{endpoint}` is not an http(s) address: write https://host[:port]"
    ))
}

fn is_loopback_http(endpoint: &str) -> bool {
    let Some(rest) = endpoint.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The key of an object: its name relative to the prefix (`None` if it is not below it).
fn key_of(name: &str, prefix: &str) -> Option<String> {
    if prefix.is_empty() {
        return Some(name.to_string());
    }
    name.strip_prefix(prefix)?
        .strip_prefix('/')
        .map(str::to_string)
}

/// Why an object must not be read, from its key and listed size alone.
fn refusal(key: &str, size: u64) -> Option<String> {
    if key.starts_with('/') {
        return Some("its name is absolute; object names never become local paths".into());
    }
    if key
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Some(
            "its name has an empty, `.` or `..` segment; object names never become local paths"
                .into(),
        );
    }
    if size > MAX_MEMBER_BYTES {
        return Some(format!(
            "{size} bytes is more than the {} MiB an object may have",
            MAX_MEMBER_BYTES >> 20
        ));
    }
    None
}

/// One bounded GET: at most `size` bytes (its listed size, itself at most the cap).
async fn get(store: &AmazonS3, path: &ObjectPath, size: u64, url: &str) -> Result<Vec<u8>, String> {
    let fail = |e: object_store::Error| match e {
        object_store::Error::NotFound { .. } => format!(
            "cannot read {url}/{path}: the object is gone (deleted after the listing?): {e}"
        ),
        e => format!("cannot read {url}/{path}: {e}"),
    };
    let result = store.get(path).await.map_err(fail)?;
    let mut stream = result.into_stream();
    let mut bytes = Vec::with_capacity(size as usize);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(fail)?;
        if (bytes.len() + chunk.len()) as u64 > size {
            return Err(format!(
                "cannot read {url}/{path}: the object is larger than the {size} bytes listed \
                 (replaced after the listing?)"
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    if bytes.len() as u64 != size {
        return Err(format!(
            "cannot read {url}/{path}: {} of the {size} bytes listed arrived (replaced after the \
             listing?)",
            bytes.len()
        ));
    }
    Ok(bytes)
}

/// Runs `future` to completion on `runtime` from the source thread. A thread already inside a
/// tokio runtime (a blocking task) cannot block on another one, so it waits from a helper thread.
fn wait<F: Future + Send>(runtime: &tokio::runtime::Runtime, future: F) -> F::Output
where
    F::Output: Send,
{
    if tokio::runtime::Handle::try_current().is_err() {
        return runtime.block_on(future);
    }
    std::thread::scope(|s| {
        s.spawn(|| runtime.block_on(future))
            .join()
            .expect("an S3 request does not panic")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SourceConfig;

    fn check(text: &str) -> Result<S3Config, Vec<Problem>> {
        let SourceConfig::S3(mut c) = toml::from_str(text).unwrap() else {
            panic!("an s3 config")
        };
        let problems = c.check(&Path::to_path_buf);
        if problems.is_empty() {
            Ok(c)
        } else {
            Err(problems)
        }
    }

    #[test]
    fn check_parses_the_url_and_reports_every_problem_offline() {
        let c = check("kind = \"s3\"\nurl = \"s3://photos-1/a/b/\"").unwrap();
        assert_eq!((c.bucket.as_str(), c.prefix.as_str()), ("photos-1", "a/b"));
        assert_eq!(c.concurrency, DEFAULT_CONCURRENCY);
        assert_eq!(c.extensions, default_extensions());
        let c =
            check("kind = \"s3\"\nurl = \"s3://b\"\nendpoint = \"http://127.0.0.1:9\"").unwrap();
        assert_eq!(c.prefix, "");
        let p = check(
            "kind = \"s3\"\nurl = \"s3://b/x/../y\"\nendpoint = \"ftp://x\"\nconcurrency = 0\nextensions = []",
        )
        .unwrap_err();
        let fields: Vec<_> = p.iter().map(|(f, _)| *f).collect();
        assert_eq!(
            fields,
            [
                "source.url",
                "source.endpoint",
                "source.concurrency",
                "source.extensions"
            ]
        );
        for bad in ["http://b/x", "s3://", "s3://Bad_Bucket/x", "s3://b//x"] {
            let p = check(&format!("kind = \"s3\"\nurl = \"{bad}\"")).unwrap_err();
            assert_eq!(p[0].0, "source.url", "{bad}");
        }
        assert!(
            toml::from_str::<SourceConfig>("kind = \"s3\"\nurl = \"s3://b\"\nbucket = \"b\"")
                .is_err()
        );
    }

    #[test]
    fn http_is_allowed_on_loopback_only_unless_the_environment_says_so() {
        for ok in [
            "http://127.0.0.1:9000",
            "http://localhost:9000/",
            "http://[::1]:9000",
            "https://minio.example:9000",
        ] {
            assert!(check_endpoint(ok, false).is_ok(), "{ok}");
        }
        assert!(check_endpoint("http://minio.lan:9000", false).is_err());
        assert!(check_endpoint("http://minio.lan:9000", true).is_ok());
        assert!(check_endpoint("https://", false).is_err());
    }

    #[test]
    fn keys_are_relative_to_the_prefix_and_escaping_names_are_refused() {
        assert_eq!(key_of("a/b/x.jpg", "a/b").as_deref(), Some("x.jpg"));
        assert_eq!(key_of("a/bc/x.jpg", "a/b"), None);
        assert_eq!(key_of("x/y.jpg", "").as_deref(), Some("x/y.jpg"));
        assert_eq!(refusal("x/y.jpg", 10), None);
        for bad in [
            "../etc/passwd.jpg",
            "a/../../b.jpg",
            "/etc/x.jpg",
            "a//b.jpg",
            "./a.jpg",
        ] {
            let reason = refusal(bad, 10).expect(bad);
            assert!(
                reason.contains("never become local paths"),
                "{bad}: {reason}"
            );
        }
        let reason = refusal("big.jpg", MAX_MEMBER_BYTES + 1).unwrap();
        assert!(reason.contains("MiB"), "{reason}");
    }
}
