//! Starting a process with `clone(CLONE_VM | CLONE_VFORK)`: the child sets itself up (parent-death
//! signal, parent-pid check, fds, signals, memory limit) and executes the program.
//!
//! # Why this and not `fork` or `posix_spawn`
//!
//! `fork` copies the page tables of this process, which costs in proportion to its size (28 ms
//! against 2.3 ms for a vfork-style start from a 300 MiB parent).
//! glibc's `posix_spawn` is exactly such a vfork-style clone, but it runs nothing of ours between
//! clone and exec, so it cannot arm `PR_SET_PDEATHSIG`: a program that never reaches procpool's
//! entry (a wrong `program`, or one that does other things before `procpool::init()`) would be
//! orphaned by a parent SIGKILLed meanwhile.
//! So we do what `posix_spawn` does inside (glibc `sysdeps/unix/sysv/linux/spawni.c`) with our
//! own child function: the child shares our memory and the calling thread sleeps until the
//! child has executed the program or exited, so the start costs what `posix_spawn` costs.
//!
//! # What the child may do
//!
//! The child runs [`child_main`] in this process's memory (`CLONE_VM`), on a stack of its own
//! mapped before the clone ([`ChildStack`]), with the calling thread's thread pointer, while that
//! thread is suspended (`CLONE_VFORK`) and every *other* thread of the parent keeps running.
//! It has its own fd table and its own signal dispositions (no `CLONE_FILES`, no
//! `CLONE_SIGHAND`). Hence the child:
//!
//! - makes only system calls, through libc's thin wrappers (`sigaction`, `prctl`, `getppid`,
//!   `dup2`, `fcntl`, `setrlimit`, `rt_sigprocmask`, `execve`, `_exit`): it allocates nothing, takes
//!   no lock (another thread may hold the allocator's), and reads no global state such as
//!   `environ` (another thread may change it). Everything it needs is prepared by the parent in a
//!   [`ChildArgs`] of plain values and pointers to C strings that outlive the clone;
//! - may write `errno`, which is the suspended thread's: harmless, because the parent reads
//!   `errno` after the clone only when the clone failed, and then no child ran;
//! - cannot panic or unwind (no indexing, formatting or allocation): unwinding in the child would
//!   run the parent's code on the parent's data; `child_main` is `extern "C"`, so a panic would
//!   abort the child alone, but none can happen;
//! - starts with every signal blocked (the parent blocks them all around the clone, with the raw
//!   `rt_sigprocmask`, so glibc's two internal signals too, as glibc's own `posix_spawn` does) and
//!   resets each signal that has a handler to its default before it unblocks any, because a
//!   handler of the parent running in the child would run the parent's code on the parent's
//!   memory. glibc refuses to change the handlers of its internal signals (SIGCANCEL, SIGSETXID),
//!   so they get unblocked right before the `execve` with glibc's handlers still in place: only a
//!   signal sent on purpose to the new pid in that instant could run one, and both handlers
//!   return at once for a signal not sent by their own process;
//! - reports how it ended in [`Report`], a word in the parent's memory: the stage it reached and
//!   an errno. Exec replaces the child's memory, so once the exec succeeded it cannot write there
//!   any more, and the parent, woken only then, reads a consistent word;
//! - ends with a successful `execve` or with `_exit`, never by returning.
//!
//! `PR_SET_PDEATHSIG` belongs to the child process and survives `execve`, except into a set-uid
//! or set-gid program (or one with file capabilities), where the kernel clears it; the worker's own
//! arming in `enter_worker_mode_if_requested` covers those, if they reach it.
//! The kernel sends the signal when the *thread* that cloned the child exits: see the parent-death
//! section of the `process` module.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::io;
use std::os::fd::RawFd;
use std::ptr;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

/// Bytes of the child's stack (a guard page below it is extra): far more than the few frames of
/// libc wrappers [`child_main`] needs, in debug builds too.
const CHILD_STACK_BYTES: usize = 64 << 10;

/// Exit code of a child whose exec (or a step before it) failed; the parent reaps it at once.
const EXIT_EXEC_FAILED: c_int = 127;

