//! [`ObjectStorage`]: a [`Storage`] on an object store (S3 and compatible servers, Google Cloud
//! Storage, Azure Blob Storage, local files, memory) through the `object_store` crate, so that
//! checkpoints written on one machine restore on another.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::future::Future;
use std::io;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{
    ClientConfigKey, ObjectStore, PutMode, PutOptions, PutPayload, RetryConfig, WriteMultipart,
};
use parking_lot::Mutex;

use super::{components, invalid, past_end, within, ReadableFile, Storage, WritableFile, ROOT};
use crate::error::{Error, Result};

/// Settings of an [`ObjectStorage`]: upload parts and their parallelism, the read-ahead window,
/// retries and timeouts.
#[derive(Debug, Clone)]
pub struct ObjectStorageOptions {
    part_size: usize,
    parts_in_flight: usize,
    parallel_transfers: usize,
    read_window: usize,
    attempts: usize,
    backoff: Duration,
    max_backoff: Duration,
    request_timeout: Duration,
}

impl Default for ObjectStorageOptions {
    /// Parts of 8 MiB, 4 in flight per file, 4 files of a task in transfer at once, a 4 MiB
    /// read-ahead window, 6 attempts per
    /// request with backoff from 50 ms to 2 s, a request timeout of 30 s.
    fn default() -> Self {
        ObjectStorageOptions {
            part_size: 8 << 20,
            parts_in_flight: 4,
            parallel_transfers: 4,
            read_window: 4 << 20,
            attempts: 6,
            backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            request_timeout: Duration::from_secs(30),
        }
    }
}

impl ObjectStorageOptions {
    /// The size of a multipart upload's parts, and the size from which a file is uploaded in
    /// parts (at least 5 MiB on S3, which refuses smaller parts but the last; at least 1 byte).
    pub fn with_part_size(mut self, bytes: usize) -> Self {
        self.part_size = bytes.max(1);
        self
    }

    /// How many parts of one file upload at once (at least 1). Files of one checkpoint upload
    /// in parallel too, one per writer.
    pub fn with_parts_in_flight(mut self, parts: usize) -> Self {
        self.parts_in_flight = parts.max(1);
        self
    }

    /// How many files one task uploads (the tables of an incremental LSM checkpoint) or
    /// fetches (a native restore) at once (at least 1).
    pub fn with_parallel_transfers(mut self, files: usize) -> Self {
        self.parallel_transfers = files.max(1);
        self
    }

    /// The read-ahead window: a read of fewer bytes fetches this many (at least 4 KiB), and a
    /// sequential scan up to 4 times as many per request.
    pub fn with_read_window(mut self, bytes: usize) -> Self {
        self.read_window = bytes.max(4096);
        self
    }

    /// Attempts per request (at least 1), with backoff from `backoff` doubling up to
    /// `max_backoff` between them.
    pub fn with_retries(
        mut self,
        attempts: usize,
        backoff: Duration,
        max_backoff: Duration,
    ) -> Self {
        self.attempts = attempts.max(1);
        self.backoff = backoff;
        self.max_backoff = max_backoff.max(backoff);
        self
    }

    /// The timeout of one request to a cloud store (its client retries a request that timed
    /// out).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The size of upload parts.
    pub fn part_size(&self) -> usize {
        self.part_size
    }

    /// Parts of one file in flight at once.
    pub fn parts_in_flight(&self) -> usize {
        self.parts_in_flight
    }

    /// The read-ahead window.
    pub fn read_window(&self) -> usize {
        self.read_window
    }
}

