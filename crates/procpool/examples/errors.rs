//! What failures look like: a task that returns `Err`, one that panics, one that kills its
//! worker. The pool carries on after each.
//!
//! Run with `cargo run --release --example errors`.

use procpool::TaskError;

/// Parses a number, failing on bad input.
#[procpool::task]
fn parse(text: &str) -> Result<i64, String> {
    text.trim()
        .parse()
        .map_err(|err| format!("{text:?} is not a number: {err}"))
}

/// Divides, panicking on division by zero.
#[procpool::task]
fn divide(a: i64, b: i64) -> i64 {
    a / b
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    procpool::init();
    let pool = procpool::Pool::builder().workers(2).build()?;

    for text in ["42", "forty-two"] {
        match pool.call(parse, text.to_owned()) {
            Ok(n) => println!("parse({text:?}) = {n}"),
            Err(TaskError::Failed(message)) => println!("parse({text:?}) failed: {message}"),
            Err(other) => return Err(other.into()),
        }
    }
    match pool.call(divide, (1, 0)) {
        Err(TaskError::Panicked { message, location }) => {
            println!(
                "divide(1, 0) panicked: {message} (at {})",
                location.as_deref().unwrap_or("?")
            );
        }
        other => println!("divide(1, 0) gave {other:?}"),
    }
    match pool.call(procpool::builtin::abort, ()) {
        Err(err @ TaskError::WorkerDied { .. }) => println!("abort(): {err}"),
        other => println!("abort() gave {other:?}"),
    }
    // Every item gets its own outcome; one failure does not spoil the map.
    let inputs = ["1", "2", "three", "4"].map(str::to_owned);
    for (text, outcome) in inputs.clone().iter().zip(pool.map(parse, inputs)) {
        println!("map: {text:?} -> {outcome:?}");
    }
    println!(
        "the pool still works: 84 / 2 = {}",
        pool.call(divide, (84, 2))?
    );
    println!("workers replaced so far: {}", pool.stats().restarts);
    Ok(())
}
