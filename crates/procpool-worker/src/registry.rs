//! The task registry: the `Task` trait, the link-time table of task entries, and lookups by id.
//!
//! Every `#[task]` function contributes one [`TaskEntry`] to the [`TASKS`] distributed slice.
//! `linkme` collects the entries at link time into one contiguous section, so the table exists
//! before `main` runs and no constructor ordering ("life before main") is involved: a worker binary
//! and a parent built from the same source see exactly the same table.
//! A task is named on the wire by its [`TaskId`], a stable hash of its module path, name and
//! signature; the whole table is summarised by [`fingerprint`], which the handshake compares.

use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

use rkyv::Archive;
use rkyv::bytecheck::CheckBytes;

use crate::protocol::{TaskFailure, WireDeserializer, WireSerializer, WireValidator};
use crate::runtime::BatchRun;

mod compile_fail;

/// The stable identity of a task on the wire.
pub type TaskId = u64;

/// A type that can cross a process boundary as a task argument or output.
///
/// It is implemented for every type that rkyv can serialize into our wire serializer, validate
/// with bytecheck after receipt, and deserialize back, and that is `Send + 'static`.
/// Derive it with `#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be sent to or from a procpool worker",
    label = "not serializable for procpool",
    note = "task arguments and outputs must derive `rkyv::Archive, rkyv::Serialize, rkyv::Deserialize` (with bytecheck), and be `Send + 'static`"
)]
pub trait Wire:
    Archive<
        Archived: for<'a> CheckBytes<WireValidator<'a>> + rkyv::Deserialize<Self, WireDeserializer>,
    > + for<'a> rkyv::Serialize<WireSerializer<'a>>
    + Send
    + Sized
    + 'static
{
}

impl<T> Wire for T where
    T: Archive<
            Archived: for<'a> CheckBytes<WireValidator<'a>>
                          + rkyv::Deserialize<T, WireDeserializer>,
        > + for<'a> rkyv::Serialize<WireSerializer<'a>>
        + Send
        + 'static
{
}

/// A function registered with `#[task]`, named by a unit struct of the same name.
///
/// Implemented only by the macro; the associated items describe how the task crosses the wire.
pub trait Task: Copy + Send + Sync + 'static {
    /// The owned form of the arguments: the value itself for one parameter, a tuple for several,
    /// `()` for none. Borrowed parameters map to owned types (`&str` to `String`, `&[T]` to `Vec<T>`).
    type Args: Wire;
    /// What a successful call returns; for a function returning `Result<T, E>` this is `T`.
    type Output: Wire;
    /// Stable hash of module path, name and signature.
    const ID: TaskId;
    /// The task's path, `module::name`.
    const NAME: &'static str;
    /// The normalised signature, e.g. `fn(u64, &str) -> u64`.
    const SIGNATURE: &'static str;
}

/// How the worker runs one task; implemented by the macro next to [`Task`].
#[doc(hidden)]
pub trait Invoke: Task {
    /// Calls the function with arguments read from their validated archived form.
    ///
    /// # Errors
    ///
    /// A `Failed` failure when the function returned `Err`, `BadArguments` when an argument
    /// could not be deserialized.
    fn invoke(
        args: &<Self::Args as Archive>::Archived,
        de: &mut rkyv::de::Pool,
    ) -> Result<Self::Output, TaskFailure>;
}

/// One row of the task table: what the worker needs to run a task named by id.
#[derive(Clone, Copy)]
pub struct TaskEntry {
    /// The task's [`TaskId`].
    pub id: TaskId,
    /// The task's path, `module::name`.
    pub name: &'static str,
    /// The normalised signature.
    pub signature: &'static str,
    /// Runs a chunk of calls (worker-internal).
    #[doc(hidden)]
    pub run_batch: fn(&mut BatchRun<'_, '_>),
    /// Runs the task as an initializer and stores its output as worker state (worker-internal).
    #[doc(hidden)]
    pub run_init: fn(args_archive: &[u8]) -> Result<(), TaskFailure>,
}

impl TaskEntry {
    /// The entry for task `T`; used by the macro in a `static`.
    #[doc(hidden)]
    pub const fn new<T: Invoke>() -> Self
    where
        T::Output: Sync,
    {
        Self {
            id: T::ID,
            name: T::NAME,
            signature: T::SIGNATURE,
            run_batch: crate::runtime::run_batch::<T>,
            run_init: crate::runtime::run_init::<T>,
        }
    }
}

