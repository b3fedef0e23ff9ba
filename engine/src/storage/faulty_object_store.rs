//! [`FaultyObjectStore`]: an [`ObjectStore`] wrapper that fails, or delays, requests on
//! command, for fault tests of [`ObjectStorage`](super::ObjectStorage) (the object-store
//! counterpart of [`MemStorage`](super::MemStorage)'s injected failures).

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};
use parking_lot::Mutex;

/// What the next requests meet.
#[derive(Debug, Default)]
struct Faults {
    /// Requests seen so far (every call, every multipart part and completion).
    requests: u64,
    /// Requests from this one on fail, until healed: the server is gone.
    fail_from: Option<u64>,
    /// Every `n`th request fails once, as a `503 Slow Down` would.
    fail_every: u64,
    /// Every `n`th request waits this long before it goes through, as a stalled connection.
    hang: Option<(u64, Duration)>,
    /// Requests from this one on wait this long: a server that stopped answering.
    hang_from: Option<(u64, Duration)>,
    lose_answer_in: Option<u64>,
    /// Requests failed or delayed so far.
    injected: u64,
    /// Bytes uploaded by the `PUT`s and parts that went through.
    bytes_put: u64,
    /// Bytes downloaded by ranged `GET`s.
    bytes_got: u64,
}

/// What happens to one request.
enum Fate {
    Pass,
    Fail(&'static str),
    Hang(Duration),
}

/// An [`ObjectStore`] that passes requests to another one, failing or delaying them as told:
/// from a given request on ([`fail_after`](Self::fail_after), a server that went away), every
/// `n`th one once ([`fail_every`](Self::fail_every), a server answering 503), or every `n`th
/// one late ([`hang_every`](Self::hang_every), a stalled connection that the client's timeout
/// cuts). A failed request changes nothing in the store underneath. Clones share the faults.
#[derive(Clone)]
pub struct FaultyObjectStore {
    inner: Arc<dyn ObjectStore>,
    faults: Arc<Mutex<Faults>>,
}

impl fmt::Debug for FaultyObjectStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyObjectStore")
            .field("inner", &self.inner.to_string())
            .field("faults", &*self.faults.lock())
            .finish()
    }
}

impl fmt::Display for FaultyObjectStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Faulty({})", self.inner)
    }
}

impl FaultyObjectStore {
    /// Passes every request to `inner` until told otherwise.
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        FaultyObjectStore {
            inner,
            faults: Arc::default(),
        }
    }

    /// Fails the `n`th request from now (0: the next one) and every later one, until
    /// [`heal`](Self::heal).
    pub fn fail_after(&self, n: u64) {
        let mut faults = self.faults.lock();
        faults.fail_from = Some(faults.requests + n);
    }

    /// Fails every `n`th request once (0: none), a transient error that a retry gets past.
    pub fn fail_every(&self, n: u64) {
        self.faults.lock().fail_every = n;
    }

    /// Delays every `n`th request by `delay` (0: none) before passing it on.
    pub fn hang_every(&self, n: u64, delay: Duration) {
        self.faults.lock().hang = (n > 0).then_some((n, delay));
    }

    /// Carries out the write `n` writes from now (0: the next; writes are `PUT`s, deletions,
    /// copies and completions of multipart uploads that succeed), then answers it with a
    /// transient error: the request took effect and its answer was lost, so a retry finds
    /// its effect.
    pub fn lose_answer_after(&self, n: u64) {
        self.faults.lock().lose_answer_in = Some(n);
    }

    /// Delays the `n`th request from now (0: the next one) and every later one by `delay`,
    /// until [`heal`](Self::heal): a server that stopped answering.
    pub fn hang_after(&self, n: u64, delay: Duration) {
        let mut faults = self.faults.lock();
        faults.hang_from = Some((faults.requests + n, delay));
    }

    /// Stops every fault.
    pub fn heal(&self) {
        let mut faults = self.faults.lock();
        faults.fail_from = None;
        faults.fail_every = 0;
        faults.hang = None;
        faults.hang_from = None;
        faults.lose_answer_in = None;
    }

    /// The requests seen so far.
    pub fn requests(&self) -> u64 {
        self.faults.lock().requests
    }

    /// The requests failed or delayed so far.
    pub fn injected(&self) -> u64 {
        self.faults.lock().injected
    }

    /// The bytes uploaded so far by the `PUT`s and multipart parts that were passed on.
    pub fn bytes_put(&self) -> u64 {
        self.faults.lock().bytes_put
    }

    /// The bytes downloaded so far by ranged `GET`s.
    pub fn bytes_got(&self) -> u64 {
        self.faults.lock().bytes_got
    }

    fn count_put(&self, payload: &PutPayload) {
        self.faults.lock().bytes_put += payload.content_length() as u64;
    }

    fn fate(&self) -> Fate {
        let mut faults = self.faults.lock();
        faults.requests += 1;
        let n = faults.requests;
        let fate = if faults.fail_from.is_some_and(|from| n > from) {
            Fate::Fail("injected: the server is unreachable (connection refused)")
        } else if faults.fail_every > 0 && n % faults.fail_every == 0 {
            Fate::Fail("injected: 503 Slow Down")
        } else if let Some((_, delay)) = faults.hang_from.filter(|(from, _)| n > *from) {
            Fate::Hang(delay)
        } else if let Some((_, delay)) = faults.hang.filter(|(every, _)| n % every == 0) {
            Fate::Hang(delay)
        } else {
            Fate::Pass
        };
        if !matches!(fate, Fate::Pass) {
            faults.injected += 1;
        }
        fate
    }

    /// Waits or fails as this request's fate says.
    /// Whether the answer of the write just carried out is lost (an error in its place).
    fn answer<T>(&self, result: object_store::Result<T>) -> object_store::Result<T> {
        let mut faults = self.faults.lock();
        match faults.lose_answer_in {
            Some(0) if result.is_ok() => {
                faults.lose_answer_in = None;
                faults.injected += 1;
                Err(injected(
                    "injected: the answer was lost (the request took effect)",
                ))
            }
            Some(n) if result.is_ok() => {
                faults.lose_answer_in = Some(n - 1);
                result
            }
            _ => result,
        }
    }

    async fn gate(&self) -> object_store::Result<()> {
        match self.fate() {
            Fate::Pass => Ok(()),
            Fate::Fail(what) => Err(injected(what)),
            Fate::Hang(delay) => {
                tokio::time::sleep(delay).await;
                Ok(())
            }
        }
    }
}

