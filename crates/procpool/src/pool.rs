//! [`Pool`], its [`PoolBuilder`], and per-call options ([`TaskCall`]).

use std::ffi::OsString;
use std::num::{NonZeroU64, NonZeroUsize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use procpool_sched::{ChunkPolicy, SchedulerConfig};
use procpool_worker::protocol::{self, InitializerCall};
use procpool_worker::{Plain, ShareValue, Task};

use crate::core::{DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_LIVENESS_TIMEOUT, PoolConfig, Shared};
use crate::error::{Error, ErrorKind, TaskError};
use crate::handle::TaskHandle;
use crate::job::TaskOptions;
use crate::map::{Map, MapUnordered};
use crate::stats::PoolStats;

/// A pool of worker processes that run [`#[procpool::task]`](crate::task) functions.
///
/// `Pool` is `Send + Sync`: share it by reference or in an `Arc`, and submit from any
/// number of threads. Dropping it is [`shutdown`](Pool::shutdown) (or
/// [`terminate`](Pool::terminate) while the thread is panicking).
///
/// # Examples
///
/// ```no_run
/// #[procpool::task]
/// fn cube(x: u64) -> u64 {
///     x * x * x
/// }
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     procpool::init();
///     let pool = procpool::Pool::new()?;
///     assert_eq!(pool.call(cube, 3)?, 27);
///     let cubes: Result<Vec<u64>, _> = pool.map(cube, 0..10).collect();
///     assert_eq!(cubes?[9], 729);
///     Ok(())
/// }
/// ```
pub struct Pool {
    shared: Arc<Shared>,
}

/// How a pool starts its worker processes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartMethod {
    /// Execute the worker program once per worker (the default).
    #[default]
    Spawn,
    /// Execute the worker program once as a fork server; each worker is a `fork` of it,
    /// which skips the program's start-up.
    ForkServer,
}

/// Configures and starts a [`Pool`]; from [`Pool::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct PoolBuilder {
    workers: Option<usize>,
    start_method: StartMethod,
    program: Option<PathBuf>,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    memory_limit: Option<u64>,
    initializer: Option<Result<InitializerCall, String>>,
    max_tasks_per_child: Option<u64>,
    handshake_timeout: Duration,
    terminate_grace: Duration,
    liveness_timeout: Option<Duration>,
    max_item_size: Option<usize>,
    chunk_policy: ChunkPolicy,
}

impl Pool {
    /// A pool with one worker per available CPU, running this program as its worker.
    ///
    /// The program's `main` must call [`procpool::init()`](crate::init) first.
    ///
    /// # Errors
    ///
    /// As [`PoolBuilder::build`].
    pub fn new() -> Result<Pool, Error> {
        Pool::builder().build()
    }

    /// A builder to configure the pool before starting it.
    pub fn builder() -> PoolBuilder {
        PoolBuilder {
            workers: None,
            start_method: StartMethod::Spawn,
            program: None,
            args: Vec::new(),
            envs: Vec::new(),
            memory_limit: None,
            initializer: None,
            max_tasks_per_child: None,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            terminate_grace: Duration::from_secs(1),
            liveness_timeout: Some(DEFAULT_LIVENESS_TIMEOUT),
            max_item_size: None,
            chunk_policy: ChunkPolicy::default(),
        }
    }

    /// Submits one call of `task` and returns a handle to its outcome.
    ///
    /// Never blocks for long and never fails here: a pool that is shut down yields a handle
    /// that is already finished with [`TaskError::PoolClosed`].
    pub fn submit<T: Task>(&self, task: T, args: T::Args) -> TaskHandle<T::Output> {
        let _ = task;
        self.shared.submit::<T>(args, TaskOptions::default())
    }

