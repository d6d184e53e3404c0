//! SVG bar charts (plotters, SVG backend only): one per workload, plus makespans for `skewed`.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::BenchError;
use crate::collect::{Lang, Row};
use crate::report::fmt_value;

/// One bar: label, median, min, max.
#[derive(Debug, Clone)]
pub struct Bar {
    /// The label on the y axis.
    pub label: String,
    /// Bar length.
    pub value: f64,
    /// Whisker start (min of the rounds).
    pub min: f64,
    /// Whisker end (max of the rounds).
    pub max: f64,
    /// Fill colour.
    pub color: RGBColor,
}

/// The colour of a system: procpool stands out, rayon is blue, serial grey, Python orange.
pub fn color_of(system: &str, lang: Lang) -> RGBColor {
    match (system, lang) {
        ("procpool", _) => RGBColor(200, 30, 45),
        ("rayon", _) => RGBColor(31, 119, 180),
        (_, Lang::Rust) => RGBColor(127, 127, 127),
        ("python serial", Lang::Python) => RGBColor(188, 160, 120),
        (_, Lang::Python) => RGBColor(255, 140, 20),
    }
}

/// The bars of one workload: every row in the headline `unit`.
pub fn workload_bars(rows: &[Row], workload: &str, unit: &str) -> Vec<Bar> {
    rows.iter()
        .filter(|r| r.workload == workload && r.unit == unit && r.value.is_finite())
        .map(|r| Bar {
            label: r.system.clone(),
            value: r.value,
            min: r.min,
            max: r.max,
            color: color_of(&r.system, r.lang),
        })
        .collect()
}

/// The makespan bars of `skewed`, with each language's ideal as a grey bar.
pub fn makespan_bars(rows: &[Row]) -> Vec<Bar> {
    let mut bars = Vec::new();
    for lang in [Lang::Rust, Lang::Python] {
        let mut ideal = None;
        for r in rows
            .iter()
            .filter(|r| r.workload == "skewed" && r.lang == lang)
        {
            if let Some(&makespan) = r.extra.get("makespan_ms") {
                ideal = ideal.or(r.extra.get("ideal_ms").copied());
                // min/max of the ratio scale to the makespan by the median ideal.
                let scale = makespan / r.value;
                bars.push(Bar {
                    label: r.system.clone(),
                    value: makespan,
                    min: r.min * scale,
                    max: r.max * scale,
                    color: color_of(&r.system, r.lang),
                });
            }
        }
        if let Some(ideal) = ideal {
            let label = match lang {
                Lang::Rust => "ideal (Rust serial work ÷ workers)",
                Lang::Python => "ideal (Python serial work ÷ workers)",
            };
            bars.push(Bar {
                label: label.into(),
                value: ideal,
                min: ideal,
                max: ideal,
                color: RGBColor(200, 200, 200),
            });
        }
    }
    bars
}

