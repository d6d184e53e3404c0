//! Promises the `#[task]` macro makes at compile time, checked as doctests.
//!
//! The setup compiles: a task over a user type that derives the rkyv traits, with borrowed
//! `&str` and `&[T]` parameters and a `Result` return.
//!
//! ```
//! use procpool_worker::{task, Task};
//!
//! #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
//! pub struct Point { x: i32, y: i32 }
//!
//! #[task(crate = procpool_worker)]
//! fn shift(p: Point, label: &str, deltas: &[i32]) -> Result<Point, String> {
//!     let d: i32 = deltas.iter().sum();
//!     if label.is_empty() { return Err("no label".into()); }
//!     Ok(Point { x: p.x + d, y: p.y })
//! }
//!
//! assert_eq!(shift::call(Point { x: 1, y: 2 }, "a", &[3, 4]), Ok(Point { x: 8, y: 2 }));
//! assert_eq!(<shift as Task>::SIGNATURE, "fn(Point, &str, &[i32]) -> Result<Point, String>");
//! assert!(procpool_worker::lookup(<shift as Task>::ID).is_some());
//! ```
//!
//! An argument type that cannot be serialized is a compile error:
//!
//! ```compile_fail,E0277
//! struct NotSerializable;
//!
//! #[procpool_worker::task(crate = procpool_worker)]
//! fn takes(value: NotSerializable) {}
//! ```
//!
//! So is an output type that cannot be serialized:
//!
//! ```compile_fail,E0277
//! #[procpool_worker::task(crate = procpool_worker)]
//! fn gives() -> std::rc::Rc<u8> { std::rc::Rc::new(1) }
//! ```
//!
//! A generic function cannot be a task (its id and types must be fixed):
//!
//! ```compile_fail
//! #[procpool_worker::task(crate = procpool_worker)]
//! fn identity<T>(value: T) -> T { value }
//! ```
//!
//! Nor can an `async fn`, a method, or a parameter pattern:
//!
//! ```compile_fail
//! #[procpool_worker::task(crate = procpool_worker)]
//! async fn later(x: u64) -> u64 { x }
//! ```
//!
//! ```compile_fail
//! #[procpool_worker::task(crate = procpool_worker)]
//! fn pair((a, b): (u64, u64)) -> u64 { a + b }
//! ```
//!
//! ```compile_fail
//! #[procpool_worker::task(crate = procpool_worker)]
//! fn borrowed(x: &u64) -> u64 { *x }
//! ```
//!
//! An output must be owned:
//!
//! ```compile_fail
//! #[procpool_worker::task(crate = procpool_worker)]
//! fn name() -> &'static str { "borrowed" }
//! ```
