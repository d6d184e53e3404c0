//! How a task's parameters are read out of their validated archived form (used by `#[task]`).
//!
//! Owned parameters are deserialized (a plain number costs a load). `&str` parameters borrow the
//! archived string. `&[T]` parameters borrow the archived slice when `T`'s archived form has
//! the same representation as `T` (bytes, and on little-endian targets the fixed-width
//! integers and floats), and otherwise deserialize into a vector.

use std::any::TypeId;
use std::borrow::Cow;
use std::mem::{align_of, size_of};

use rkyv::string::ArchivedString;
use rkyv::vec::ArchivedVec;
use rkyv::{Archive, Archived};

use crate::protocol::{FailureKind, TaskFailure};
use crate::registry::Wire;

/// Deserializes an owned parameter.
///
/// # Errors
///
/// `BadArguments` when the archived value does not deserialize.
pub fn deserialize_arg<T: Wire>(
    archived: &Archived<T>,
    pool: &mut rkyv::de::Pool,
) -> Result<T, TaskFailure> {
    rkyv::api::deserialize_using::<T, _, rkyv::rancor::Error>(archived, pool).map_err(|error| {
        // A shared handle says why itself (rancor keeps no message in release builds).
        let why = crate::shared::take_last_error().unwrap_or_else(|| error.to_string());
        TaskFailure::new(
            FailureKind::BadArguments,
            format!("cannot deserialize argument: {why}"),
        )
    })
}

/// Borrows a `&str` parameter from its archived string.
pub fn str_arg(archived: &ArchivedString) -> &str {
    archived.as_str()
}

/// Reads a `&[T]` parameter: borrowed when the representations agree, else deserialized.
///
/// # Errors
///
/// `BadArguments` when an element does not deserialize.
pub fn slice_arg<'a, T>(
    archived: &'a ArchivedVec<Archived<T>>,
    pool: &mut rkyv::de::Pool,
) -> Result<Cow<'a, [T]>, TaskFailure>
where
    T: Wire + Clone,
    Archived<T>: 'static,
{
    let items: &'a [Archived<T>] = archived.as_slice();
    if same_representation::<T>() {
        // SAFETY: `same_representation` holds only when `Archived<T>` is `T` itself, or when `T`
        // is a fixed-width integer or float whose archived form is rend's little-endian wrapper
        // on a little-endian target: same size and alignment, same bytes for the same value,
        // and every bit pattern a valid `T`. `items` is a validated, aligned slice of
        // `Archived<T>` that lives for `'a`, so it is equally a valid `&'a [T]`.
        let slice = unsafe { std::slice::from_raw_parts(items.as_ptr().cast::<T>(), items.len()) };
        return Ok(Cow::Borrowed(slice));
    }
    items
        .iter()
        .map(|item| deserialize_arg::<T>(item, pool))
        .collect::<Result<Vec<T>, _>>()
        .map(Cow::Owned)
}

/// Whether a `[Archived<T>]` can be read as a `[T]`.
fn same_representation<T: Archive + 'static>() -> bool
where
    Archived<T>: 'static,
{
    if size_of::<T>() != size_of::<Archived<T>>() || align_of::<T>() != align_of::<Archived<T>>() {
        return false;
    }
    let id = TypeId::of::<T>();
    if id == TypeId::of::<Archived<T>>() {
        return true;
    }
    cfg!(target_endian = "little")
        && [
            TypeId::of::<u16>(),
            TypeId::of::<u32>(),
            TypeId::of::<u64>(),
            TypeId::of::<u128>(),
            TypeId::of::<i16>(),
            TypeId::of::<i32>(),
            TypeId::of::<i64>(),
            TypeId::of::<i128>(),
            TypeId::of::<f32>(),
            TypeId::of::<f64>(),
        ]
        .contains(&id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive_of<T: Wire>(value: &Vec<T>) -> rkyv::util::AlignedVec {
        let mut out = rkyv::util::AlignedVec::new();
        crate::protocol::append_archive(value, &mut out).expect("serializes");
        out
    }

    #[test]
    fn numeric_slices_are_borrowed_and_equal() {
        let values: Vec<u64> = vec![1, u64::MAX, 42];
        let bytes = archive_of(&values);
        let archived =
            rkyv::access::<ArchivedVec<Archived<u64>>, rkyv::rancor::Error>(&bytes).expect("valid");
        let mut pool = rkyv::de::Pool::new();
        let slice = slice_arg::<u64>(archived, &mut pool).expect("reads");
        assert!(matches!(slice, Cow::Borrowed(_)));
        assert_eq!(&*slice, &values[..]);

        let floats: Vec<f64> = vec![1.5, -0.0, f64::INFINITY];
        let bytes = archive_of(&floats);
        let archived =
            rkyv::access::<ArchivedVec<Archived<f64>>, rkyv::rancor::Error>(&bytes).expect("valid");
        let slice = slice_arg::<f64>(archived, &mut pool).expect("reads");
        assert_eq!(&*slice, &floats[..]);
    }

    #[test]
    fn other_slices_are_deserialized() {
        let values: Vec<String> = vec!["a".into(), "bc".into()];
        let bytes = archive_of(&values);
        let archived = rkyv::access::<ArchivedVec<Archived<String>>, rkyv::rancor::Error>(&bytes)
            .expect("valid");
        let mut pool = rkyv::de::Pool::new();
        let slice = slice_arg::<String>(archived, &mut pool).expect("reads");
        assert!(matches!(slice, Cow::Owned(_)));
        assert_eq!(&*slice, &values[..]);
    }
}