/// A [`Storage`] on an object store, rooted at a prefix of it.
///
/// An object store has no directories, no rename and no append: objects appear whole when
/// their upload completes and are never partly visible. This storage maps the [`Storage`]
/// interface onto that (spec/checkpoint-protocol.md section 9 states the rules):
///
/// - a file made with [`create`](Storage::create) is invisible until
///   [`sync`](WritableFile::sync) publishes it whole ([`Storage::publishes_on_sync`]): one
///   `PUT` for a file smaller than a part, a multipart upload otherwise, with at most
///   [`parts_in_flight`](ObjectStorageOptions::parts_in_flight) parts uploading at once (the
///   memory a writer holds is bounded by `(parts_in_flight + 1) × part_size`); a writer
///   dropped unpublished aborts its upload;
/// - [`write_new`](Storage::write_new) is a conditional create (`If-None-Match: *`) where the
///   store supports it;
/// - directories exist while objects are under them: creating and syncing one does nothing;
///   on a `file://` root, removing one uses the file system's calls, which remove a symbolic
///   link rather than the files behind it, and deletions leave no empty directory behind;
/// - [`rename`](Storage::rename) copies then deletes (not atomic: the checkpoint protocol does
///   not rename on a store that publishes on sync);
/// - reads are ranged `GET`s through a read-ahead window of
///   [`read_window`](ObjectStorageOptions::read_window) bytes;
/// - every request is retried with exponential backoff on errors that may pass (the cloud
///   clients also retry 5xx answers and timeouts themselves).
///
/// ```
/// use flowstate::storage::{ObjectStorage, Storage};
///
/// let storage = ObjectStorage::from_url("memory://doc-example/root", Default::default())?;
/// storage.write_atomic("chk-1/_metadata", b"complete")?;
/// assert_eq!(storage.list_dir("chk-1")?, ["_metadata"]);
/// # Ok::<(), flowstate::Error>(())
/// ```
#[derive(Clone)]
pub struct ObjectStorage {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    url: String,
    options: ObjectStorageOptions,
    runtime: Runtime,
    /// The store of a `file://` URL, whose directories are real: removed with the file
    /// system's own calls, which never follow a symbolic link out of the root.
    /// Its root directory (canonical, as the store resolves paths from it).
    local: Option<(Arc<object_store::local::LocalFileSystem>, PathBuf)>,
}

/// The runtime the blocking calls run their requests on; shut down without waiting.
struct Runtime(Option<tokio::runtime::Runtime>);

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl fmt::Debug for ObjectStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectStorage")
            .field("url", &self.inner.url)
            .field("store", &self.inner.store.to_string())
            .finish_non_exhaustive()
    }
}

/// The in-memory stores of `memory://` URLs, by name, shared within the process.
fn memory_stores() -> &'static parking_lot::Mutex<HashMap<String, Arc<InMemory>>> {
    static STORES: OnceLock<parking_lot::Mutex<HashMap<String, Arc<InMemory>>>> = OnceLock::new();
    STORES.get_or_init(Default::default)
}

fn config_error(url: &str, what: impl fmt::Display) -> Error {
    Error::InvalidConfig(format!("checkpoint URL {url}: {what}"))
}