impl fmt::Debug for TaskEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskEntry")
            .field("id", &format_args!("{:016x}", self.id))
            .field("name", &self.name)
            .field("signature", &self.signature)
            .finish()
    }
}

/// Every task linked into this binary, in link order (use [`lookup`] or [`entries`] instead).
#[linkme::distributed_slice]
pub static TASKS: [TaskEntry];

/// Two registered tasks hash to the same id; the table refuses both to be unambiguous.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("task id {id:016x} is claimed by both `{first}` and `{second}`")]
pub struct DuplicateTaskId {
    /// The shared id.
    pub id: TaskId,
    /// One task's name.
    pub first: &'static str,
    /// The other task's name.
    pub second: &'static str,
}

/// The sorted, de-duplicated view of [`TASKS`], built once.
struct Table {
    /// Sorted by id; no two entries share an id.
    sorted: Vec<&'static TaskEntry>,
    /// Position in `sorted` by id.
    by_id: HashMap<TaskId, usize>,
    /// Ids claimed by more than one entry: never looked up successfully.
    duplicates: Vec<DuplicateTaskId>,
    /// Hash of the sorted (id, signature) pairs.
    fingerprint: u64,
}

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| build_table(&TASKS))
}

fn build_table(all: &'static [TaskEntry]) -> Table {
    let mut sorted: Vec<&'static TaskEntry> = all.iter().collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id).then(a.name.cmp(b.name)));
    let mut duplicates = Vec::new();
    let mut unique: Vec<&'static TaskEntry> = Vec::with_capacity(sorted.len());
    for group in sorted.chunk_by(|a, b| a.id == b.id) {
        if group.len() == 1 {
            unique.push(group[0]);
        } else {
            for pair in group.windows(2) {
                duplicates.push(DuplicateTaskId {
                    id: pair[0].id,
                    first: pair[0].name,
                    second: pair[1].name,
                });
            }
        }
    }
    let mut hash = Fnv1a::new();
    for entry in &sorted {
        hash.write(&entry.id.to_le_bytes());
        hash.write(entry.signature.as_bytes());
        hash.write(&[0xff]);
    }
    let by_id = unique
        .iter()
        .enumerate()
        .map(|(pos, e)| (e.id, pos))
        .collect();
    Table {
        sorted: unique,
        by_id,
        duplicates,
        fingerprint: hash.finish(),
    }
}

/// The entry registered under `id`, if exactly one task claims it.
pub fn lookup(id: TaskId) -> Option<&'static TaskEntry> {
    let table = table();
    table.by_id.get(&id).map(|&pos| table.sorted[pos])
}

/// All uniquely identified entries, sorted by id.
pub fn entries() -> &'static [&'static TaskEntry] {
    &table().sorted
}

/// Ids claimed by more than one task in this binary (empty in a healthy build).
pub fn duplicates() -> &'static [DuplicateTaskId] {
    &table().duplicates
}

/// A hash of the whole task table (every id and signature, sorted by id).
///
/// Parent and worker compare it in the handshake: equal fingerprints mean both sides were
/// built with the same tasks, so every id means the same function with the same types.
pub fn fingerprint() -> u64 {
    table().fingerprint
}

/// A printable listing of every registered task: one line each with id, name and signature.
///
/// # Examples
///
/// ```
/// let listing = procpool_worker::describe_all().to_string();
/// assert!(listing.contains("builtin::add_one"));
/// ```
pub fn describe_all() -> TaskListing {
    TaskListing { _private: () }
}

/// The `Display`able task listing returned by [`describe_all`] (`procpool-worker list`).
#[derive(Debug, Clone, Copy)]
pub struct TaskListing {
    _private: (),
}

impl fmt::Display for TaskListing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rows: Vec<&TaskEntry> = entries().to_vec();
        rows.sort_by(|a, b| a.name.cmp(b.name));
        let width = rows.iter().map(|e| e.name.len()).max().unwrap_or(0);
        for entry in rows {
            writeln!(
                f,
                "{:016x}  {:width$}  {}",
                entry.id, entry.name, entry.signature
            )?;
        }
        for dup in duplicates() {
            writeln!(f, "error: {dup}")?;
        }
        Ok(())
    }
}

/// The stable id of a task: 64-bit FNV-1a over `module_path + "::" + name + signature`.
///
/// The macro evaluates it in a constant, so the id depends only on the source, never on
/// addresses or build order.
#[doc(hidden)]
pub const fn task_id(module_path: &str, name: &str, signature: &str) -> TaskId {
    let hash = fnv1a_bytes(FNV_OFFSET, module_path.as_bytes());
    let hash = fnv1a_bytes(hash, b"::");
    let hash = fnv1a_bytes(hash, name.as_bytes());
    let hash = fnv1a_bytes(hash, b" ");
    fnv1a_bytes(hash, signature.as_bytes())
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

const fn fnv1a_bytes(mut hash: u64, bytes: &[u8]) -> u64 {
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(FNV_PRIME);
        i += 1;
    }
    hash
}

