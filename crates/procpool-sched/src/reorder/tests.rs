//! Unit tests of the reorder buffer.

use std::num::NonZeroUsize;

use super::{Order, Reorder, ReorderError};

fn window(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap()
}

#[test]
fn input_order_waits_for_the_prefix() {
    let mut reorder = Reorder::new(Order::Input, window(4));
    assert_eq!(reorder.admit(100), 0..4);
    for index in [3, 1, 2] {
        reorder.push(index, index * 10).unwrap();
    }
    assert_eq!(reorder.pop(), None);
    assert_eq!(reorder.buffered(), 3);
    reorder.push(0, 0).unwrap();
    let popped: Vec<_> = std::iter::from_fn(|| reorder.pop()).collect();
    assert_eq!(popped, [(0, 0), (1, 10), (2, 20), (3, 30)]);
    assert_eq!(reorder.room(), 4);
    assert_eq!(reorder.admit(2), 4..6);
}

#[test]
fn completion_order_releases_at_once_and_frees_room() {
    let mut reorder = Reorder::new(Order::Completion, window(2));
    assert_eq!(reorder.admit(5), 0..2);
    reorder.push(1, "b").unwrap();
    assert_eq!(reorder.pop(), Some((1, "b")));
    assert_eq!(reorder.room(), 1);
    assert_eq!(reorder.admit(5), 2..3);
    assert_eq!(reorder.outstanding(), 2);
    reorder.push(2, "c").unwrap();
    reorder.push(0, "a").unwrap();
    assert_eq!(reorder.pop(), Some((2, "c")));
    assert_eq!(reorder.pop(), Some((0, "a")));
    assert_eq!(reorder.pop(), None);
}

#[test]
fn bad_pushes_are_refused() {
    for order in [Order::Input, Order::Completion] {
        let mut reorder = Reorder::new(order, window(2));
        reorder.admit(2);
        assert_eq!(reorder.push(2, ()), Err(ReorderError::NotAdmitted(2)));
        reorder.push(0, ()).unwrap();
        assert_eq!(reorder.push(0, ()), Err(ReorderError::Duplicate(0)));
        assert_eq!(reorder.pop(), Some((0, ())));
        assert_eq!(reorder.push(0, ()), Err(ReorderError::Duplicate(0)));
        assert_eq!(reorder.buffered(), 0);
    }
}