fn injected(what: &'static str) -> object_store::Error {
    object_store::Error::Generic {
        store: "FaultyObjectStore",
        source: what.into(),
    }
}

#[async_trait]
impl ObjectStore for FaultyObjectStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.gate().await?;
        self.count_put(&payload);
        self.answer(self.inner.put_opts(location, payload, opts).await)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.gate().await?;
        let upload = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(FaultyUpload {
            store: self.clone(),
            inner: upload,
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.gate().await?;
        self.inner.get_opts(location, options).await
    }

    async fn get_range(&self, location: &Path, range: Range<u64>) -> object_store::Result<Bytes> {
        self.gate().await?;
        let bytes = self.inner.get_range(location, range).await?;
        self.faults.lock().bytes_got += bytes.len() as u64;
        Ok(bytes)
    }

    async fn head(&self, location: &Path) -> object_store::Result<ObjectMeta> {
        self.gate().await?;
        self.inner.head(location).await
    }

    async fn delete(&self, location: &Path) -> object_store::Result<()> {
        self.gate().await?;
        self.answer(self.inner.delete(location).await)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        match self.fate() {
            Fate::Fail(what) => futures::stream::once(async move { Err(injected(what)) }).boxed(),
            Fate::Pass | Fate::Hang(_) => self.inner.list(prefix),
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.gate().await?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.gate().await?;
        self.answer(self.inner.copy(from, to).await)
    }

    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.gate().await?;
        self.inner.copy_if_not_exists(from, to).await
    }
}

/// A multipart upload whose parts and completion meet the store's faults.
#[derive(Debug)]
struct FaultyUpload {
    store: FaultyObjectStore,
    inner: Box<dyn MultipartUpload>,
}

#[async_trait]
impl MultipartUpload for FaultyUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        match self.store.fate() {
            Fate::Fail(what) => Box::pin(async move { Err(injected(what)) }),
            Fate::Pass => {
                self.store.count_put(&data);
                self.inner.put_part(data)
            }
            Fate::Hang(delay) => {
                self.store.count_put(&data);
                let part = self.inner.put_part(data);
                Box::pin(async move {
                    tokio::time::sleep(delay).await;
                    part.await
                })
            }
        }
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        self.store.gate().await?;
        let result = self.inner.complete().await;
        self.store.answer(result)
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.store.gate().await?;
        self.inner.abort().await
    }
}