/// Streaming FNV-1a, for the fingerprint.
struct Fnv1a(u64);

impl Fnv1a {
    fn new() -> Self {
        Self(FNV_OFFSET)
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = fnv1a_bytes(self.0, bytes);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: TaskId, name: &'static str, signature: &'static str) -> TaskEntry {
        fn no_batch(_: &mut BatchRun<'_, '_>) {}
        fn no_init(_: &[u8]) -> Result<(), TaskFailure> {
            Ok(())
        }
        TaskEntry {
            id,
            name,
            signature,
            run_batch: no_batch,
            run_init: no_init,
        }
    }

    #[test]
    fn fnv1a_matches_reference_vectors() {
        assert_eq!(fnv1a_bytes(FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_bytes(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_bytes(FNV_OFFSET, b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn task_id_depends_on_path_name_and_signature() {
        let base = task_id("a::b", "f", "fn(u64) -> u64");
        assert_eq!(base, task_id("a::b", "f", "fn(u64) -> u64"));
        assert_ne!(base, task_id("a::c", "f", "fn(u64) -> u64"));
        assert_ne!(base, task_id("a::b", "g", "fn(u64) -> u64"));
        assert_ne!(base, task_id("a::b", "f", "fn(u32) -> u64"));
    }

    #[test]
    fn builtins_are_registered_and_found_by_id() {
        use crate::builtin;
        let add_one = lookup(<builtin::add_one as Task>::ID).expect("add_one registered");
        assert_eq!(add_one.name, "procpool_worker::builtin::add_one");
        assert_eq!(add_one.signature, "fn(u64) -> u64");
        let echo = lookup(<builtin::echo_bytes as Task>::ID).expect("echo_bytes registered");
        assert_eq!(echo.signature, "fn(&[u8]) -> Vec<u8>");
        assert!(lookup(0x1234_5678).is_none());
        assert!(duplicates().is_empty(), "{:?}", duplicates());
        let ids: Vec<_> = entries().iter().map(|e| e.id).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "sorted and unique");
    }

    #[test]
    fn fingerprint_is_order_independent_and_signature_sensitive() {
        let a: &'static [TaskEntry] =
            Box::leak(Box::new([entry(1, "x", "fn()"), entry(2, "y", "fn(u64)")]));
        let b: &'static [TaskEntry] =
            Box::leak(Box::new([entry(2, "y", "fn(u64)"), entry(1, "x", "fn()")]));
        let c: &'static [TaskEntry] =
            Box::leak(Box::new([entry(1, "x", "fn()"), entry(2, "y", "fn(u32)")]));
        let d: &'static [TaskEntry] = Box::leak(Box::new([entry(1, "x", "fn()")]));
        assert_eq!(build_table(a).fingerprint, build_table(b).fingerprint);
        assert_ne!(build_table(a).fingerprint, build_table(c).fingerprint);
        assert_ne!(build_table(a).fingerprint, build_table(d).fingerprint);
        assert_eq!(fingerprint(), fingerprint());
    }

    #[test]
    fn duplicate_ids_are_reported_and_not_looked_up() {
        let all: &'static [TaskEntry] = Box::leak(Box::new([
            entry(7, "first", "fn()"),
            entry(9, "other", "fn()"),
            entry(7, "second", "fn()"),
        ]));
        let table = build_table(all);
        assert_eq!(
            table.duplicates,
            vec![DuplicateTaskId {
                id: 7,
                first: "first",
                second: "second"
            }]
        );
        assert_eq!(table.sorted.len(), 1);
        assert!(!table.by_id.contains_key(&7));
        assert_eq!(table.sorted[table.by_id[&9]].name, "other");
    }

    #[test]
    fn listing_names_every_builtin() {
        let listing = describe_all().to_string();
        for name in [
            "noop",
            "add_one",
            "spin_for",
            "sleep_for",
            "echo_bytes",
            "sha512_file",
            "fail",
            "panic",
            "abort",
            "segfault",
            "exit",
            "allocate",
        ] {
            assert!(
                listing.contains(&format!("procpool_worker::builtin::{name} ")),
                "{name} missing from\n{listing}"
            );
        }
    }
}
