//! Shared objects: read-only data written once into a sealed memfd and read in place by every
//! worker, passed to tasks as a cheap [`Shared<T>`] handle.
//!
//! # Life of a shared object
//!
//! 1. The parent archives a value (or copies a slice of plain numbers) once, with `write(2)`,
//!    into a fresh memfd behind a 64-byte header (a protocol frame header of kind `Shared`
//!    naming the object's id and type tag), then seals it against writes and resizes
//!    ([`procpool_ipc::SealedWriter`]). See [`share_value`] and [`share_slice`].
//! 2. The pool sends the sealed memfd to every worker as one out-of-band frame
//!    ([`procpool_ipc::Sender::send_sealed`]), before any call that could use it: to every
//!    live worker when the object is made, and to each new worker (started, respawned,
//!    forked, attached) before it gets its first call.
//! 3. The worker's run loop keeps that frame's read-only mapping in a per-worker table
//!    (`receive`). A `Shared<T>` argument is only the object's id and type tag on the wire;
//!    deserializing it looks the mapping up, validates the bytes as `T` the first time this
//!    worker sees the object as a `T`, and from then on hands out `&Archived<T>` straight
//!    from the mapping: no copy, no further validation.
//! 4. When the last handle in the parent drops, the pool tells each worker to forget the
//!    object (`release`); the memfd is gone once the parent's descriptor and every mapping
//!    are. Calls still holding a handle keep the object alive (a job keeps its arguments until
//!    the call has its outcome).
//!
//! # Why validating once per worker is sound
//!
//! `Shared<T>` dereferences with `rkyv::access_unchecked` after one successful
//! `rkyv::access` (bytecheck) of the same bytes as the same type (`TypeId`). That is sound
//! because those bytes cannot change between the check and any later read:
//! the memfd carries `F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK` (checked by procpool-ipc
//! before mapping), so no process — the parent, a hostile peer, this worker — can write it
//! through any descriptor or shared mapping, nor truncate it (no `SIGBUS`);
//! our own mapping is `PROT_READ`, so a stray write in a task faults the worker instead of
//! changing the data; and the mapping stays at one address for as long as any handle holds it.
//! Validation is a pure function of the bytes and the type, so its verdict stays true.
//! In the parent, a freshly made object is trusted without validation: its bytes are exactly
//! what rkyv's serializer wrote for a `T` into a memfd nobody else could reach before it was
//! sealed — the contract of `access_unchecked` itself.

use std::any::TypeId;
use std::collections::HashMap;
use std::fmt;
use std::io::{BufWriter, Write};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

use rkyv::api::high::HighSerializer;
use rkyv::rancor::{self, Fallible};
use rkyv::ser::allocator::ArenaHandle;
use rkyv::ser::writer::IoWriter;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Archived, Deserialize, Place, Serialize};

use crate::protocol;
use crate::registry::Wire;

/// Where an object's data starts in its memfd (after the 32-byte frame header and padding):
/// a multiple of every alignment an archived type asks for in practice.
pub(crate) const DATA_OFFSET: usize = 64;

/// The serializer [`share_value`] writes a value with: straight into the memfd.
pub type ShareSerializer<'a> =
    HighSerializer<IoWriter<BufWriter<procpool_ipc::SealedWriter>>, ArenaHandle<'a>, rancor::Error>;

/// A value [`share_value`] can archive: any [`Wire`] type whose `Serialize` is generic over
/// the serializer (as derived ones are). Implemented automatically.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be shared with procpool workers",
    note = "shared values must derive `rkyv::Archive, rkyv::Serialize, rkyv::Deserialize` (with bytecheck), and be `Send + 'static`"
)]
pub trait ShareValue: Wire + for<'a> Serialize<ShareSerializer<'a>> {}

impl<T: Wire + for<'a> Serialize<ShareSerializer<'a>>> ShareValue for T {}