    /// Shares `value` with every worker of this pool, read-only and without copies: it is
    /// archived once into sealed shared memory, and the returned [`Shared`](crate::Shared) handle (cheap to
    /// clone, 16 bytes on the wire) can be passed to any number of tasks, which read it in
    /// place as `&Archived<T>`.
    ///
    /// Workers map the object once (each validates it the first time a task uses it) and
    /// keep it until the last handle in this process is dropped and no call holding one is
    /// in flight; workers started later (replacements, attached workers) get it before their
    /// first call. A handle passed to another pool's task fails that call with
    /// [`TaskError::BadArguments`].
    ///
    /// ```no_run
    /// # #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
    /// # struct Table { rows: Vec<u64> }
    /// #[procpool::task]
    /// fn lookup(table: procpool::Shared<Table>, row: u64) -> u64 {
    ///     table.rows[row as usize].to_native()
    /// }
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # procpool::init();
    /// # let pool = procpool::Pool::new()?;
    /// let table = pool.share(&Table { rows: (0..1_000_000).collect() })?;
    /// assert_eq!(pool.call(lookup, (table.clone(), 7))?, 7);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`] if the shared memory cannot be made, [`ErrorKind::Share`] if the
    /// value cannot be archived, [`ErrorKind::PoolClosed`] after shutdown.
    pub fn share<T: ShareValue>(&self, value: &T) -> Result<procpool_worker::Shared<T>, Error> {
        let shared = procpool_worker::share_value(value).map_err(share_error)?;
        self.shared.share_object(shared.object())?;
        Ok(shared)
    }

    /// Shares a slice of plain numbers (`u8`, `f64`, …) like [`share`](Pool::share), but as
    /// raw bytes (one copy, no archive): tasks read it as `&[E]`.
    ///
    /// # Errors
    ///
    /// As [`share`](Pool::share).
    pub fn share_slice<E: Plain>(&self, data: &[E]) -> Result<procpool_worker::Shared<[E]>, Error> {
        let shared = procpool_worker::share_slice(data).map_err(share_error)?;
        self.shared.share_object(shared.object())?;
        Ok(shared)
    }

    /// Runs one call of `task` and waits for its outcome (`Pool.apply` in Python).
    ///
    /// # Errors
    ///
    /// The call's [`TaskError`].
    pub fn call<T: Task>(&self, task: T, args: T::Args) -> Result<T::Output, TaskError> {
        let _ = task;
        self.shared.call::<T>(args, TaskOptions::default())
    }

    /// Applies `task` to every item of `input`, yielding outcomes in input order.
    ///
    /// Lazy: input is pulled as results are consumed, at most [`Map::window`] items ahead,
    /// so an endless iterator works in bounded memory. Tasks with several parameters take
    /// tuples. Dropping the iterator early cancels what has not started.
    pub fn map<T, I>(&self, task: T, input: I) -> Map<'_, T, I::IntoIter>
    where
        T: Task,
        I: IntoIterator<Item = T::Args>,
    {
        let _ = task;
        Map::new(&self.shared, input.into_iter(), TaskOptions::default())
    }

    /// Like [`map`](Pool::map), but yields `(input index, outcome)` as items finish.
    pub fn map_unordered<T, I>(&self, task: T, input: I) -> MapUnordered<'_, T, I::IntoIter>
    where
        T: Task,
        I: IntoIterator<Item = T::Args>,
    {
        let _ = task;
        MapUnordered::new(&self.shared, input.into_iter(), TaskOptions::default())
    }

    /// Runs a whole map in the background and returns a handle to all its outcomes, in input
    /// order (`Pool.map_async` in Python): wait on it, poll it, attach callbacks or `.await` it.
    ///
    /// The input is pulled on a background thread. The handle cannot be cancelled; dropping
    /// it does not stop the map.
    pub fn map_async<T, I>(
        &self,
        task: T,
        input: I,
    ) -> TaskHandle<Vec<Result<T::Output, TaskError>>>
    where
        T: Task,
        I: IntoIterator<Item = T::Args>,
        I::IntoIter: Send + 'static,
    {
        self.task(task).map_async(input)
    }