/// Everything the child needs, prepared before the clone: plain values, and pointers into C
/// strings owned by the caller of [`spawn`] that live until `spawn` returns.
pub(super) struct ChildArgs<'a> {
    /// The program's path: executed as given (a bare name was looked up in `PATH` by the
    /// parent before the clone, `process::search_path`; the child could not allocate for it).
    pub(super) program: &'a CStr,
    /// `argv`, terminated by a null pointer.
    pub(super) argv: &'a [*const c_char],
    /// `envp`, terminated by a null pointer.
    pub(super) envp: &'a [*const c_char],
    /// Placed at fd 0: an fd open on `/dev/null`.
    pub(super) stdin: RawFd,
    /// Placed at `first_target`, `first_target + 1`, ...; each must be above the last target (so
    /// placing one cannot overwrite another) and may be close-on-exec.
    pub(super) fds: &'a [RawFd],
    /// Where the first of `fds` goes.
    pub(super) first_target: RawFd,
    /// This process's pid, for the child's race check after arming the parent-death signal.
    pub(super) parent_pid: libc::pid_t,
    /// `RLIMIT_AS` (soft and hard) for the child, if any.
    pub(super) memory_limit: Option<libc::rlimit>,
}

/// How far a child got, as it reported it before it exited or executed the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// It never reported: it died (killed by a signal) before it got to any step.
    Started,
    /// `prctl(PR_SET_PDEATHSIG)` failed.
    ParentDeathSignal,
    /// Its parent was gone before the parent-death signal was armed (`getppid` changed).
    ParentGone,
    /// Placing an fd failed.
    Fds,
    /// `setrlimit(RLIMIT_AS)` failed.
    MemoryLimit,
    /// `execve` was called: with errno 0 it succeeded, otherwise it failed with that errno.
    Exec,
}

/// A started child that failed before its program ran; it has been reaped.
#[derive(Debug)]
pub(super) struct ChildFailure {
    /// Where it failed.
    pub(super) stage: Stage,
    /// Why: the errno of the failed step (a made-up one for [`Stage::Started`]).
    pub(super) error: io::Error,
}

impl ChildFailure {
    /// The error to report: the errno itself for a failed `execve` (so `raw_os_error` is
    /// `ENOENT`, `EACCES`, ...), the errno with the step it failed at otherwise.
    pub(super) fn into_io_error(self) -> io::Error {
        let step = match self.stage {
            Stage::Exec | Stage::Started => return self.error,
            Stage::ParentDeathSignal => "arming the parent-death signal",
            Stage::ParentGone => "the parent-pid check",
            Stage::Fds => "placing the inherited fds",
            Stage::MemoryLimit => "setting the memory limit",
        };
        io::Error::new(
            self.error.kind(),
            format!("before exec, {step} failed: {}", self.error),
        )
    }
}

/// Why [`spawn`] failed.
#[derive(Debug)]
pub(super) enum SpawnFailure {
    /// No child was created (mapping its stack, or the clone itself, failed).
    Clone(io::Error),
    /// A child was created but did not get to run the program.
    Child(ChildFailure),
}

/// The child's report, in the parent's memory (the child writes it through `CLONE_VM`).
///
/// Written only by the child, read by the parent only after the clone returned, that is after the
/// child executed the program or exited (the vfork wait); see [`child_main`].
struct Report {
    /// A [`Stage`] as a number (`Stage::Started` until the child reports).
    stage: AtomicU32,
    /// The errno of the stage's failure, 0 for none.
    errno: AtomicI32,
}

/// What the child function receives through clone's `arg` pointer.
struct Shared<'a, 'b> {
    args: &'a ChildArgs<'b>,
    report: Report,
}

/// An anonymous mapping for the child's stack with a `PROT_NONE` guard page at its low end, so a
/// child that overflowed its stack would die of SIGSEGV instead of writing into our memory.
struct ChildStack {
    base: *mut c_void,
    len: usize,
}