impl ObjectStorage {
    /// Opens the object store a URL names, rooted at the URL's path:
    ///
    /// - `s3://bucket/prefix` (also `s3a://`): Amazon S3 or a compatible server, configured from
    ///   the environment as the `object_store` crate reads it: `AWS_ACCESS_KEY_ID`,
    ///   `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL` (a
    ///   compatible server, such as MinIO), `AWS_ALLOW_HTTP=true` (an endpoint without TLS), …;
    /// - `gs://bucket/prefix`: Google Cloud Storage (`GOOGLE_SERVICE_ACCOUNT`, …);
    /// - `az://container/prefix` (also `azure://`, `abfs://`, `abfss://`): Azure Blob Storage
    ///   (`AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`, …);
    /// - `file:///absolute/path`: a local directory (created if missing), through the object
    ///   store interface;
    /// - `memory://name/prefix`: an in-memory store shared by every `memory://name` URL of the
    ///   process (for tests and demonstrations; gone with the process).
    ///
    /// A URL that does not parse, an unknown scheme or an incomplete configuration is
    /// [`Error::InvalidConfig`] naming the URL. Nothing is contacted yet.
    pub fn from_url(url: &str, options: ObjectStorageOptions) -> Result<Self> {
        let parsed = url::Url::parse(url).map_err(|e| config_error(url, e))?;
        let retry = RetryConfig {
            max_retries: options.attempts.saturating_sub(1).max(2),
            retry_timeout: options.request_timeout.saturating_mul(4),
            ..RetryConfig::default()
        };
        // Set key by key: the builders' client options hold what the environment set
        // (`AWS_ALLOW_HTTP`, …), which replacing them would drop.
        let timeout = format!("{}ms", options.request_timeout.as_millis());
        let path_prefix = parsed.path().trim_matches('/').to_string();
        // A cloud store from its builder: the environment, then the URL, retries, timeout.
        macro_rules! cloud {
            ($builder:ty, $key:expr) => {
                Arc::new(
                    <$builder>::from_env()
                        .with_url(url)
                        .with_retry(retry)
                        .with_config($key(ClientConfigKey::Timeout), &timeout)
                        .build()
                        .map_err(|e| config_error(url, e))?,
                ) as Arc<dyn ObjectStore>
            };
        }
        let mut local = None;
        let (store, prefix): (Arc<dyn ObjectStore>, String) = match parsed.scheme() {
            "s3" | "s3a" => (
                cloud!(
                    object_store::aws::AmazonS3Builder,
                    object_store::aws::AmazonS3ConfigKey::Client
                ),
                path_prefix,
            ),
            "gs" => (
                cloud!(
                    object_store::gcp::GoogleCloudStorageBuilder,
                    object_store::gcp::GoogleConfigKey::Client
                ),
                path_prefix,
            ),
            "az" | "azure" | "abfs" | "abfss" => (
                cloud!(
                    object_store::azure::MicrosoftAzureBuilder,
                    object_store::azure::AzureConfigKey::Client
                ),
                path_prefix,
            ),
            "file" => {
                let dir = parsed
                    .to_file_path()
                    .map_err(|()| config_error(url, "not an absolute local path"))?;
                std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
                // Directories emptied by deletions go too: a directory exists while objects
                // are under it.
                let store = Arc::new(
                    object_store::local::LocalFileSystem::new_with_prefix(&dir)
                        .map_err(|e| config_error(url, e))?
                        .with_automatic_cleanup(true),
                );
                let root = std::fs::canonicalize(&dir).map_err(|e| Error::io(&dir, e))?;
                local = Some((Arc::clone(&store), root));
                (store, String::new())
            }
            "memory" => {
                let name = parsed.host_str().unwrap_or_default().to_string();
                let store = Arc::clone(memory_stores().lock().entry(name).or_default());
                (store, path_prefix)
            }
            other => {
                return Err(config_error(
                    url,
                    format!(
                        "unknown scheme {other:?}: use s3://, gs://, az://, file:// or memory://"
                    ),
                ))
            }
        };
        let mut storage = Self::new(store, &prefix, url, options)?;
        if let Some(inner) = Arc::get_mut(&mut storage.inner) {
            inner.local = local;
        }
        Ok(storage)
    }

    /// A storage on `store` rooted at `prefix` (`""` for the store's root); `name` names it in
    /// messages (its URL).
    pub fn new(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        name: &str,
        options: ObjectStorageOptions,
    ) -> Result<Self> {
        let prefix = ObjectPath::parse(prefix).map_err(|e| config_error(name, e))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("flowstate-object-store")
            .enable_all()
            .build()
            .map_err(|e| Error::io(name, e))?;
        Ok(ObjectStorage {
            inner: Arc::new(Inner {
                store,
                prefix,
                url: name.to_string(),
                options,
                runtime: Runtime(Some(runtime)),
                local: None,
            }),
        })
    }

    /// The URL (or name) this storage was opened with.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// The object store underneath.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner.store
    }

    /// The options in force.
    pub fn options(&self) -> &ObjectStorageOptions {
        &self.inner.options
    }
}

impl Inner {
    fn runtime(&self) -> &tokio::runtime::Runtime {
        // Only `Drop` takes it out.
        self.runtime
            .0
            .as_ref()
            .expect("the runtime is present until the storage is dropped")
    }

