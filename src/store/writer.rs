//! The state store off the async runtime (STYLE habit 11): one named OS thread owns the
//! `Store`; callers send jobs over a channel and `await` the commit they need.
//!
//! Group commit: `record` jobs that are already queued when the writer gets to them are
//! written in one transaction (up to `WriterOptions::max_batch`), and each caller is answered
//! only after that commit. While one commit waits for its fsync, the next batch forms by
//! itself, so a busy daemon pays one fsync for many calls and an idle one adds no delay.
//! Every other job (intents, runs, the resolution cache, reads, `with`) runs alone, in queue
//! order, and commits before its reply: a record is never moved past a later job.
//!
//! A caller that stops waiting (its future dropped) does not cancel its job: a confirmed
//! call that was sent is still recorded (SPEC 6.2).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{CallRecord, Delta, Result, Store, StoreError};
use crate::plan::Known;

/// How the writer batches records.
#[derive(Clone, Copy, Debug)]
pub struct WriterOptions {
    /// Most records written in one transaction.
    pub max_batch: usize,
    /// How long to wait for more records after the first of a batch. Zero (the default)
    /// takes only what is already queued: callers await their commit, so a fixed wait
    /// mostly adds latency (see the benchmark in `store::tests`).
    pub linger: Duration,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            max_batch: 256,
            linger: Duration::ZERO,
        }
    }
}

/// What the writer has done so far (for tests, metrics and the benchmark).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// `record` jobs handed to the writer.
    pub submitted: u64,
    /// Records committed.
    pub records: u64,
    /// Transactions that committed records (one per batch, or one per record after a
    /// batch failed).
    pub transactions: u64,
    /// Batches whose transaction failed and were written again one record at a time.
    pub fallbacks: u64,
}

#[derive(Default)]
struct Counters {
    submitted: AtomicU64,
    records: AtomicU64,
    transactions: AtomicU64,
    fallbacks: AtomicU64,
}

impl Counters {
    fn committed(&self, records: usize) {
        self.records.fetch_add(records as u64, Ordering::Relaxed);
        self.transactions.fetch_add(1, Ordering::Relaxed);
    }
}

struct RecordJob {
    run: i64,
    call: CallRecord,
    delta: Delta,
    reply: oneshot::Sender<Result<i64>>,
}

enum Job {
    Record(Box<RecordJob>),
    /// Any other work; the closure sends its own reply.
    Call(Box<dyn FnOnce(&mut Store) + Send>),
    /// Stop after what is queued before it; answered once the database is closed.
    Close(oneshot::Sender<Result<()>>),
}