/// Why a value could not be shared.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShareError {
    /// Creating, writing or sealing the memfd failed.
    #[error("cannot create the shared memory: {0}")]
    Io(#[from] std::io::Error),
    /// The value could not be archived.
    #[error("cannot archive the value: {0}")]
    Archive(#[source] rancor::Error),
}

mod sealed {
    /// Keeps [`super::Shareable`] and [`super::Plain`] closed: their unsafe code relies on
    /// exactly the implementations below.
    pub trait Sealed {}
}

/// Plain numbers: every bit pattern is a valid value and there is no padding, so a slice of
/// them can be shared as raw bytes ([`share_slice`]) and read back as `&[E]`.
pub trait Plain: sealed::Sealed + Copy + Send + Sync + 'static {}

macro_rules! plain {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl Plain for $t {}
    )*};
}
plain!(u8, i8, u16, i16, u32, i32, u64, i64, u128, i128, f32, f64);

/// What a [`Shared`] handle can hold: a value of a [`Wire`] type (read as `&Archived<T>`), or
/// a slice of [`Plain`] numbers (read as `&[E]`).
pub trait Shareable: 'static {
    /// What the handle dereferences to.
    type Target: ?Sized;
    /// Identifies the type on the wire (a hash of its name and kind).
    #[doc(hidden)]
    fn tag() -> u64;
    /// Checks that `bytes` are a valid `Target`.
    #[doc(hidden)]
    fn check(bytes: &[u8]) -> Result<(), String>;
    /// Views `bytes` as the target.
    ///
    /// # Safety
    ///
    /// `check(bytes)` succeeded for these very bytes, and they have not changed since (see
    /// the module documentation), or they were produced by serializing a `Self`.
    #[doc(hidden)]
    unsafe fn view(bytes: &[u8]) -> &Self::Target;
}

impl<T: Wire> Shareable for T {
    type Target = Archived<T>;

    fn tag() -> u64 {
        tag_of(std::any::type_name::<T>(), b"value")
    }

    fn check(bytes: &[u8]) -> Result<(), String> {
        rkyv::access::<Archived<T>, rancor::Error>(bytes)
            .map(|_| ())
            .map_err(|error| error.to_string())
    }

    unsafe fn view(bytes: &[u8]) -> &Archived<T> {
        // SAFETY: the caller guarantees the bytes passed `check` (bytecheck validation of
        // `Archived<T>`) and cannot have changed since, or were serialized from a `T`.
        unsafe { rkyv::access_unchecked::<Archived<T>>(bytes) }
    }
}

impl<E: Plain> Shareable for [E] {
    type Target = [E];

    fn tag() -> u64 {
        tag_of(std::any::type_name::<E>(), b"slice")
    }

    fn check(bytes: &[u8]) -> Result<(), String> {
        if bytes.len() % size_of::<E>() != 0 {
            return Err(format!(
                "{} bytes is not a whole number of `{}`",
                bytes.len(),
                std::any::type_name::<E>()
            ));
        }
        if bytes.as_ptr() as usize % align_of::<E>() != 0 {
            return Err("the data is misaligned".to_owned());
        }
        Ok(())
    }

    unsafe fn view(bytes: &[u8]) -> &[E] {
        // SAFETY: `check` proved the length a multiple of `size_of::<E>()` and the start
        // aligned for `E`; `E: Plain` has no padding and accepts every bit pattern; the bytes
        // live (immutable) as long as the borrow of `bytes`.
        unsafe {
            std::slice::from_raw_parts(bytes.as_ptr().cast::<E>(), bytes.len() / size_of::<E>())
        }
    }
}