    /// Runs `fut` to completion on this storage's runtime, from any thread (inside another
    /// runtime too: the future then runs from a helper thread).
    fn block<F>(&self, fut: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        let runtime = self.runtime();
        if tokio::runtime::Handle::try_current().is_ok() {
            std::thread::scope(|scope| {
                scope
                    .spawn(|| runtime.block_on(fut))
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
        } else {
            runtime.block_on(fut)
        }
    }

    /// Runs the request `op` makes, again after an error that may pass, with backoff.
    fn retry<T, F, Fut>(&self, path: &str, op: F) -> Result<T>
    where
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = object_store::Result<T>> + Send,
        T: Send,
    {
        self.block(self.retried(op))
            .map_err(|err| object_error(&self.url, path, err))
    }

    /// The request `op` makes, each attempt cut at the request timeout, tried again after an
    /// error that may pass (a timeout too) with exponential backoff, up to the attempts set.
    async fn retried<T, F, Fut>(&self, mut op: F) -> object_store::Result<T>
    where
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = object_store::Result<T>> + Send,
        T: Send,
    {
        let mut backoff = self.options.backoff;
        let mut attempt = 1;
        loop {
            let result = match tokio::time::timeout(self.options.request_timeout, op()).await {
                Ok(result) => result,
                Err(_) => Err(object_store::Error::Generic {
                    store: "ObjectStorage",
                    source: format!(
                        "no answer within the request timeout of {:?}",
                        self.options.request_timeout
                    )
                    .into(),
                }),
            };
            match result {
                Err(err) if attempt < self.options.attempts && transient(&err) => {
                    tokio::time::sleep(backoff).await;
                    backoff = backoff.saturating_mul(2).min(self.options.max_backoff);
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Waits for a step of a multipart upload (parts to finish, the completion), which the
    /// store's client retries request by request: at most as long as every attempt of one
    /// request may take, then an error (a store that stalls fails the file, never hangs it).
    fn multipart_step<T, Fut>(&self, path: &str, step: Fut) -> Result<T>
    where
        Fut: Future<Output = object_store::Result<T>> + Send,
        T: Send,
    {
        let limit = self
            .options
            .request_timeout
            .saturating_mul(u32::try_from(self.options.attempts).unwrap_or(u32::MAX));
        match self.block(async { tokio::time::timeout(limit, step).await }) {
            Ok(result) => result.map_err(|e| object_error(&self.url, path, e)),
            Err(_) => Err(Error::io(
                url_path(&self.url, path),
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the multipart upload made no progress within {limit:?}"),
                ),
            )),
        }
    }

    /// The object of relative path `path` (checked), or the root prefix for [`ROOT`].
    fn location(&self, path: &str) -> ObjectPath {
        if path == ROOT {
            return self.prefix.clone();
        }
        let mut location = self.prefix.clone();
        for part in path.split('/') {
            location = location.child(part);
        }
        location
    }

    /// The names directly under `dir` (objects and common prefixes), sorted.
    fn names_under(&self, dir: &str) -> Result<BTreeSet<String>> {
        let location = self.location(dir);
        let listed = self.retry(dir, || self.store.list_with_delimiter(Some(&location)))?;
        let mut names = BTreeSet::new();
        for path in listed
            .common_prefixes
            .iter()
            .chain(listed.objects.iter().map(|o| &o.location))
        {
            // Keys hold names percent-encoded where `object_store::path` encodes them (`%`,
            // `~`, `#`, `[`, …: `location` builds keys with `child`): listed as written.
            if let Some(name) = path.filename() {
                let decoded = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
                names.insert(decoded.into_owned());
            }
        }
        Ok(names)
    }

    fn is_object(&self, path: &str) -> Result<bool> {
        let location = self.location(path);
        match self.block(self.head_retried(&location)) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(err) => Err(object_error(&self.url, path, err)),
        }
    }

    /// Removes the directory of `location` on a `file://` root with the file system's calls
    /// (a listing would follow symbolic links and delete the files behind them): a link is
    /// removed, not followed; then the parents it leaves empty, up to the root.
    fn remove_local_dir(
        &self,
        local: &object_store::local::LocalFileSystem,
        root: &std::path::Path,
        location: &ObjectPath,
        path: &str,
    ) -> Result<()> {
        let dir = local
            .path_to_filesystem(location)
            .map_err(|e| object_error(&self.url, path, e))?;
        let removed = match std::fs::symlink_metadata(&dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => Err(e),
            Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&dir),
            Ok(_) => std::fs::remove_file(&dir),
        };
        removed.map_err(|e| Error::io(&dir, e))?;
        let mut parent = dir.parent();
        while let Some(at) = parent.filter(|at| *at != root && at.starts_with(root)) {
            if std::fs::remove_dir(at).is_err() {
                break;
            }
            parent = at.parent();
        }
        Ok(())
    }

    /// `HEAD` with this storage's retries (a not-found answer is final).
    async fn head_retried(
        &self,
        location: &ObjectPath,
    ) -> object_store::Result<object_store::ObjectMeta> {
        self.retried(|| self.store.head(location)).await
    }
}

/// Whether a request that failed with `err` may succeed if tried again.
fn transient(err: &object_store::Error) -> bool {
    use object_store::Error as E;
    !matches!(
        err,
        E::NotFound { .. }
            | E::InvalidPath { .. }
            | E::NotSupported { .. }
            | E::AlreadyExists { .. }
            | E::Precondition { .. }
            | E::NotModified { .. }
            | E::NotImplemented
            | E::PermissionDenied { .. }
            | E::Unauthenticated { .. }
            | E::UnknownConfigurationKey { .. }
    )
}

/// An object store's error as the engine's I/O error on `path`, naming the store.
fn object_error(url: &str, path: &str, err: object_store::Error) -> Error {
    use object_store::Error as E;
    let kind = match &err {
        E::NotFound { .. } => io::ErrorKind::NotFound,
        E::AlreadyExists { .. } => io::ErrorKind::AlreadyExists,
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => io::ErrorKind::PermissionDenied,
        E::NotImplemented | E::NotSupported { .. } => io::ErrorKind::Unsupported,
        _ => io::ErrorKind::Other,
    };
    Error::io(url_path(url, path), io::Error::new(kind, err.to_string()))
}

/// `path` under the storage's URL, as errors name it.
fn url_path(url: &str, path: &str) -> PathBuf {
    PathBuf::from(format!("{}/{path}", url.trim_end_matches('/')))
}

impl Storage for ObjectStorage {
    fn create(&self, path: &str) -> Result<Box<dyn WritableFile>> {
        components(path, false)?;
        Ok(Box::new(ObjectWritable {
            inner: Arc::clone(&self.inner),
            location: self.inner.location(path),
            path: path.to_string(),
            buf: Vec::new(),
            upload: None,
            len: 0,
            published: false,
            failed: false,
        }))
    }

    fn open(&self, path: &str) -> Result<Box<dyn ReadableFile>> {
        components(path, false)?;
        let location = self.inner.location(path);
        let meta = self
            .inner
            .block(self.inner.head_retried(&location))
            .map_err(|e| object_error(&self.inner.url, path, e))?;
        Ok(Box::new(ObjectReadable {
            inner: Arc::clone(&self.inner),
            location,
            path: path.to_string(),
            len: meta.size,
            window: Mutex::new(None),
        }))
    }

    /// Copies `from` to `to`, then deletes `from`: not atomic (an object store has no
    /// rename), and never used by the checkpoint protocol on this storage.
    fn rename(&self, from: &str, to: &str) -> Result<()> {
        components(from, false)?;
        components(to, false)?;
        let (source, target) = (self.inner.location(from), self.inner.location(to));
        self.inner
            .retry(from, || self.inner.store.copy(&source, &target))?;
        self.inner.retry(from, || self.inner.store.delete(&source))
    }

    /// Deletes the object; deleting one that is not there succeeds, as on S3.
    fn remove_file(&self, path: &str) -> Result<()> {
        components(path, false)?;
        let location = self.inner.location(path);
        match self
            .inner
            .retry(path, || self.inner.store.delete(&location))
        {
            Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// Does nothing: a directory exists while objects are under it.
    fn create_dir_all(&self, path: &str) -> Result<()> {
        components(path, true)?;
        Ok(())
    }

    fn remove_dir_all(&self, path: &str) -> Result<()> {
        components(path, false)?;
        if path == ROOT {
            return Err(invalid(path, "the root directory cannot be removed"));
        }
        let location = self.inner.location(path);
        if let Some((local, root)) = &self.inner.local {
            return self.inner.remove_local_dir(local, root, &location, path);
        }
        let store = &self.inner.store;
        self.inner.retry(path, || async {
            let objects: Vec<ObjectPath> = store
                .list(Some(&location))
                .map_ok(|meta| meta.location)
                .try_collect()
                .await?;
            let stream = futures::stream::iter(objects.into_iter().map(Ok)).boxed();
            store
                .delete_stream(stream)
                .try_for_each(|_| async { Ok(()) })
                .await
        })
    }

    /// Does nothing: every completed upload is durable.
    fn sync_dir(&self, dir: &str) -> Result<()> {
        components(dir, true)?;
        Ok(())
    }

    /// The names of the objects and prefixes directly under `dir`, sorted; an error if `dir`
    /// is an object with nothing under it.
    fn list_dir(&self, dir: &str) -> Result<Vec<String>> {
        components(dir, true)?;
        let names = self.inner.names_under(dir)?;
        if names.is_empty() && dir != ROOT && self.inner.is_object(dir)? {
            return Err(Error::io(
                dir,
                io::Error::new(io::ErrorKind::InvalidInput, "an object, not a directory"),
            ));
        }
        Ok(names.into_iter().collect())
    }

    fn exists(&self, path: &str) -> Result<bool> {
        components(path, true)?;
        if path == ROOT {
            return Ok(true);
        }
        Ok(self.inner.is_object(path)? || !self.inner.names_under(path)?.is_empty())
    }

    fn publishes_on_sync(&self) -> bool {
        true
    }

    fn parallel_transfers(&self) -> usize {
        self.inner.options.parallel_transfers
    }

    /// One `PUT`: an object store never shows a part of an object.
    fn write_atomic(&self, path: &str, bytes: &[u8]) -> Result<()> {
        components(path, false)?;
        let location = self.inner.location(path);
        let payload = PutPayload::from(bytes.to_vec());
        self.inner
            .retry(path, || self.inner.store.put(&location, payload.clone()))?;
        Ok(())
    }

    /// A conditional `PUT` (`If-None-Match: *`) where the store supports it; where it does
    /// not, a check then a `PUT` (safe while one owner writes the root). An attempt that
    /// finds the object already there after an earlier attempt's answer was lost compares
    /// the bytes: the same bytes are success.
    fn write_new(&self, path: &str, bytes: &[u8]) -> Result<()> {
        components(path, false)?;
        let location = self.inner.location(path);
        let payload = PutPayload::from(bytes.to_vec());
        let create = PutOptions::from(PutMode::Create);
        let mut attempts = 0;
        let result = self.inner.retry(path, || {
            attempts += 1;
            self.inner
                .store
                .put_opts(&location, payload.clone(), create.clone())
        });
        match result {
            Ok(_) => Ok(()),
            Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::Unsupported => {
                if self.inner.is_object(path)? {
                    return Err(already_exists(path));
                }
                self.write_atomic(path, bytes)
            }
            Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::AlreadyExists => {
                if attempts > 1
                    && self.read_all(path, bytes.len() as u64).ok().as_deref() == Some(bytes)
                {
                    Ok(())
                } else {
                    Err(already_exists(path))
                }
            }
            Err(err) => Err(err),
        }
    }
}

fn already_exists(path: &str) -> Error {
    Error::io(
        path,
        io::Error::new(io::ErrorKind::AlreadyExists, "the object exists already"),
    )
}

/// A file being uploaded: bytes gather in memory up to one part; a larger file becomes a
/// multipart upload with a bounded number of parts in flight. Sync publishes it.
struct ObjectWritable {
    inner: Arc<Inner>,
    location: ObjectPath,
    path: String,
    /// Bytes not yet handed to an upload (less than a part once an upload runs).
    buf: Vec<u8>,
    upload: Option<WriteMultipart>,
    len: u64,
    published: bool,
    failed: bool,
}

impl fmt::Debug for ObjectWritable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectWritable")
            .field("path", &self.path)
            .field("len", &self.len)
            .field("multipart", &self.upload.is_some())
            .field("published", &self.published)
            .finish_non_exhaustive()
    }
}

impl ObjectWritable {
    fn fail(&mut self, err: Error) -> Error {
        self.failed = true;
        err
    }

    /// Hands the buffered bytes to the multipart upload (starting it), a part at a time,
    /// waiting while `parts_in_flight` parts are uploading.
    fn upload_buffered(&mut self) -> Result<()> {
        let inner = Arc::clone(&self.inner);
        let part_size = inner.options.part_size;
        if self.upload.is_none() {
            let location = self.location.clone();
            let upload = inner.retry(&self.path, || inner.store.put_multipart(&location))?;
            self.upload = Some(WriteMultipart::new_with_chunk_size(upload, part_size));
        }
        let Some(upload) = self.upload.as_mut() else {
            unreachable!("the upload was started above");
        };
        let whole = self.buf.len() / part_size * part_size;
        for part in self.buf[..whole].chunks(part_size) {
            inner.multipart_step(
                &self.path,
                upload.wait_for_capacity(inner.options.parts_in_flight),
            )?;
            // Part uploads are spawned on the storage's runtime.
            let _context = inner.runtime().enter();
            upload.write(part);
        }
        self.buf.drain(..whole);
        Ok(())
    }

    fn publish(&mut self) -> Result<()> {
        let inner = Arc::clone(&self.inner);
        match self.upload.take() {
            None => {
                let payload = PutPayload::from(std::mem::take(&mut self.buf));
                let location = &self.location;
                inner.retry(&self.path, || inner.store.put(location, payload.clone()))?;
            }
            Some(mut upload) => {
                {
                    let _context = inner.runtime().enter();
                    upload.write(&self.buf);
                }
                self.buf = Vec::new();
                inner.multipart_step(&self.path, upload.finish())?;
            }
        }
        Ok(())
    }
}

impl WritableFile for ObjectWritable {
    fn write_all(&mut self, buf: &[u8]) -> Result<()> {
        if self.failed || self.published {
            let why = if self.failed {
                "its upload failed earlier"
            } else {
                "an object cannot be appended to once published"
            };
            return Err(Error::io(
                &self.path,
                io::Error::other(format!("cannot write: {why}")),
            ));
        }
        self.buf.extend_from_slice(buf);
        self.len += buf.len() as u64;
        if self.buf.len() >= self.inner.options.part_size {
            self.upload_buffered().map_err(|e| self.fail(e))?;
        }
        Ok(())
    }

    /// Publishes the object (completes its upload); nothing more can be written after.
    fn sync(&mut self) -> Result<()> {
        if self.published {
            return Ok(());
        }
        if self.failed {
            return Err(Error::io(
                &self.path,
                io::Error::other("cannot publish: its upload failed earlier"),
            ));
        }
        self.publish().map_err(|e| self.fail(e))?;
        self.published = true;
        Ok(())
    }

    fn len(&self) -> u64 {
        self.len
    }
}

impl Drop for ObjectWritable {
    /// An upload never completed is aborted (in the background: its parts are discarded).
    fn drop(&mut self) {
        if let Some(upload) = self.upload.take() {
            if let Some(runtime) = self.inner.runtime.0.as_ref() {
                runtime.spawn(async move {
                    let _ = upload.abort().await;
                });
            }
        }
    }
}

/// An object open for reading: its size from `HEAD`, its bytes by ranged `GET`s through a
/// read-ahead window.
struct ObjectReadable {
    inner: Arc<Inner>,
    location: ObjectPath,
    path: String,
    len: u64,
    /// The last window fetched: its offset and bytes.
    window: Mutex<Option<(u64, bytes::Bytes)>>,
}

impl fmt::Debug for ObjectReadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectReadable")
            .field("path", &self.path)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl ObjectReadable {
    fn get(&self, range: Range<u64>) -> Result<bytes::Bytes> {
        let expected = range.end - range.start;
        let store = &self.inner.store;
        let location = &self.location;
        let bytes = self
            .inner
            .retry(&self.path, || store.get_range(location, range.clone()))?;
        if bytes.len() as u64 != expected {
            return Err(Error::io(
                &self.path,
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "a ranged read returned {} bytes of {expected}: the object changed",
                        bytes.len()
                    ),
                ),
            ));
        }
        Ok(bytes)
    }
}

impl ReadableFile for ObjectReadable {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        if !within(offset, buf.len(), self.len) {
            return Err(past_end(&self.path, offset, buf.len(), self.len));
        }
        if buf.is_empty() {
            return Ok(());
        }
        let end = offset + buf.len() as u64;
        let window_len = self.inner.options.read_window as u64;
        if buf.len() as u64 >= window_len {
            buf.copy_from_slice(&self.get(offset..end)?);
            return Ok(());
        }
        let mut window = self.window.lock();
        let cached = window
            .as_ref()
            .is_some_and(|(at, bytes)| *at <= offset && end <= at + bytes.len() as u64);
        if !cached {
            // A read that starts where the last window ended is a sequential scan (a checksum
            // pass, a copy): the window doubles, up to 4 times the configured one, so that a
            // scan takes fewer requests. Any other read starts over at the configured size.
            let sequential = window
                .as_ref()
                .is_some_and(|(at, bytes)| at + bytes.len() as u64 == offset);
            let len = match window.as_ref() {
                Some((_, bytes)) if sequential => {
                    (bytes.len() as u64 * 2).clamp(window_len, window_len * 4)
                }
                _ => window_len,
            };
            let fetched = self.get(offset..(offset + len).min(self.len))?;
            *window = Some((offset, fetched));
        }
        let Some((at, bytes)) = window.as_ref() else {
            unreachable!("the window was filled above");
        };
        let start = (offset - at) as usize;
        buf.copy_from_slice(&bytes[start..start + buf.len()]);
        Ok(())
    }
}
