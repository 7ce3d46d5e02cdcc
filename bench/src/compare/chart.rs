//! A PNG bar chart of q/CPU-s: one horizontal bar per server and client at the median, with
//! a whisker over the range of the rounds.

use std::path::Path;

use anyhow::{Context, anyhow};
use plotters::prelude::*;

use super::stats::Summary;

/// One bar of the chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    /// Label on the axis (server and client).
    pub label: String,
    /// Median and range of q/CPU-s.
    pub value: Summary,
}

/// Draws `bars` into a PNG at `path`.
pub fn draw(path: &Path, title: &str, bars: &[Bar]) -> anyhow::Result<()> {
    let n = bars.len().max(1);
    let height = 120 + 44 * n as u32;
    let root = BitMapBackend::new(path, (1100, height)).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let top = bars
        .iter()
        .map(|b| b.value.max.max(b.value.median))
        .fold(0.0, f64::max);
    let x_max = if top > 0.0 { top * 1.1 } else { 1.0 };
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(380)
        .build_cartesian_2d(0.0..x_max, (0..n as i32 - 1).into_segmented())
        .map_err(|e| err(&e))?;
    // The first bar goes at the top.
    let row = |i: usize| (n - 1 - i) as i32;
    let label_of = |v: &SegmentValue<i32>| match v {
        SegmentValue::CenterOf(y) | SegmentValue::Exact(y) => usize::try_from(*y)
            .ok()
            .and_then(|y| bars.get(n.checked_sub(y + 1)?))
            .map(|b| b.label.clone())
            .unwrap_or_default(),
        SegmentValue::Last => String::new(),
    };
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n)
        .y_label_formatter(&label_of)
        .x_desc("answered queries per server CPU-second")
        .x_label_formatter(&|x| format!("{:.0}k", x / 1000.0))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| err(&e))?;
    let colour = |i: usize| Palette99::pick(i).mix(0.8);
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            let y = row(i);
            let mut r = Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(y)),
                    (b.value.median, SegmentValue::Exact(y + 1)),
                ],
                colour(i).filled(),
            );
            r.set_margin(6, 6, 0, 0);
            r
        }))
        .map_err(|e| err(&e))?;
    let whisker = BLACK.stroke_width(2);
    for (i, b) in bars.iter().enumerate() {
        let y = || SegmentValue::CenterOf(row(i));
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(b.value.min, y()), (b.value.max, y())],
                whisker,
            )))
            .map_err(|e| err(&e))?;
        for x in [b.value.min, b.value.max] {
            let cap = EmptyElement::at((x, y())) + PathElement::new(vec![(0, -8), (0, 8)], whisker);
            chart
                .draw_series(std::iter::once(cap))
                .map_err(|e| err(&e))?;
        }
    }
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_png() {
        let dir = std::env::temp_dir().join(format!("shardns-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("chart.png");
        let bars = [
            Bar {
                label: "reflector / load".into(),
                value: Summary {
                    median: 250e3,
                    min: 240e3,
                    max: 260e3,
                },
            },
            Bar {
                label: "shardns --io epoll, 1 shard / load".into(),
                value: Summary {
                    median: 600e3,
                    min: 500e3,
                    max: 700e3,
                },
            },
        ];
        draw(&path, "q/CPU-s", &bars).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.len() > 1000);
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