fn tag_of(name: &str, kind: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in name.as_bytes().iter().chain(b"/").chain(kind) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The bytes of an object: a read-only mapping of its sealed memfd, or (when it came in the
/// ring, as in tests) a private copy.
enum Bytes {
    Sealed(procpool_ipc::SealedMap),
    Copied(AlignedVec<16>),
}

impl Bytes {
    fn all(&self) -> &[u8] {
        match self {
            Bytes::Sealed(map) => map,
            Bytes::Copied(vec) => vec,
        }
    }
}

/// What runs when an object is dropped.
type ReleaseHook = Box<dyn FnOnce(u64) + Send>;

/// One shared object, behind every handle to it (type-erased).
///
/// The pool uses it to send the object to workers; users hold [`Shared`] handles instead.
pub struct SharedObject {
    id: u64,
    tag: u64,
    bytes: Bytes,
    /// The sealed memfd, in the process that made the object (to send it to workers).
    file: Option<procpool_ipc::SealedFile>,
    /// The type the data was validated as (or was serialized from); `None` before the first
    /// typed use in this process.
    validated: OnceLock<TypeId>,
    /// Called with the id when the object is dropped (the pool then tells its workers).
    on_release: Mutex<Option<ReleaseHook>>,
}

impl fmt::Debug for SharedObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedObject")
            .field("id", &self.id)
            .field("len", &self.data().len())
            .field("owner", &self.file.is_some())
            .finish()
    }
}

impl SharedObject {
    /// The object's id, unique in the process that made it.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The sealed memfd (header and data) to send to workers; `None` in a worker.
    pub fn file(&self) -> Option<&procpool_ipc::SealedFile> {
        self.file.as_ref()
    }

    /// The data (without the header).
    fn data(&self) -> &[u8] {
        &self.bytes.all()[DATA_OFFSET..]
    }

    /// Registers what to do when the last handle is dropped (replacing any earlier hook).
    pub fn on_release(&self, hook: impl FnOnce(u64) + Send + 'static) {
        *self
            .on_release
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Box::new(hook));
    }

    /// Checks (once per type) that the data is a valid `T`.
    fn validate<T: Shareable + ?Sized>(&self) -> Result<(), String> {
        let wanted = TypeId::of::<T>();
        if self.validated.get() == Some(&wanted) {
            return Ok(());
        }
        if self.tag != T::tag() {
            return Err(format!(
                "shared object {} holds another type than `{}`",
                self.id,
                std::any::type_name::<T>()
            ));
        }
        T::check(self.data()).map_err(|why| {
            format!(
                "shared object {} is not a valid `{}`: {why}",
                self.id,
                std::any::type_name::<T>()
            )
        })?;
        // A second type (a tag collision) is checked on every use instead of being cached.
        let _ = self.validated.set(wanted);
        Ok(())
    }
}

impl Drop for SharedObject {
    fn drop(&mut self) {
        if self.file.is_some() {
            owned()
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&self.id);
        }
        let hook = self
            .on_release
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(hook) = hook {
            hook(self.id);
        }
    }
}

/// Objects made by this process, by id (weak: the handles own them), so that a handle coming
/// back in a task's output finds its object again.
fn owned() -> &'static Mutex<HashMap<u64, Weak<SharedObject>>> {
    static OWNED: OnceLock<Mutex<HashMap<u64, Weak<SharedObject>>>> = OnceLock::new();
    OWNED.get_or_init(Default::default)
}

thread_local! {
    /// Objects this worker received, by id. A worker runs its tasks on the thread that runs its
    /// loop, so a thread-local table is exactly one per worker (also in the thread backend of
    /// the facade's tests, where several workers share one process).
    static RECEIVED: std::cell::RefCell<HashMap<u64, Arc<SharedObject>>> =
        std::cell::RefCell::new(HashMap::new());
}

/// Keeps an object sent by the parent (called by the run loop for a `Shared` frame).
/// `frame` is the whole frame (header and data).
pub(crate) fn receive(id: u64, tag: u64, frame: Option<procpool_ipc::SealedMap>, copy: &[u8]) {
    let bytes = match frame {
        Some(map) => Bytes::Sealed(map),
        None => {
            let mut vec = AlignedVec::<16>::with_capacity(copy.len());
            vec.extend_from_slice(copy);
            Bytes::Copied(vec)
        }
    };
    let object = Arc::new(SharedObject {
        id,
        tag,
        bytes,
        file: None,
        validated: OnceLock::new(),
        on_release: Mutex::new(None),
    });
    RECEIVED.with(|table| table.borrow_mut().insert(id, object));
}

/// Forgets an object (called by the run loop for a `Release` frame). Tasks still holding a
/// handle keep the mapping until they drop it.
pub(crate) fn release(id: u64) {
    let removed = RECEIVED.with(|table| table.borrow_mut().remove(&id));
    drop(removed);
}