/// Draws horizontal bars with min–max whiskers and value labels into an SVG file. When the
/// figures span more than 30×, the axis is log10 (labelled with the real values).
pub fn bar_chart(path: &Path, title: &str, unit: &str, bars: &[Bar]) -> Result<(), BenchError> {
    let err = |e: String| BenchError::Plot {
        path: path.display().to_string(),
        message: e,
    };
    if bars.is_empty() {
        return Err(err("no bars".into()));
    }
    let positive: Vec<f64> = bars.iter().map(|b| b.value).filter(|&v| v > 0.0).collect();
    let lo = positive.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = bars.iter().map(|b| b.max.max(b.value)).fold(0.0, f64::max);
    let log = lo.is_finite() && hi / lo > 30.0;
    let (x0, x1) = if log {
        ((lo.log10() - 0.3).floor(), hi.log10() + 0.6)
    } else {
        (0.0, hi * 1.25)
    };
    let to_x = |v: f64| {
        if log {
            v.max(1e-300).log10().max(x0)
        } else {
            v
        }
    };

    let height = 90 + 34 * bars.len() as u32;
    let root = SVGBackend::new(path, (900, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let n = bars.len();
    // An integer range is inclusive in plotters: `0..n - 1` holds n bands. A single bar gets
    // an empty band above it, because plotters draws no label on a one-value range.
    let top = (n - 1).max(1);
    let labels: Vec<String> = bars.iter().map(|b| b.label.clone()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(250)
        .build_cartesian_2d(x0..x1, (0..top).into_segmented())
        .map_err(|e| err(e.to_string()))?;
    let x_desc = if log {
        format!("{unit} (log scale)")
    } else {
        unit.to_owned()
    };
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc(x_desc)
        .x_label_formatter(&|&x| {
            if log {
                fmt_value(10f64.powf(x))
            } else {
                fmt_value(x)
            }
        })
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(idx) => labels.get(*idx).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .draw()
        .map_err(|e| err(e.to_string()))?;
    chart
        .draw_series(bars.iter().enumerate().map(|(idx, bar)| {
            let mut rect = Rectangle::new(
                [
                    (x0, SegmentValue::Exact(idx)),
                    (to_x(bar.value), SegmentValue::Exact(idx + 1)),
                ],
                bar.color.filled(),
            );
            rect.set_margin(5, 5, 0, 0);
            rect
        }))
        .map_err(|e| err(e.to_string()))?;
    chart
        .draw_series(
            bars.iter()
                .enumerate()
                .filter(|(_, b)| b.max > b.min)
                .map(|(idx, bar)| {
                    PathElement::new(
                        vec![
                            (to_x(bar.min), SegmentValue::CenterOf(idx)),
                            (to_x(bar.max), SegmentValue::CenterOf(idx)),
                        ],
                        BLACK.stroke_width(2),
                    )
                }),
        )
        .map_err(|e| err(e.to_string()))?;
    chart
        .draw_series(bars.iter().enumerate().map(|(idx, bar)| {
            Text::new(
                format!(" {}", fmt_value(bar.value)),
                (to_x(bar.max.max(bar.value)), SegmentValue::CenterOf(idx)),
                TextStyle::from(("sans-serif", 13)).pos(Pos::new(HPos::Left, VPos::Center)),
            )
        }))
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {

    use super::*;

    fn row(system: &str, lang: Lang, value: f64, unit: &str, extra: &[(&str, f64)]) -> Row {
        Row {
            min: value * 0.9,
            max: value * 1.1,
            extra: extra.iter().map(|&(k, v)| (k.to_owned(), v)).collect(),
            ..Row::single("skewed", system, lang, value, unit)
        }
    }

    #[test]
    fn makespan_bars_add_one_ideal_per_language() {
        let rows = vec![
            row("serial", Lang::Rust, 700.0, "ms", &[]),
            row(
                "procpool",
                Lang::Rust,
                1.02,
                "x ideal",
                &[("makespan_ms", 357.0), ("ideal_ms", 350.0)],
            ),
            row(
                "py ProcessPoolExecutor cs=1",
                Lang::Python,
                1.4,
                "x ideal",
                &[("makespan_ms", 420.0), ("ideal_ms", 300.0)],
            ),
        ];
        let bars = makespan_bars(&rows);
        let labels: Vec<&str> = bars.iter().map(|b| b.label.as_str()).collect();
        assert_eq!(labels.len(), 4, "{labels:?}");
        assert_eq!(bars[0].value, 357.0);
        assert!(labels[1].starts_with("ideal (Rust"));
        assert_eq!(bars[3].value, 300.0);
    }

    #[test]
    fn charts_are_written_as_svg_in_both_scales() {
        let dir = tempfile::tempdir().unwrap();
        let bars = |values: &[f64]| -> Vec<Bar> {
            values
                .iter()
                .enumerate()
                .map(|(i, &v)| Bar {
                    label: format!("system {i}"),
                    value: v,
                    min: v * 0.9,
                    max: v * 1.1,
                    color: color_of("rayon", Lang::Rust),
                })
                .collect()
        };
        for (name, values) in [
            ("linear.svg", vec![1.0, 2.0, 3.0]),
            ("log.svg", vec![4e3, 1e8]),
            ("one.svg", vec![5.0]),
        ] {
            let path = dir.path().join(name);
            bar_chart(&path, "title", "items/s", &bars(&values)).unwrap();
            let svg = std::fs::read_to_string(&path).unwrap();
            assert!(svg.starts_with("<svg"), "{name}");
            let last = format!("system {}", values.len() - 1);
            assert!(svg.contains(&last), "{name}: every label drawn");
        }
        assert!(bar_chart(&dir.path().join("empty.svg"), "t", "u", &[]).is_err());
    }
}
