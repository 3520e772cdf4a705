//! The overview's charts: messages per hour (24 h) and per day (7 days)
//! by outcome, as stacked bars. Only the geometry is computed here; the
//! `chart.html` template draws it as SVG, escaped like every page.

use serde::Serialize;

use apimail_core::journal::Outcome;

use crate::index::Bucket;

/// The drawing area, in SVG units.
const WIDTH: u32 = 720;
const HEIGHT: u32 = 160;
/// Room under the bars for the labels.
const LABELS: u32 = 20;

/// A chart ready for the template.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Chart {
    pub width: u32,
    pub height: u32,
    pub total_height: u32,
    pub max: u64,
    pub bars: Vec<Bar>,
}

/// One bucket.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Bar {
    pub x: u32,
    pub width: u32,
    pub label: String,
    pub label_x: u32,
    pub total: u64,
    /// The title shown on hover: `label: n sent, m failed`.
    pub title: String,
    pub segments: Vec<Segment>,
}

/// One outcome's part of a bar.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Segment {
    pub y: u32,
    pub height: u32,
    /// `sent`, `failed`, ...: the CSS class that colors it.
    pub outcome: &'static str,
}

/// Bars for `buckets`, labelled by `label(start)`; `names` are the
/// outcomes' names for the titles, in `Outcome::ALL`'s order.
pub(crate) fn chart(
    buckets: &[Bucket],
    label: impl Fn(i64) -> String,
    names: [&str; Outcome::ALL.len()],
) -> Chart {
    let max = buckets
        .iter()
        .map(|b| b.counts.iter().sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let slot = WIDTH / (buckets.len().max(1) as u32);
    let bars = buckets
        .iter()
        .enumerate()
        .map(|(n, bucket)| {
            let x = n as u32 * slot;
            let mut top = HEIGHT;
            let mut segments = Vec::new();
            let mut parts = Vec::new();
            for (slot, count) in bucket.counts.iter().enumerate() {
                if *count == 0 {
                    continue;
                }
                let height = ((*count as f64 / max as f64) * f64::from(HEIGHT)).round() as u32;
                let height = height.max(1).min(top);
                top -= height;
                segments.push(Segment {
                    y: top,
                    height,
                    outcome: Outcome::ALL[slot].as_str(),
                });
                parts.push(format!("{count} {}", names[slot]));
            }
            let label = label(bucket.start);
            let title = if parts.is_empty() {
                format!("{label}: 0")
            } else {
                format!("{label}: {}", parts.join(", "))
            };
            Bar {
                x: x + 1,
                width: slot.saturating_sub(2).max(1),
                label_x: x + slot / 2,
                label,
                total: bucket.counts.iter().sum(),
                title,
                segments,
            }
        })
        .collect();
    Chart {
        width: WIDTH,
        height: HEIGHT,
        total_height: HEIGHT + LABELS,
        max,
        bars,
    }
}