/// Starts a child that sets itself up as `args` says and executes `args.program`; returns its
/// pid once the program runs.
///
/// Call it on the thread whose exit should count as the parent's death (`PR_SET_PDEATHSIG` fires
/// when the cloning thread exits). The calling thread is suspended until the child has executed
/// the program or exited.
///
/// # Errors
///
/// [`SpawnFailure::Clone`] if no child was created; [`SpawnFailure::Child`] if the child failed
/// before the program ran (e.g. `execve` failed with `ENOENT`), in which case it has exited and
/// has been reaped: no process is left behind.
pub(super) fn spawn(args: &ChildArgs<'_>) -> Result<libc::pid_t, SpawnFailure> {
    debug_assert_eq!(args.argv.last(), Some(&ptr::null()));
    debug_assert_eq!(args.envp.last(), Some(&ptr::null()));
    let stack = ChildStack::map().map_err(SpawnFailure::Clone)?;
    let shared = Shared {
        args,
        report: Report {
            stage: AtomicU32::new(Stage::Started as u32),
            errno: AtomicI32::new(0),
        },
    };
    let blocked = BlockAllSignals::new().map_err(SpawnFailure::Clone)?;
    // SAFETY: `child_main` is the child's whole life and keeps the rules of the module docs (it
    // only makes system calls on the values in `shared`, and ends by execve or _exit). It runs on
    // `stack`, a mapping of its own that outlives the child's use of it: CLONE_VFORK suspends this
    // thread until the child has executed the program or exited, and `stack` is dropped after
    // that. `shared` lives in this frame, which cannot return before the clone does. SIGCHLD as
    // the exit signal makes the child an ordinary child for waitpid.
    let pid = unsafe {
        libc::clone(
            child_main,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            ptr::from_ref(&shared).cast_mut().cast::<c_void>(),
        )
    };
    // Read errno before anything else can change it; it is meaningful only when no child ran.
    let clone_error = io::Error::last_os_error();
    drop(blocked);
    drop(stack);
    if pid < 0 {
        return Err(SpawnFailure::Clone(clone_error));
    }
    // Acquire: pairs with the Release stores in `child_main`'s `report`. The real ordering is the
    // vfork wait: this thread runs again only after the child executed the program or exited.
    let stage = stage_from(shared.report.stage.load(Ordering::Acquire));
    let errno = shared.report.errno.load(Ordering::Acquire);
    if stage == Stage::Exec && errno == 0 {
        return Ok(pid);
    }
    // The child exited (or was killed) without running the program: reap it.
    let status = reap(pid);
    let error = if stage == Stage::Started {
        io::Error::other(format!(
            "the child ended before it could run the program ({})",
            super::WorkerExit::from_wait_status(status)
        ))
    } else {
        io::Error::from_raw_os_error(errno)
    };
    Err(SpawnFailure::Child(ChildFailure { stage, error }))
}

