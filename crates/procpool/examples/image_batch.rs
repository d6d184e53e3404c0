//! A real CPU job: generate images, resize and grayscale them, and write them as PNG files,
//! in worker processes; then the same for a few images serially, for comparison.
//!
//! Run with `cargo run --release --example image_batch [-- COUNT]` (default 32 images).

use std::path::Path;
use std::time::Instant;

use image::{ImageBuffer, Rgb, imageops};

/// Side of a generated image, in pixels.
const SIZE: u32 = 1024;

/// Draws image `seed`, halves it with a Lanczos filter, grayscales it and writes it to `dir`.
/// Returns the size of the written file.
#[procpool::task]
fn process_image(seed: u64, dir: &str) -> Result<u64, String> {
    let image = ImageBuffer::from_fn(SIZE, SIZE, |x, y| {
        let (fx, fy, s) = (x as f32 / 64.0, y as f32 / 64.0, seed as f32 * 0.37);
        let r = ((fx + s).sin() * (fy * 0.7).cos() * 127.0 + 128.0) as u8;
        let g = (((fx * fy).sqrt() + s).sin() * 127.0 + 128.0) as u8;
        let b = ((fx * 0.3 - fy * 0.9 + s).cos() * 127.0 + 128.0) as u8;
        Rgb([r, g, b])
    });
    let small = imageops::resize(&image, SIZE / 2, SIZE / 2, imageops::FilterType::Lanczos3);
    let gray = imageops::grayscale(&small);
    let path = Path::new(dir).join(format!("image-{seed:04}.png"));
    gray.save(&path)
        .map_err(|err| format!("{}: {err}", path.display()))?;
    std::fs::metadata(&path)
        .map(|meta| meta.len())
        .map_err(|err| err.to_string())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    procpool::init();
    let count: u64 = std::env::args().nth(1).map_or(Ok(32), |arg| arg.parse())?;
    let dir = tempfile::tempdir()?;
    let dir_name = dir
        .path()
        .to_str()
        .ok_or("temp dir is not UTF-8")?
        .to_owned();

    let pool = procpool::Pool::new()?;
    let start = Instant::now();
    let mut bytes = 0;
    for (index, outcome) in pool.map_unordered(
        process_image,
        (0..count).map(|seed| (seed, dir_name.clone())),
    ) {
        match outcome {
            Ok(size) => bytes += size,
            Err(err) => eprintln!("image {index}: {err}"),
        }
    }
    let parallel = start.elapsed();
    let per_image = parallel / count as u32;
    println!(
        "{count} images of {SIZE}x{SIZE} drawn, resized, grayscaled and written ({:.1} MiB of PNG) in {parallel:.2?} with {} workers: {per_image:.2?} per image",
        bytes as f64 / (1 << 20) as f64,
        pool.workers()
    );

    let serial_count = count.min(4);
    let start = Instant::now();
    for seed in 0..serial_count {
        process_image::call(seed, &dir_name)?;
    }
    let serial_per_image = start.elapsed() / serial_count as u32;
    println!(
        "serially: {serial_per_image:.2?} per image (over {serial_count}); speed-up {:.2}x",
        serial_per_image.as_secs_f64() / per_image.as_secs_f64()
    );
    println!(
        "files were written to {} (removed on exit)",
        dir.path().display()
    );
    Ok(())
}
