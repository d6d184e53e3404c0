//! Types shared by the fuzz targets and `gen_seeds`: a shared object's type tag is a hash of
//! its type's full path, so the seeds' objects must be made from the very type the targets'
//! tasks read.

/// A table shared with workers, read by the `shared_table` task of `call_batch_runtime`
/// (the same shape as the facade's tests use: a vector and an out-of-line string).
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct FuzzTable {
    /// Rows.
    pub rows: Vec<u64>,
    /// A name.
    pub name: String,
}