/// The child: resets caught signals, arms the parent-death signal, checks its parent, places the
/// fds, sets the memory limit and the signal mask, and executes the program.
///
/// It keeps the rules of the module docs: system calls only, no allocation, no lock, no panic.
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `Shared` that `spawn` passed to clone; it lives in `spawn`'s frame,
    // which cannot return while this child runs (CLONE_VFORK), and nothing mutates it meanwhile
    // (its only mutable parts are atomics).
    let shared = unsafe { &*arg.cast_const().cast::<Shared<'_, '_>>() };
    let args = shared.args;
    let fail = |stage: Stage, errno: c_int| -> c_int {
        // Release (both): pairs with the Acquire loads in `spawn`, which run after the vfork
        // wait, the ordering that actually matters.
        shared.report.errno.store(errno, Ordering::Release);
        shared.report.stage.store(stage as u32, Ordering::Release);
        let code = if stage == Stage::ParentGone {
            crate::entry::EXIT_PARENT_GONE
        } else {
            EXIT_EXEC_FAILED
        };
        // SAFETY: _exit ends this child at once, running none of the parent's exit handlers
        // (which would run on the parent's memory).
        unsafe { libc::_exit(code) }
    };
    let errno = || {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL)
    };

    reset_signal_handlers();
    // SAFETY: prctl(PR_SET_PDEATHSIG) with a valid signal number changes only this process.
    let armed = unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if armed < 0 {
        return fail(Stage::ParentDeathSignal, errno());
    }
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } != args.parent_pid {
        // The parent died before the signal was armed: nobody would ever kill us (and nobody
        // reads the report).
        return fail(Stage::ParentGone, libc::ESRCH);
    }
    if !place_fd(args.stdin, 0) {
        return fail(Stage::Fds, errno());
    }
    let mut target = args.first_target;
    for &source in args.fds {
        if !place_fd(source, target) {
            return fail(Stage::Fds, errno());
        }
        target = target.wrapping_add(1);
    }
    if let Some(limit) = &args.memory_limit {
        // SAFETY: setrlimit reads the struct we pass by pointer and changes only this process.
        if unsafe { libc::setrlimit(libc::RLIMIT_AS, limit) } < 0 {
            return fail(Stage::MemoryLimit, errno());
        }
    }
    // Every signal with a handler is at its default by now (but glibc's two, see the module
    // docs), so whatever gets unblocked runs no code of the parent's. The program starts with
    // nothing blocked (see `EXEC_MASK`).
    set_signal_mask(&EXEC_MASK, None);
    // Release: pairs with the Acquire loads in `spawn`. If the exec succeeds this is the
    // report; the parent is woken by the exec, after this store.
    shared
        .report
        .stage
        .store(Stage::Exec as u32, Ordering::Release);
    // SAFETY: program, argv and envp are NUL-terminated C strings and null-terminated pointer
    // arrays owned by the caller of `spawn` (see `ChildArgs`); execve only reads them.
    unsafe {
        libc::execve(
            args.program.as_ptr(),
            args.argv.as_ptr(),
            args.envp.as_ptr(),
        )
    };
    fail(Stage::Exec, errno())
}

/// Sets every signal that has a handler (and SIGPIPE, which Rust programs ignore) back to its
/// default, and SIGINT to `SIG_IGN`; other ignored signals stay ignored across the exec, as with
/// `fork` and `std::process::Command`. Runs in the child with every signal blocked.
///
/// SIGINT is ignored on purpose (ARCHITECTURE, procpool-worker's invariant; GUARANTEES 4): a
/// Ctrl-C goes to the whole process group, and the parent decides what it means for its
/// workers. `SIG_IGN` survives the exec, so the program is covered from its first instruction,
/// whether or not it reaches procpool's entry (which ignores it once more).
/// SIGPIPE goes back to its default as `Command` does: the Rust runtime ignores it in the
/// parent, and a program that writes to a closed pipe expects to die of it, not to see `EPIPE`.
fn reset_signal_handlers() {
    // 1..=64: every signal number on Linux; glibc refuses its two internal ones (EINVAL).
    for signal in 1..=64 {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: an all-zero sigaction is a valid value (SIG_DFL, empty mask, no flags).
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: sigaction with a null new action only writes the old one into our local.
        if unsafe { libc::sigaction(signal, ptr::null(), &mut old) } < 0 {
            continue;
        }
        let disposition = if signal == libc::SIGINT {
            libc::SIG_IGN
        } else if signal == libc::SIGPIPE
            || (old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN)
        {
            libc::SIG_DFL
        } else {
            continue;
        };
        // SAFETY: as above, an all-zero sigaction is valid; we set only its disposition.
        let mut new: libc::sigaction = unsafe { std::mem::zeroed() };
        new.sa_sigaction = disposition;
        // SAFETY: sigaction reads the action we pass; SIG_DFL and SIG_IGN install no code, and
        // this child's dispositions are its own (no CLONE_SIGHAND).
        unsafe { libc::sigaction(signal, &new, ptr::null_mut()) };
    }
}

/// Places `source` at fd `target` without close-on-exec; false (errno set) on failure.
fn place_fd(source: RawFd, target: RawFd) -> bool {
    if source == target {
        // dup2 onto itself would keep the close-on-exec flag.
        // SAFETY: F_SETFD only changes the flags of the fd number in this child's own fd table.
        unsafe { libc::fcntl(target, libc::F_SETFD, 0) >= 0 }
    } else {
        // SAFETY: dup2 onto a fixed number in this child's own fd table (no CLONE_FILES);
        // whatever sat at `target` in the child is meant to be replaced. The new fd has
        // close-on-exec clear.
        unsafe { libc::dup2(source, target) >= 0 }
    }
}