    /// Per-call options for `task`: `pool.task(t).timeout(d).retries(n).submit(args)`.
    pub fn task<T: Task>(&self, task: T) -> TaskCall<'_, T> {
        TaskCall {
            pool: self,
            task,
            options: TaskOptions::default(),
        }
    }

    /// Stops accepting work, waits until everything accepted has finished, then stops the
    /// workers and waits for them to exit. Idempotent.
    ///
    /// Called from an `on_done` callback (which runs on one of the pool's threads), it cannot
    /// wait for work whose outcomes that thread delivers: it stops accepting work and returns
    /// at once, and the pool stops its workers when the accepted work is done.
    pub fn shutdown(&self) {
        self.shared.shutdown();
    }

    /// Like [`shutdown`](Pool::shutdown), but waits at most `timeout` for accepted work.
    ///
    /// Returns `true` if the pool closed. On `false` the pool accepts no new work and what it
    /// has keeps running; call it again, or [`shutdown_now`](Pool::shutdown_now) or
    /// [`terminate`](Pool::terminate).
    pub fn shutdown_timeout(&self, timeout: Duration) -> bool {
        self.shared
            .shutdown_until(Instant::now().checked_add(timeout))
    }

    /// Stops accepting work, cancels what has not started ([`TaskError::Cancelled`]), waits
    /// for what is running, then stops the workers.
    ///
    /// Waits without bound for running tasks (a task that never ends keeps it waiting); see
    /// [`shutdown_now_timeout`](Pool::shutdown_now_timeout) for a bounded wait.
    pub fn shutdown_now(&self) {
        self.shared.shutdown_now();
    }

    /// Like [`shutdown_now`](Pool::shutdown_now), but waits at most `timeout` for running tasks.
    ///
    /// Returns `true` if the pool closed. On `false` the queued work is cancelled, no new work
    /// is accepted, and the running tasks go on; call [`terminate`](Pool::terminate) to end
    /// them, or wait again.
    pub fn shutdown_now_timeout(&self, timeout: Duration) -> bool {
        self.shared
            .shutdown_now_until(Instant::now().checked_add(timeout))
    }

    /// Ends every unfinished call with [`TaskError::Terminated`] and stops the workers:
    /// SIGTERM, a grace period, then SIGKILL.
    pub fn terminate(&self) {
        self.shared.terminate();
    }

    /// Accepts workers that attach themselves through a Unix socket at `path` (mode 0600),
    /// until the pool shuts down; returns the socket's path.
    ///
    /// A worker attaches by running `procpool-worker attach <path>` or by calling
    /// [`attach`](crate::attach) in a program built with the same tasks (or more). It passes the
    /// same handshake as a started worker (every task of this program), then gets work like any
    /// other; it is
    /// not replaced when it ends. A stale socket file at `path` is replaced.
    ///
    /// Each attaching process is handshaken on a thread of its own, so one that stays silent
    /// (until [`start_timeout`](PoolBuilder::start_timeout)) delays no other. A process that
    /// fails the handshake or runs as another user is refused: its channel is closed and it is
    /// killed; [`stats`](Pool::stats) counts refusals (`attach_refusals`) and keeps the last
    /// reason (`last_attach_refusal`), which is also logged as a `tracing` warning.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`] if the socket cannot be created (e.g. another pool listens there),
    /// [`ErrorKind::PoolClosed`] after shutdown.
    pub fn listen(&self, path: impl AsRef<std::path::Path>) -> Result<PathBuf, Error> {
        self.shared.listen(path.as_ref())
    }

    /// Whether the pool accepts new work.
    pub fn is_open(&self) -> bool {
        self.shared.is_open()
    }

    /// The number of workers the pool keeps running.
    pub fn workers(&self) -> usize {
        self.shared.n_workers()
    }

    /// Dormant reader threads a `submit` left asleep (tests of the core).
    #[cfg(test)]
    pub(crate) fn owed_readers(&self) -> usize {
        self.shared.owed_readers()
    }

    /// The capacity of the core's frame buffer (tests of the core).
    #[cfg(test)]
    pub(crate) fn frame_buffer_capacity(&self) -> usize {
        self.shared.frame_buffer_capacity()
    }

    /// Frames and objects waiting in the workers' outboxes (tests of the core).
    #[cfg(test)]
    pub(crate) fn outbox_len(&self) -> usize {
        self.shared.outbox_len()
    }

    /// Reader threads registered with the helpers (tests of the core).
    #[cfg(test)]
    pub(crate) fn attended_slots(&self) -> usize {
        self.shared.attended_slots()
    }

    /// The `max_tasks_per_child` budget left of each worker not stopping (tests of the core).
    #[cfg(test)]
    pub(crate) fn budgets_left(&self) -> Vec<u64> {
        self.shared.budgets_left()
    }

    /// A snapshot of the pool's counters.
    pub fn stats(&self) -> PoolStats {
        self.shared.stats()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.shared.terminate();
        } else {
            self.shared.shutdown();
        }
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("workers", &self.workers())
            .field("open", &self.is_open())
            .finish()
    }
}

