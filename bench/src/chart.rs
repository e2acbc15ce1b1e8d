//! The picture people read first: per phase, ops/s and p99 latency of each store, as
//! grouped bars (one chart per worker count).

use crate::driver::PhaseResult;
use anyhow::Context;
use plotters::prelude::*;
use std::path::Path;

const COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

/// Register the TTF font text is drawn with (plotters ships none).
pub fn load_font(path: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("reading font {} (pass --font)", path.display()))?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow::anyhow!("{} is not a usable TTF font", path.display()))?;
    Ok(())
}

/// What a panel plots of a result.
type Metric = &'static dyn Fn(&PhaseResult) -> f64;

/// Draw `results` (one worker count) into a PNG at `out`.
pub fn draw(results: &[PhaseResult], out: &Path) -> anyhow::Result<()> {
    let mut phases: Vec<String> = Vec::new();
    let mut stores: Vec<String> = Vec::new();
    for r in results {
        if !phases.contains(&r.phase) {
            phases.push(r.phase.clone());
        }
        if !stores.contains(&r.backend) {
            stores.push(r.backend.clone());
        }
    }
    anyhow::ensure!(!phases.is_empty(), "no results to draw");
    let workers = results.first().map(|r| r.workers).unwrap_or(0);
    // One slot per store and a gap between phases; a phase's label under its middle bar.
    let group = stores.len() as i32 + 1;
    let middle = stores.len() as i32 / 2;
    let root = BitMapBackend::new(out, (1200, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(450);
    let panels: [(&str, Metric); 2] = [
        (
            "throughput, operations per second (higher is better)",
            &|r| r.ops_per_sec,
        ),
        ("p99 latency, milliseconds (lower is better)", &|r| {
            r.p99_us as f64 / 1000.0
        }),
    ];
    for (area, (title, value)) in [top, bottom].iter().zip(panels) {
        let max = results.iter().map(value).fold(0.0, f64::max) * 1.15;
        let n = phases.len() as i32;
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{title}, {workers} workers"), ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(70)
            .build_cartesian_2d(0..n * group, 0.0..max.max(1.0))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(phases.len() * group as usize)
            .x_label_formatter(&|x| {
                if x % group == middle {
                    phases
                        .get((x / group) as usize)
                        .cloned()
                        .unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .label_style(("sans-serif", 16))
            .draw()?;
        for (si, store) in stores.iter().enumerate() {
            let color = COLORS[si % COLORS.len()];
            let bars = results
                .iter()
                .filter(|r| &r.backend == store)
                .filter_map(|r| {
                    let p = phases.iter().position(|x| x == &r.phase)? as i32;
                    let x = p * group + si as i32;
                    Some(Rectangle::new(
                        [(x, 0.0), (x + 1, value(r))],
                        color.filled(),
                    ))
                });
            chart
                .draw_series(bars)?
                .label(store.clone())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 12, y + 6)], color.filled())
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font(("sans-serif", 16))
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
    }
    root.present()?;
    Ok(())
}