fn stage_from(value: u32) -> Stage {
    const STAGES: [Stage; 6] = [
        Stage::Started,
        Stage::ParentDeathSignal,
        Stage::ParentGone,
        Stage::Fds,
        Stage::MemoryLimit,
        Stage::Exec,
    ];
    STAGES
        .into_iter()
        .find(|stage| *stage as u32 == value)
        .unwrap_or(Stage::Started)
}

/// Reaps the exited child `pid`, retrying on EINTR; returns its raw wait status.
fn reap(pid: libc::pid_t) -> c_int {
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own child, not reaped before, with a pointer to a local.
        let res = unsafe { libc::waitpid(pid, &mut status, 0) };
        if res >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return status;
        }
    }
}

impl ChildStack {
    /// Maps [`CHILD_STACK_BYTES`] plus a guard page.
    fn map() -> io::Result<ChildStack> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .ok()
            .filter(|&page| page > 0)
            .unwrap_or(4096);
        let len = CHILD_STACK_BYTES + page;
        // SAFETY: a fresh anonymous private mapping at an address the kernel chooses; it
        // overlaps nothing of ours. It is unmapped by Drop.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = ChildStack { base, len };
        // SAFETY: the lowest page of the mapping we just made, which nothing else uses.
        if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }

    /// The stack's top (stacks grow down on every architecture procpool runs on); page
    /// aligned, so 16-byte aligned as the ABI wants.
    fn top(&self) -> *mut c_void {
        self.base.wrapping_byte_add(self.len)
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: `base` and `len` are the mapping `map` made, no longer used by any child (the
        // clone returned, so the child executed the program or exited).
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// Blocks every signal on this thread until dropped, so the clone's child starts with all of
/// them blocked (it inherits the calling thread's mask).
struct BlockAllSignals {
    old: u64,
}

impl BlockAllSignals {
    fn new() -> io::Result<BlockAllSignals> {
        let mut old = 0;
        // Every bit: the kernel ignores SIGKILL and SIGSTOP; glibc's internal signals are
        // blocked too (glibc's `sigfillset` would leave them out).
        if set_signal_mask(&u64::MAX, Some(&mut old)) < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(BlockAllSignals { old })
    }
}

impl Drop for BlockAllSignals {
    fn drop(&mut self) {
        // Restores exactly the mask `new` saved.
        set_signal_mask(&self.old, None);
    }
}

/// The raw `rt_sigprocmask(SIG_SETMASK, mask, old)` on the kernel's 64-signal set, bypassing
/// glibc's wrapper (which keeps its internal signals unblocked). Returns the syscall's result.
fn set_signal_mask(mask: &u64, old: Option<&mut u64>) -> libc::c_long {
    let old = old.map_or(ptr::null_mut(), ptr::from_mut);
    // SAFETY: rt_sigprocmask reads 8 bytes at `mask` and, if `old` is not null, writes 8 bytes
    // at `old`: both point at u64s we borrow for the call; 8 is the kernel's sigset size on
    // Linux (64 signals). It changes only the calling thread's mask.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            ptr::from_ref(mask),
            old,
            std::mem::size_of::<u64>(),
        )
    }
}

/// The signal mask the program starts with: empty, as `std::process::Command` gives (it resets
/// the mask between fork and exec, and sets an empty one for `posix_spawn`).
///
/// Not the parent's: the spawner thread's mask is whatever the thread that first started a
/// process had (a program that blocks SIGTERM in its threads to read it from a signalfd is
/// common), and a worker with SIGTERM blocked would outwait every `terminate` grace. Nor SIGINT
/// blocked: that was needed while workers started through `posix_spawn`, which cannot ignore a
/// signal, so SIGINT stayed blocked across the exec until the worker's `main` ignored it;
/// now the child ignores it before the exec, and a block would only linger in a program that
/// never reaches procpool's entry (and in everything it starts), hiding SIGINT from a handler
/// it installs.
const EXEC_MASK: u64 = 0;
