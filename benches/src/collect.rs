//! Samples per (workload, system), folded into rows with median, min and max.

use std::collections::BTreeMap;

/// One figure from one round of one system on one workload.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The figure.
    pub value: f64,
    /// Its unit (`ms`, `us`, `tasks/s`, `items/s`, `efficiency`, `x ideal`, `MiB/s`).
    pub unit: String,
    /// Side figures (speedup, makespan, chunksize…), folded by median like the value.
    pub extra: Vec<(String, f64)>,
}

impl Sample {
    /// A sample without side figures.
    pub fn new(value: f64, unit: &str) -> Self {
        Self {
            value,
            unit: unit.to_owned(),
            extra: Vec::new(),
        }
    }

    /// Adds a side figure.
    pub fn with(mut self, key: &str, value: f64) -> Self {
        self.extra.push((key.to_owned(), value));
        self
    }
}

/// Which language a system runs in (the report compares efficiencies within a language).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// procpool, rayon, the Rust serial loop.
    Rust,
    /// The Python baselines.
    Python,
}

/// One line of the results: the median of a system's samples on a workload.
#[derive(Debug, Clone)]
pub struct Row {
    /// Workload name.
    pub workload: String,
    /// System name (`procpool`, `rayon`, `serial`, `ProcessPoolExecutor cs=1`, …).
    pub system: String,
    /// Language of the system.
    pub lang: Lang,
    /// Median of the samples.
    pub value: f64,
    /// Unit of every sample.
    pub unit: String,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// Every sample, in round order.
    pub samples: Vec<f64>,
    /// Medians of the side figures.
    pub extra: BTreeMap<String, f64>,
}

impl Row {
    /// A row of one sample `value` (so also its median, min and max), with no side figures.
    pub fn single(workload: &str, system: &str, lang: Lang, value: f64, unit: &str) -> Row {
        Row {
            workload: workload.into(),
            system: system.into(),
            lang,
            value,
            unit: unit.into(),
            min: value,
            max: value,
            samples: vec![value],
            extra: BTreeMap::new(),
        }
    }
}

/// Gathers samples in arrival order and folds them into [`Row`]s.
#[derive(Debug, Default)]
pub struct Collector {
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    workload: String,
    system: String,
    lang: Lang,
    unit: String,
    values: Vec<f64>,
    extra: BTreeMap<String, Vec<f64>>,
}

impl Collector {
    /// Records one sample.
    pub fn add(&mut self, workload: &str, system: &str, lang: Lang, sample: Sample) {
        let idx = match self
            .entries
            .iter()
            .position(|e| e.workload == workload && e.system == system)
        {
            Some(idx) => idx,
            None => {
                self.entries.push(Entry {
                    workload: workload.to_owned(),
                    system: system.to_owned(),
                    lang,
                    unit: sample.unit.clone(),
                    values: Vec::new(),
                    extra: BTreeMap::new(),
                });
                self.entries.len() - 1
            }
        };
        let entry = &mut self.entries[idx];
        entry.values.push(sample.value);
        for (key, value) in sample.extra {
            entry.extra.entry(key).or_default().push(value);
        }
    }

    /// The rows, in the order systems first reported.
    pub fn rows(&self) -> Vec<Row> {
        self.entries
            .iter()
            .map(|e| Row {
                workload: e.workload.clone(),
                system: e.system.clone(),
                lang: e.lang,
                value: median(&e.values),
                unit: e.unit.clone(),
                min: e.values.iter().copied().fold(f64::INFINITY, f64::min),
                max: e.values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                samples: e.values.clone(),
                extra: e
                    .extra
                    .iter()
                    .map(|(key, values)| (key.clone(), median(values)))
                    .collect(),
            })
            .collect()
    }
}

/// Puts each workload's rows in report order: the serial loop, procpool, rayon, the Python
/// serial loop, then the other systems as they first reported. Workloads keep the order in
/// which they ran.
pub fn sort_rows(rows: &mut [Row]) {
    let mut workloads: Vec<String> = Vec::new();
    for row in rows.iter() {
        if !workloads.contains(&row.workload) {
            workloads.push(row.workload.clone());
        }
    }
    let rank = |row: &Row| match (row.system.as_str(), row.lang) {
        ("serial", Lang::Rust) => 0,
        ("procpool", _) => 1,
        ("rayon", _) => 2,
        ("python serial", _) => 3,
        _ => 4,
    };
    rows.sort_by_key(|row| (workloads.iter().position(|w| *w == row.workload), rank(row)));
}

/// The median (mean of the two middle values for an even count); NaN when empty.
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn rows_fold_samples_per_system_in_arrival_order() {
        let mut col = Collector::default();
        col.add("w", "b", Lang::Rust, Sample::new(5.0, "ms").with("k", 1.0));
        col.add("w", "a", Lang::Python, Sample::new(1.0, "ms"));
        col.add("w", "b", Lang::Rust, Sample::new(7.0, "ms").with("k", 3.0));
        col.add("w", "b", Lang::Rust, Sample::new(6.0, "ms").with("k", 2.0));
        let rows = col.rows();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].system, "b");
        assert_eq!((rows[0].value, rows[0].min, rows[0].max), (6.0, 5.0, 7.0));
        assert_eq!(rows[0].samples, vec![5.0, 7.0, 6.0]);
        assert_eq!(rows[0].extra["k"], 2.0);
        assert_eq!(rows[1].lang, Lang::Python);
    }

    #[test]
    fn rows_sort_serial_procpool_rayon_then_python_within_each_workload() {
        let mut col = Collector::default();
        for (workload, system, lang) in [
            ("skewed", "py Pool", Lang::Python),
            ("skewed", "python serial", Lang::Python),
            ("skewed", "rayon", Lang::Rust),
            ("skewed", "procpool", Lang::Rust),
            ("skewed", "serial", Lang::Rust),
            ("map_1us", "py B", Lang::Python),
            ("map_1us", "py A", Lang::Python),
            ("map_1us", "serial", Lang::Rust),
        ] {
            col.add(workload, system, lang, Sample::new(1.0, "ms"));
        }
        let mut rows = col.rows();
        sort_rows(&mut rows);
        let order: Vec<(&str, &str)> = rows
            .iter()
            .map(|r| (r.workload.as_str(), r.system.as_str()))
            .collect();
        assert_eq!(
            order,
            [
                ("skewed", "serial"),
                ("skewed", "procpool"),
                ("skewed", "rayon"),
                ("skewed", "python serial"),
                ("skewed", "py Pool"),
                ("map_1us", "serial"),
                ("map_1us", "py B"),
                ("map_1us", "py A"),
            ]
        );
    }
}