/// How many objects this worker (thread) holds.
#[cfg(test)]
pub(crate) fn received_count() -> usize {
    RECEIVED.with(|table| table.borrow().len())
}

fn find(id: u64) -> Option<Arc<SharedObject>> {
    if let Some(object) = RECEIVED.with(|table| table.borrow().get(&id).cloned()) {
        return Some(object);
    }
    owned()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&id)
        .and_then(Weak::upgrade)
}

/// A handle to read-only data shared with every worker of a pool, without copies.
///
/// Made by `Pool::share` (a value, read as `&Archived<T>`) or `Pool::share_slice` (plain
/// numbers, read as `&[E]`). Cloning is cheap (a reference count); as a task argument it
/// travels as 16 bytes. Inside a task it dereferences to the data, mapped read-only in the
/// worker: no copy, and the bytes are validated only the first time the worker sees the
/// object. The data lives until the last handle in the parent is dropped and no call using it
/// is in flight.
///
/// ```ignore
/// #[procpool::task]
/// fn lookup(table: procpool::Shared<Vec<u64>>, row: u64) -> u64 {
///     table[row as usize].to_native()
/// }
/// ```
pub struct Shared<T: ?Sized + Shareable> {
    object: Arc<SharedObject>,
    _type: PhantomData<fn() -> Box<T>>,
}

impl<T: ?Sized + Shareable> Shared<T> {
    /// A handle to `object` as a `T`, after checking it (once per object and type).
    fn from_object(object: Arc<SharedObject>) -> Result<Self, String> {
        object.validate::<T>()?;
        Ok(Shared {
            object,
            _type: PhantomData,
        })
    }

    /// The shared data.
    pub fn get(&self) -> &T::Target {
        // SAFETY: a `Shared<T>` exists only after `validate::<T>` succeeded for this object
        // (or the object was serialized from a `T` by `share_value`/`share_slice`), and its
        // bytes are immutable for as long as `self.object` lives (see the module docs).
        unsafe { T::view(self.object.data()) }
    }

    /// Size of the shared data in bytes.
    pub fn byte_len(&self) -> usize {
        self.object.data().len()
    }

    /// The object behind the handle (for the pool).
    #[doc(hidden)]
    pub fn object(&self) -> &Arc<SharedObject> {
        &self.object
    }
}

impl<T: ?Sized + Shareable> std::ops::Deref for Shared<T> {
    type Target = T::Target;
    fn deref(&self) -> &T::Target {
        self.get()
    }
}

impl<T: ?Sized + Shareable> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared {
            object: Arc::clone(&self.object),
            _type: PhantomData,
        }
    }
}

impl<T: ?Sized + Shareable> fmt::Debug for Shared<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("type", &std::any::type_name::<T>())
            .field("id", &self.object.id)
            .field("bytes", &self.byte_len())
            .finish()
    }
}

/// What a [`Shared`] handle is on the wire: the object's id and type tag.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct SharedRef {
    /// The object's id.
    pub id: u64,
    /// The type tag ([`Shareable::tag`]).
    pub tag: u64,
}

impl<T: ?Sized + Shareable> Archive for Shared<T> {
    type Archived = ArchivedSharedRef;
    type Resolver = SharedRefResolver;

    fn resolve(&self, resolver: Self::Resolver, out: Place<Self::Archived>) {
        self.wire_ref().resolve(resolver, out);
    }
}

impl<T: ?Sized + Shareable> Shared<T> {
    fn wire_ref(&self) -> SharedRef {
        SharedRef {
            id: self.object.id,
            tag: T::tag(),
        }
    }
}

impl<T, S> Serialize<S> for Shared<T>
where
    T: ?Sized + Shareable,
    S: Fallible + ?Sized,
    SharedRef: Serialize<S>,
{
    fn serialize(&self, serializer: &mut S) -> Result<Self::Resolver, S::Error> {
        self.wire_ref().serialize(serializer)
    }
}

/// A handle names an object this process does not have, or of another type.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UnknownShared(String);