/// A handle on the store's writer thread. Cheap to clone; the thread ends when `close` is
/// called or the last handle is dropped.
#[derive(Clone)]
pub struct Writer {
    /// Jobs for the thread, in order.
    jobs: mpsc::Sender<Job>,
    /// The database file, for `StoreError::Closed`.
    path: Arc<PathBuf>,
    /// Kept by the thread, read by `stats`.
    counters: Arc<Counters>,
    /// The thread, joined by `close` (taken once; a poisoned lock is still usable).
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
    /// The store writes under a lease (PostgreSQL): `check_fence` asks it.
    fenced: bool,
    /// The lease's local deadline, checked after the store's answer.
    guard: Option<super::lease::Guard>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("path", &self.path)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Writer {
    /// Moves `store` onto its own thread, "rostersync-store", with the default options.
    pub fn spawn(store: Store) -> Writer {
        Writer::spawn_with(store, WriterOptions::default())
    }

    pub fn spawn_with(store: Store, options: WriterOptions) -> Writer {
        let path = Arc::new(PathBuf::from(store.location()));
        let fenced = store.fenced();
        let counters = Arc::new(Counters::default());
        let (jobs, queue) = mpsc::channel();
        let thread = {
            let counters = counters.clone();
            std::thread::Builder::new()
                .name("rostersync-store".into())
                .spawn(move || serve(store, queue, options, &counters))
        };
        let thread = match thread {
            Ok(t) => Some(t),
            Err(error) => {
                // The closure (store and queue) is gone: every call answers `Closed`.
                tracing::error!(%error, path = %path.display(), "cannot start the store writer thread");
                None
            }
        };
        Writer {
            jobs,
            path,
            counters,
            thread: Arc::new(Mutex::new(thread)),
            fenced,
            guard: None,
        }
    }

    /// Adds the lease's local deadline to `check_fence` (a run under a lease).
    pub fn with_guard(mut self, guard: super::lease::Guard) -> Writer {
        self.guard = Some(guard);
        self
    }

    /// Before every vendor write request (SPEC 6.7): on a store opened under a lease, the
    /// lease still holds, on the server (a transaction of its own) and on this machine's
    /// clock. Answers at once, without a job, for a store without a lease (SQLite).
    pub async fn check_fence(&self) -> Result<()> {
        if !self.fenced {
            return Ok(());
        }
        self.with(|s| s.check_fence()).await?;
        match &self.guard {
            Some(g) if !g.holds() => Err(StoreError::LeaseRanOut {
                location: self.path.display().to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// The database file (or the URL of a PostgreSQL state).
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn stats(&self) -> WriterStats {
        let c = &self.counters;
        WriterStats {
            submitted: c.submitted.load(Ordering::Relaxed),
            records: c.records.load(Ordering::Relaxed),
            transactions: c.transactions.load(Ordering::Relaxed),
            fallbacks: c.fallbacks.load(Ordering::Relaxed),
        }
    }

    fn closed(&self) -> StoreError {
        StoreError::Closed {
            path: self.path.to_path_buf(),
        }
    }

    fn send(&self, job: Job) -> Result<()> {
        self.jobs.send(job).map_err(|_| self.closed())
    }

    /// Records a confirmed call and its state change in one transaction (possibly shared
    /// with other records queued at the same time); returns the call id once committed.
    pub async fn record(&self, run: i64, call: CallRecord, delta: Delta) -> Result<i64> {
        let (reply, answer) = oneshot::channel();
        self.send(Job::Record(Box::new(RecordJob {
            run,
            call,
            delta,
            reply,
        })))?;
        self.counters.submitted.fetch_add(1, Ordering::Relaxed);
        answer.await.map_err(|_| self.closed())?
    }

    /// Runs `f` on the writer thread, in queue order; for calls without a method here.
    pub async fn with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let (reply, answer) = oneshot::channel();
        self.send(Job::Call(Box::new(move |store: &mut Store| {
            let _ = reply.send(f(store));
        })))?;
        answer.await.map_err(|_| self.closed())?
    }

    /// Writes down that a create is about to be sent (SPEC 6.2); committed on return.
    pub async fn write_intent(
        &self,
        run: i64,
        target: impl Into<String>,
        key: impl Into<String>,
        name: impl Into<String>,
    ) -> Result<()> {
        let (target, key, name) = (target.into(), key.into(), name.into());
        self.with(move |s| s.write_intent(run, &target, &key, &name))
            .await
    }

    /// Drops an intent: its operation ended, or its group was read back.
    pub async fn drop_intent(
        &self,
        target: impl Into<String>,
        key: impl Into<String>,
    ) -> Result<()> {
        let (target, key) = (target.into(), key.into());
        self.with(move |s| s.drop_intent(&target, &key)).await
    }

    /// Caches a resolution (None = the target has nobody with that email).
    pub async fn cache_resolution(
        &self,
        target: impl Into<String>,
        email: impl Into<String>,
        id: Option<String>,
    ) -> Result<()> {
        let (target, email) = (target.into(), email.into());
        self.with(move |s| s.cache_resolution(&target, &email, id.as_deref()))
            .await
    }

    /// Starts a run; returns its id.
    pub async fn begin_run(
        &self,
        command: impl Into<String>,
        full: bool,
        digest: impl Into<String>,
    ) -> Result<i64> {
        let (command, digest) = (command.into(), digest.into());
        self.with(move |s| s.begin_run(&command, full, &digest))
            .await
    }

    pub async fn finish_run(
        &self,
        run: i64,
        outcome: impl Into<String>,
        exit_code: i32,
        summary: impl Into<String>,
    ) -> Result<()> {
        let (outcome, summary) = (outcome.into(), summary.into());
        self.with(move |s| s.finish_run(run, &outcome, exit_code, &summary))
            .await
    }

    /// See [`Store::run_base`]; also the state generation now.
    pub async fn run_base(&self) -> Result<(Option<super::RunBase>, i64)> {
        self.with(|s| Ok((s.run_base()?, s.state_generation()?)))
            .await
    }

    /// See [`Store::prune_history`].
    pub async fn prune_history(&self, days: u32) -> Result<usize> {
        self.with(move |s| s.prune_history(days)).await
    }

    /// See [`Store::mark_converged`].
    pub async fn mark_converged(
        &self,
        run: i64,
        config_digest: String,
        unchanged_since: Option<i64>,
    ) -> Result<()> {
        self.with(move |s| s.mark_converged(run, &config_digest, unchanged_since))
            .await
    }

    /// The known state of one target, as of every job queued before this one.
    pub async fn known(&self, target: impl Into<String>) -> Result<Known> {
        let target = target.into();
        self.with(move |s| s.known(&target)).await
    }

    /// The resolution cache of one target: email -> member id (None = known not found).
    pub async fn resolution_cache(
        &self,
        target: impl Into<String>,
    ) -> Result<HashMap<String, Option<String>>> {
        let target = target.into();
        self.with(move |s| s.resolution_cache(&target)).await
    }

    /// See [`Store::snapshot`].
    pub async fn snapshot(&self, target: impl Into<String>) -> Result<super::TargetState> {
        let target = target.into();
        self.with(move |s| s.snapshot(&target)).await
    }

    /// See [`Store::facts`].
    pub async fn facts(&self, target: impl Into<String>) -> Result<super::Facts> {
        let target = target.into();
        self.with(move |s| s.facts(&target)).await
    }

    /// See [`Store::set_fact`].
    pub async fn set_fact(
        &self,
        target: impl Into<String>,
        name: impl Into<String>,
        value: Option<String>,
    ) -> Result<()> {
        let (target, name) = (target.into(), name.into());
        self.with(move |s| s.set_fact(&target, &name, value.as_deref()))
            .await
    }

    /// Finishes every job queued before this call, closes the database and joins the thread.
    /// Jobs other handles send afterwards answer `Closed`.
    pub async fn close(self) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.send(Job::Close(reply))?;
        let closed = answer.await.map_err(|_| self.closed())?;
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            // The thread has answered and only returns now: this does not wait on IO.
            if thread.join().is_err() {
                tracing::error!(path = %self.path.display(), "the store writer thread panicked");
            }
        }
        closed
    }
}

/// The writer thread: jobs in order until `Close` or until every handle is gone.
fn serve(
    mut store: Store,
    queue: mpsc::Receiver<Job>,
    options: WriterOptions,
    counters: &Counters,
) {
    let mut next: Option<Job> = None;
    loop {
        let job = match next.take() {
            Some(job) => job,
            None => match queue.recv() {
                Ok(job) => job,
                Err(mpsc::RecvError) => break,
            },
        };
        match job {
            Job::Record(first) => {
                let mut batch = vec![*first];
                next = gather(&queue, &mut batch, options);
                commit(&mut store, batch, counters);
            }
            Job::Call(f) => f(&mut store),
            Job::Close(reply) => {
                let _ = reply.send(store.close());
                return;
            }
        }
    }
    if let Err(error) = store.close() {
        tracing::warn!(%error, "closing the state database");
    }
}

/// Adds the records queued behind the first one to `batch`; returns the first job that is
/// not a record, which must run after the batch commits.
fn gather(
    queue: &mpsc::Receiver<Job>,
    batch: &mut Vec<RecordJob>,
    options: WriterOptions,
) -> Option<Job> {
    let deadline = Instant::now() + options.linger;
    while batch.len() < options.max_batch.max(1) {
        let left = deadline.saturating_duration_since(Instant::now());
        let job = if left.is_zero() {
            queue.try_recv().ok()
        } else {
            queue.recv_timeout(left).ok()
        };
        match job {
            Some(Job::Record(r)) => batch.push(*r),
            Some(other) => return Some(other),
            None => break,
        }
    }
    None
}

/// Writes a batch in one transaction and answers each caller after the commit. If that
/// transaction fails, each record gets a transaction of its own, so one bad record fails
/// only its own caller.
fn commit(store: &mut Store, batch: Vec<RecordJob>, counters: &Counters) {
    let items: Vec<_> = batch.iter().map(|j| (j.run, &j.call, &j.delta)).collect();
    let result = store.record_many(&items);
    drop(items);
    match result {
        Ok(ids) => {
            counters.committed(batch.len());
            for (job, id) in batch.into_iter().zip(ids) {
                let _ = job.reply.send(Ok(id));
            }
        }
        Err(error) if batch.len() == 1 => {
            if let Some(job) = batch.into_iter().next() {
                let _ = job.reply.send(Err(error));
            }
        }
        Err(error) => {
            counters.fallbacks.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%error, records = batch.len(), "group commit failed; recording the calls one by one");
            for job in batch {
                let result = store.record(job.run, &job.call, &job.delta);
                if result.is_ok() {
                    counters.committed(1);
                }
                let _ = job.reply.send(result);
            }
        }
    }
}