impl PoolBuilder {
    /// How many worker processes to keep running (default: available parallelism).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// How workers are started (default [`StartMethod::Spawn`]).
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.start_method = method;
        self
    }

    /// The worker program (default: this program). It must call `procpool::init()` first
    /// in `main` and have every task of this program: the same tasks, or more (a superset); the
    /// handshake refuses a program that lacks any, naming what it lacks. A name without a `/`
    /// is looked up in `PATH` as `std::process::Command` does (the `PATH` set with
    /// [`env`](Self::env), else this process's).
    pub fn program(mut self, path: impl Into<PathBuf>) -> Self {
        self.program = Some(path.into());
        self
    }

    /// An extra command-line argument for the worker program.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// An environment variable for the worker processes (they inherit the rest).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Limits each worker's address space to `bytes` (`RLIMIT_AS`).
    ///
    /// A task that allocates beyond it sees the allocation fail: a `try_reserve` returns an
    /// error, any other allocation aborts the worker, which the pool handles like any worker
    /// death ([`TaskError::WorkerDied`], or a retry). Leave room for the program itself.
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.memory_limit = Some(bytes);
        self
    }

    /// A task every worker runs once at start, before any other; its output is available to
    /// later tasks in that worker through [`worker_state`](crate::worker_state).
    ///
    /// If it fails, [`build`](Self::build) fails with [`ErrorKind::InitializerFailed`].
    pub fn initializer<T: Task>(mut self, task: T, args: T::Args) -> Self {
        let _ = task;
        self.initializer =
            Some(protocol::encode_initializer::<T>(&args).map_err(|err| err.to_string()));
        self
    }

    /// Replaces a worker after it has run `n` items (`0` = never, the default).
    pub fn max_tasks_per_child(mut self, n: u64) -> Self {
        self.max_tasks_per_child = (n > 0).then_some(n);
        self
    }

    /// Sends map items (and queued submits) in chunks of exactly `items` (fewer only when
    /// fewer are waiting), like `chunksize` in Python, instead of the default adaptive sizing
    /// that aims for chunks of about 1.6 ms of work from measured item costs.
    ///
    /// # Panics
    ///
    /// Never; `0` is treated as `1`.
    pub fn chunksize(mut self, items: u64) -> Self {
        self.chunk_policy = ChunkPolicy::Fixed(NonZeroU64::new(items.max(1)).expect("at least 1"));
        self
    }

    /// How long a worker may take to start and run its initializer (default 30 s).
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// How long a worker that holds work may leave a liveness ping unanswered before the pool
    /// kills it (default 5 s; `Duration::ZERO` turns the check off).
    ///
    /// While a worker holds work the pool pings it every half timeout or so, through a shared
    /// word that a small heartbeat thread in the worker answers on its own, whatever the task
    /// is doing: a task that runs for hours is never killed by this. A worker that does not
    /// answer (stopped with SIGSTOP, frozen, or an attached process that is no real worker) is
    /// killed; the task it was running ends with [`TaskError::Unresponsive`] (or runs again
    /// under `.retries(n)`), and what it had not started runs elsewhere. This protects calls
    /// without a `.timeout` from waiting forever on such a worker. A task that deadlocks in
    /// its own code still answers pings; give such calls a `.timeout`.
    pub fn liveness_timeout(mut self, timeout: Duration) -> Self {
        self.liveness_timeout = (!timeout.is_zero()).then_some(timeout);
        self
    }

    /// The largest encoded arguments, and the largest encoded result, of one item, in bytes
    /// (default: no limit beyond the transport's 4 GiB frame cap).
    ///
    /// An item whose arguments encode larger is not sent: it ends with
    /// [`TaskError::TooLarge`] (`what` = "the arguments"). A result that encodes larger is not
    /// sent back: the worker reports `TooLarge` (`what` = "the result") for that item instead.
    /// Nothing else is affected: other items of the same call, chunk or worker run normally.
    /// Sizes are those of the rkyv archive as sent (a few bytes above the data itself).
    pub fn max_item_size(mut self, bytes: usize) -> Self {
        self.max_item_size = Some(bytes);
        self
    }

    /// How long [`Pool::terminate`] waits after SIGTERM before SIGKILL (default 1 s).
    pub fn terminate_grace(mut self, grace: Duration) -> Self {
        self.terminate_grace = grace;
        self
    }

    /// Starts the workers and returns the pool once the first of them is ready.
    ///
    /// The other workers start meanwhile and take work as soon as each is ready
    /// ([`PoolStats::starting`](crate::PoolStats::starting) counts them until then); one that
    /// cannot start is retried like a replacement (see [`Pool::stats`]). Shutting the pool
    /// down while workers are still starting cuts their start short: no process is left.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidConfig`] for zero workers, an unencodable initializer, or when
    /// called in a worker process whose `main` did not call [`init`](crate::init) first,
    /// [`ErrorKind::Spawn`] if the worker program cannot be started or exits at once,
    /// [`ErrorKind::Handshake`] if it is not built from the same code,
    /// [`ErrorKind::InitializerFailed`] if the initializer fails.
    pub fn build(self) -> Result<Pool, Error> {
        if std::env::var_os(procpool_worker::ENV_WORKER_FDS).is_some()
            || std::env::var_os(procpool_worker::ENV_FORK_SERVER).is_some()
        {
            // This process was started as a worker and `init` did not take over: building a
            // pool here would start workers that do the same, recursively.
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                "this process was started as a procpool worker, but its main did not call \
                 procpool::init() before building a pool; call it first thing in main",
            ));
        }
        let launcher = crate::backend::launcher(
            self.start_method,
            self.program.clone(),
            self.args.clone(),
            self.envs.clone(),
            self.memory_limit,
        )?;
        self.build_with(launcher)
    }

    /// Starts the pool over any backend of the link seam.
    pub(crate) fn build_with(
        self,
        launcher: Box<dyn crate::link::Launcher>,
    ) -> Result<Pool, Error> {
        let config = self.config()?;
        let shared = Shared::start(launcher, config)?;
        Ok(Pool { shared })
    }

    /// [`build_with`](PoolBuilder::build_with), with test hooks that widen or reveal the
    /// windows of the pool's blocking waits (`core::TestHooks`).
    #[cfg(test)]
    pub(crate) fn build_with_hooks(
        self,
        launcher: Box<dyn crate::link::Launcher>,
        hooks: crate::core::TestHooks,
    ) -> Result<Pool, Error> {
        let mut config = self.config()?;
        config.hooks = hooks;
        let shared = Shared::start(launcher, config)?;
        Ok(Pool { shared })
    }

    /// The settings the pool's core is built with.
    fn config(self) -> Result<PoolConfig, Error> {
        let n_workers = match self.workers {
            Some(0) => {
                return Err(Error::new(
                    ErrorKind::InvalidConfig,
                    "a pool needs at least one worker",
                ));
            }
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
        };
        let initializer = match self.initializer {
            None => None,
            Some(Ok(call)) => Some(call),
            Some(Err(why)) => {
                return Err(Error::new(
                    ErrorKind::InvalidConfig,
                    format!("cannot encode the initializer's arguments: {why}"),
                ));
            }
        };
        let config = PoolConfig {
            n_workers,
            max_tasks_per_child: self.max_tasks_per_child.and_then(NonZeroU64::new),
            initializer,
            handshake_timeout: self.handshake_timeout,
            terminate_grace: self.terminate_grace,
            liveness_timeout: self.liveness_timeout,
            max_item_size: self.max_item_size,
            sched: SchedulerConfig {
                policy: self.chunk_policy,
                ..SchedulerConfig::default()
            },
            #[cfg(test)]
            hooks: crate::core::TestHooks::default(),
        };
        Ok(config)
    }
}