thread_local! {
    /// Why the last `Shared` handle on this thread failed to deserialize: rancor's error keeps
    /// no message in release builds, so the argument reader asks here (`take_last_error`).
    static LAST_ERROR: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

fn fail<E: rancor::Source>(message: String) -> E {
    let error = E::new(UnknownShared(message.clone()));
    LAST_ERROR.with(|last| *last.borrow_mut() = Some(message));
    error
}

/// The message of the last failed `Shared` deserialization on this thread, if any (cleared).
pub(crate) fn take_last_error() -> Option<String> {
    LAST_ERROR.with(|last| last.borrow_mut().take())
}

impl<T, D> Deserialize<Shared<T>, D> for ArchivedSharedRef
where
    T: ?Sized + Shareable,
    D: Fallible + ?Sized,
    D::Error: rancor::Source,
{
    fn deserialize(&self, _: &mut D) -> Result<Shared<T>, D::Error> {
        let id = self.id.to_native();
        if self.tag.to_native() != T::tag() {
            return Err(fail(format!(
                "the handle to shared object {id} is not a `Shared<{}>`",
                std::any::type_name::<T>()
            )));
        }
        let object = find(id).ok_or_else(|| {
            fail(format!(
                "shared object {id} is not known to this worker (was it shared with another pool, \
                 or dropped?)"
            ))
        })?;
        Shared::from_object(object).map_err(fail)
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Writes the header, seals, maps and registers a new object whose data is already written.
fn finish<T: ?Sized + Shareable>(
    mut writer: procpool_ipc::SealedWriter,
    id: u64,
) -> Result<Shared<T>, ShareError> {
    let mut header = [0u8; DATA_OFFSET];
    protocol::encode_shared_header(id, T::tag(), &mut header);
    writer.write_at(&header, 0)?;
    let file = writer.seal()?;
    let map = file.map()?;
    let object = Arc::new(SharedObject {
        id,
        tag: T::tag(),
        bytes: Bytes::Sealed(map),
        file: Some(file),
        // Serialized from a `T` just now (see the module docs).
        validated: OnceLock::from(TypeId::of::<T>()),
        on_release: Mutex::new(None),
    });
    owned()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(id, Arc::downgrade(&object));
    Ok(Shared {
        object,
        _type: PhantomData,
    })
}

fn fresh_writer() -> Result<(procpool_ipc::SealedWriter, u64), ShareError> {
    // Relaxed: a unique number is all that is needed; nothing is published with it.
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let mut writer = procpool_ipc::SealedWriter::new()?;
    writer.write_all(&[0; DATA_OFFSET])?;
    Ok((writer, id))
}

/// Archives `value` once, straight into a new sealed memfd, and returns a handle to it (not yet
/// known to any pool: `Pool::share` also sends it to the pool's workers).
///
/// # Errors
///
/// [`ShareError`] if the memfd cannot be made or the value cannot be archived.
pub fn share_value<T: ShareValue>(value: &T) -> Result<Shared<T>, ShareError> {
    let (writer, id) = fresh_writer()?;
    let buffered = BufWriter::with_capacity(1 << 20, writer);
    let written = rkyv::api::high::to_bytes_in::<_, rancor::Error>(value, IoWriter::new(buffered))
        .map_err(ShareError::Archive)?;
    let writer = written
        .into_inner()
        .into_inner()
        .map_err(|error| ShareError::Io(error.into_error()))?;
    finish::<T>(writer, id)
}

/// Copies `data` once, as raw bytes (no archive), into a new sealed memfd and returns a
/// handle to it (not yet known to any pool: `Pool::share_slice` also sends it to the workers).
///
/// # Errors
///
/// [`ShareError::Io`] if the memfd cannot be made.
pub fn share_slice<E: Plain>(data: &[E]) -> Result<Shared<[E]>, ShareError> {
    let (mut writer, id) = fresh_writer()?;
    // SAFETY: `E: Plain` has no padding, so its `size_of_val(data)` bytes are initialized.
    let bytes = unsafe {
        std::slice::from_raw_parts(data.as_ptr().cast::<u8>(), std::mem::size_of_val(data))
    };
    writer.write_all(bytes)?;
    finish::<[E]>(writer, id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Archive, Serialize, Deserialize, Debug, PartialEq)]
    struct Table {
        rows: Vec<u64>,
        name: String,
    }

    #[test]
    fn values_and_slices_round_trip_in_place() {
        let table = Table {
            rows: (0..1000).collect(),
            name: "t".into(),
        };
        let shared = share_value(&table).expect("share");
        assert_eq!(shared.rows.len(), 1000);
        assert_eq!(shared.rows[999].to_native(), 999);
        assert_eq!(shared.name.as_str(), "t");
        let floats = share_slice(&[1.5f64, -2.0, 3.25]).expect("share");
        assert_eq!(&*floats, &[1.5, -2.0, 3.25]);
        assert_eq!(floats.byte_len(), 24);
        let clone = floats.clone();
        assert_eq!(clone.object().id(), floats.object().id());
    }

    #[test]
    fn handles_travel_as_ids_and_find_their_object() {
        let shared = share_slice(&[7u32, 8, 9]).expect("share");
        let bytes = rkyv::to_bytes::<rancor::Error>(&shared).expect("serialize");
        let back: Shared<[u32]> =
            rkyv::from_bytes::<Shared<[u32]>, rancor::Error>(&bytes).expect("deserialize");
        assert_eq!(&*back, &[7, 8, 9]);
        // Another type is refused with a clear message.
        let wrong = rkyv::from_bytes::<Shared<[u64]>, rancor::Error>(&bytes);
        assert!(wrong.is_err());
        let message = take_last_error().expect("a message");
        assert!(message.contains("not a `Shared<[u64]>`"), "{message}");
        // An object nobody here knows.
        let id = shared.object().id();
        drop((shared, back));
        let gone = rkyv::from_bytes::<Shared<[u32]>, rancor::Error>(&bytes);
        assert!(gone.is_err());
        let message = take_last_error().expect("a message");
        assert!(
            message.contains(&format!("shared object {id} is not known")),
            "{message}"
        );
    }

    #[test]
    fn received_objects_are_validated_and_released() {
        let shared = share_slice(&[1u8, 2, 3]).expect("share");
        let id = shared.object().id();
        let frame = shared.object().file().expect("owner").map().expect("map");
        let parsed = protocol::parse_to_worker(&frame).expect("a Shared frame");
        let protocol::ToWorker::Shared { id: got, tag, .. } = parsed else {
            panic!("expected Shared, got {parsed:?}");
        };
        assert_eq!((got, tag), (id, <[u8] as Shareable>::tag()));
        // Pretend to be a worker: the owner's registry must not answer.
        drop(shared);
        receive(id, tag, Some(frame), &[]);
        assert_eq!(received_count(), 1);
        let bytes = rkyv::to_bytes::<rancor::Error>(&SharedRef { id, tag }).expect("ser");
        let back = rkyv::from_bytes::<Shared<[u8]>, rancor::Error>(&bytes).expect("found");
        assert_eq!(&*back, &[1, 2, 3]);
        release(id);
        assert_eq!(received_count(), 0);
        assert_eq!(&*back, &[1, 2, 3], "a live handle keeps the mapping");
    }

    #[test]
    fn invalid_data_is_refused_not_trusted() {
        // A `bool` must be 0 or 1: a forged object holding 2 fails validation.
        let tag = <bool as Shareable>::tag();
        let mut frame = AlignedVec::<16>::new();
        let mut header = [0u8; DATA_OFFSET];
        protocol::encode_shared_header(4242, tag, &mut header);
        frame.extend_from_slice(&header);
        frame.extend_from_slice(&[2]);
        receive(4242, tag, None, &frame);
        let bytes = rkyv::to_bytes::<rancor::Error>(&SharedRef { id: 4242, tag }).expect("ser");
        let res = rkyv::from_bytes::<Shared<bool>, rancor::Error>(&bytes);
        assert!(res.is_err());
        let message = take_last_error().expect("a message");
        assert!(message.contains("is not a valid `bool`"), "{message}");
        release(4242);
    }
}