/// Options for calls of one task: from [`Pool::task`].
///
/// ```no_run
/// # #[procpool::task] fn slow(x: u64) -> u64 { x }
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # procpool::init();
/// # let pool = procpool::Pool::new()?;
/// use std::time::Duration;
/// let handle = pool.task(slow).timeout(Duration::from_secs(2)).retries(1).submit(7);
/// # let _ = handle;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "call `submit`, `call` or `map` to run the task"]
pub struct TaskCall<'p, T> {
    pool: &'p Pool,
    task: T,
    options: TaskOptions,
}

impl<'p, T: Task> TaskCall<'p, T> {
    /// Kills the worker and fails the call with [`TaskError::TimedOut`] if one call runs
    /// longer than `timeout`. The worker is replaced; other calls are unaffected.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = Some(timeout);
        self
    }

    /// Runs a call again, up to `n` times, if its worker dies while running it.
    ///
    /// Only for calls that are safe to repeat: a call may have had effects before it died.
    pub fn retries(mut self, n: u32) -> Self {
        self.options.retries = n;
        self
    }

    /// Submits one call with these options.
    pub fn submit(&self, args: T::Args) -> TaskHandle<T::Output> {
        self.pool.shared.submit::<T>(args, self.options)
    }

    /// Runs one call with these options and waits for it.
    ///
    /// # Errors
    ///
    /// The call's [`TaskError`].
    pub fn call(&self, args: T::Args) -> Result<T::Output, TaskError> {
        self.pool.shared.call::<T>(args, self.options)
    }

    /// [`Pool::map`] with these options.
    pub fn map<I>(&self, input: I) -> Map<'p, T, I::IntoIter>
    where
        I: IntoIterator<Item = T::Args>,
    {
        let _ = self.task;
        Map::new(&self.pool.shared, input.into_iter(), self.options)
    }

    /// [`Pool::map_async`] with these options.
    pub fn map_async<I>(&self, input: I) -> TaskHandle<Vec<Result<T::Output, TaskError>>>
    where
        I: IntoIterator<Item = T::Args>,
        I::IntoIter: Send + 'static,
    {
        let (handle, completer) = crate::handle::task_pair();
        completer.start();
        let map: Map<'static, T, I::IntoIter> =
            Map::new(&self.pool.shared, input.into_iter(), self.options);
        let spawned = std::thread::Builder::new()
            .name("procpool-map-async".into())
            .spawn(move || {
                let outcomes: Vec<_> = map.collect();
                completer.complete(Ok(outcomes));
            });
        if let Err(err) = spawned {
            // The completer went down with the closure: the handle ends as `Terminated`.
            tracing::error!("cannot start a map_async thread: {err}");
        }
        handle
    }

    /// [`Pool::map_unordered`] with these options.
    pub fn map_unordered<I>(&self, input: I) -> MapUnordered<'p, T, I::IntoIter>
    where
        I: IntoIterator<Item = T::Args>,
    {
        MapUnordered::new(&self.pool.shared, input.into_iter(), self.options)
    }
}

fn share_error(err: procpool_worker::ShareError) -> Error {
    let kind = match &err {
        procpool_worker::ShareError::Io(_) => ErrorKind::Io,
        _ => ErrorKind::Share,
    };
    Error::with_source(kind, "cannot share the value with the workers", err)
}
