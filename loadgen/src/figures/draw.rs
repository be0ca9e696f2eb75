//! The figures, drawn with plotters on its SVG backend: a latency chart per transport (lines
//! through every search step, p99 bold, p50 faint, log scale) and two grouped bar charts (the
//! sustainable rates; memory per connection with each row's target as a black mark). Every
//! figure carries the run's caption (date and load) under its chart.

use crate::data::{Data, LatencySeries, TRANSPORTS};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// Every figure's size in pixels.
const SIZE: (u32, u32) = (900, 520);
/// The height of the caption strip under each chart.
const CAPTION: u32 = 26;
/// The font of titles and labels.
const FONT: &str = "sans-serif";

/// The colour of the `i`th target (relay, Go shape, bare forwarder, then more).
fn colour(i: usize) -> RGBColor {
    const COLOURS: [RGBColor; 4] = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(90, 90, 90),
        RGBColor(44, 160, 44),
    ];
    COLOURS[i % COLOURS.len()]
}

/// A drawing error as a line naming the file.
fn failed<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> String + '_ {
    move |error| format!("cannot draw {}: {error}", path.display())
}

/// `65000` as `65k`, `2500` as `2.5k`, smaller numbers as they are.
fn short(x: f64) -> String {
    if x.abs() >= 1000.0 {
        format!("{}k", (x / 100.0).round() / 10.0)
    } else {
        format!("{}", (x * 100.0).round() / 100.0)
    }
}

/// Draws every figure into `out`; the files written.
///
/// # Errors
///
/// A line naming the figure that could not be drawn or written.
pub fn all(data: &Data, out: &Path) -> Result<Vec<PathBuf>, String> {
    let mut written = Vec::new();
    for (transport, label) in TRANSPORTS {
        let path = out.join(format!("latency-{transport}.svg"));
        latency(data, transport, label, &path)?;
        written.push(path);
    }
    let path = out.join("sustainable.svg");
    sustainable(data, &path)?;
    written.push(path);
    let path = out.join("memory.svg");
    memory(data, &path)?;
    written.push(path);
    Ok(written)
}

/// A figure's drawing area.
type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// The chart's area and the whole figure (to present), the caption written under the chart.
fn canvas<'a>(path: &'a Path, caption: &str) -> Result<(Area<'a>, Area<'a>), String> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(failed(path))?;
    let (chart, strip) = root.split_vertically(SIZE.1 - CAPTION);
    strip
        .draw(&Text::new(
            caption.to_owned(),
            (12, 4),
            (FONT, 14).into_font(),
        ))
        .map_err(failed(path))?;
    Ok((chart, root))
}

/// Latency (p50, p99) against the offered rate of every search step over one transport.
fn latency(data: &Data, transport: &str, label: &str, path: &Path) -> Result<(), String> {
    let series: Vec<(usize, &str, &LatencySeries)> = data
        .targets
        .iter()
        .enumerate()
        .filter_map(|(i, target)| {
            let found = data.latency.iter().find(|s| {
                s.transport == transport && s.target == target.key && !s.points.is_empty()
            });
            found.map(|s| (i, target.label.as_str(), s))
        })
        .collect();
    let points = || series.iter().flat_map(|(_, _, s)| s.points.iter());
    let x_max = points().map(|p| p[0]).fold(1.0, f64::max) * 1.05;
    let positive = points().flat_map(|p| [p[1], p[2]]).filter(|v| *v > 0.0);
    let y_min = (positive.clone().fold(f64::INFINITY, f64::min) / 1.5).clamp(0.01, 1.0);
    let y_max = (positive.fold(1.0, f64::max) * 1.5).max(y_min * 10.0);
    let (area, root) = canvas(path, &data.caption)?;
    let mut chart = ChartBuilder::on(&area)
        .caption(
            format!("Latency against offered rate, {label}"),
            (FONT, 22).into_font(),
        )
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max, (y_min..y_max).log_scale())
        .map_err(failed(path))?;
    chart
        .configure_mesh()
        .x_desc("offered frames/s each way (1 KiB frames)")
        .y_desc("latency, ms (log scale; worse direction)")
        .x_label_formatter(&|x| short(*x))
        .y_label_formatter(&|y| short(*y))
        .draw()
        .map_err(failed(path))?;
    for (i, name, s) in series {
        let colour = colour(i);
        let mut steps = s.points.clone();
        steps.sort_by(|a, b| a[0].total_cmp(&b[0]));
        let at = |v: f64| v.max(y_min);
        chart
            .draw_series(LineSeries::new(
                steps.iter().map(|p| (p[0], at(p[2]))),
                colour.stroke_width(2),
            ))
            .map_err(failed(path))?
            .label(format!("{name} p99"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2)));
        chart
            .draw_series(
                steps
                    .iter()
                    .map(|p| Circle::new((p[0], at(p[2])), 3, colour.filled())),
            )
            .map_err(failed(path))?;
        let faint = colour.mix(0.45);
        chart
            .draw_series(LineSeries::new(
                steps.iter().map(|p| (p[0], at(p[1]))),
                faint.stroke_width(1),
            ))
            .map_err(failed(path))?
            .label(format!("{name} p50"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], faint.stroke_width(1)));
        chart
            .draw_series(
                steps
                    .iter()
                    .map(|p| TriangleMarker::new((p[0], at(p[1])), 3, faint.filled())),
            )
            .map_err(failed(path))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 13).into_font())
        .draw()
        .map_err(failed(path))?;
    root.present().map_err(failed(path))
}

/// One group of bars: its label under the axis, a target mark over it, and a value per target
/// (`None`: not measured, no bar).
struct Group {
    label: String,
    target: Option<f64>,
    values: Vec<Option<f64>>,
}

/// The sustainable rates, plain and TLS, side by side.
fn sustainable(data: &Data, path: &Path) -> Result<(), String> {
    let groups = TRANSPORTS
        .iter()
        .map(|(transport, label)| Group {
            label: (*label).to_owned(),
            target: None,
            values: data
                .targets
                .iter()
                .map(|t| {
                    data.sustainable
                        .iter()
                        .find(|r| r.transport == *transport && r.target == t.key)
                        .and_then(|r| r.per_s)
                })
                .collect(),
        })
        .collect::<Vec<_>>();
    bars(
        data,
        path,
        "Sustainable rate (200 ids × 4 phones, 1 KiB, both ways, 0 lost, p99 ≤ 50 ms)",
        "frames/s each way",
        &groups,
        "",
    )
}

/// RSS per connection, idle and after a frame, plain and TLS, with the targets.
fn memory(data: &Data, path: &Path) -> Result<(), String> {
    let mut groups = Vec::new();
    for (transport, label) in TRANSPORTS {
        let target = data
            .memory_targets
            .iter()
            .find(|t| t.transport == transport);
        let value = |key: &str, idle: bool| {
            let m = data
                .memory
                .iter()
                .find(|m| m.transport == transport && m.target == key)?;
            if idle { m.idle_kib } else { m.after_frame_kib }
        };
        for (idle, what) in [(true, "idle"), (false, "after a frame")] {
            groups.push(Group {
                label: format!("{} {what}", label.split(' ').next().unwrap_or(label)),
                target: target.and_then(|t| if idle { t.idle_kib } else { t.after_frame_kib }),
                values: data.targets.iter().map(|t| value(&t.key, idle)).collect(),
            });
        }
    }
    bars(
        data,
        path,
        "RSS per phone (10,000 phones on one binary); black: the target",
        "KiB per connection",
        &groups,
        " KiB",
    )
}

/// A grouped bar chart: one group per entry of `groups`, one bar per target, each bar labelled
/// with its value and `unit`; a group's target is a black line across it, its value in the
/// group's label.
fn bars(
    data: &Data,
    path: &Path,
    title: &str,
    y_desc: &str,
    groups: &[Group],
    unit: &str,
) -> Result<(), String> {
    let y_max = groups
        .iter()
        .flat_map(|g| g.values.iter().flatten().copied().chain(g.target))
        .fold(1.0, f64::max)
        * 1.15;
    let n = data.targets.len().max(1) as f64;
    let width = 0.8 / n;
    let (area, root) = canvas(path, &data.caption)?;
    let labels: Vec<String> = groups
        .iter()
        .map(|g| match g.target {
            Some(goal) => format!("{} (target ≤ {}{unit})", g.label, short(goal)),
            None => g.label.clone(),
        })
        .collect();
    let mut chart = ChartBuilder::on(&area)
        .caption(title, (FONT, 20).into_font())
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..groups.len() as f64, 0f64..y_max)
        .map_err(failed(path))?;
    // Tick marks every half unit: the group centres (x.5) carry the groups' labels.
    let group_label = move |x: &f64| {
        let centre = x - 0.5;
        if centre >= 0.0 && (centre - centre.round()).abs() < 1e-6 {
            labels
                .get(centre.round() as usize)
                .cloned()
                .unwrap_or_default()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(groups.len() * 2 + 1)
        .x_label_formatter(&group_label)
        .y_desc(y_desc)
        .y_label_formatter(&|y| short(*y))
        .draw()
        .map_err(failed(path))?;
    for (i, target) in data.targets.iter().enumerate() {
        let colour = colour(i);
        let left = |g: usize| g as f64 + 0.1 + i as f64 * width;
        let present = || {
            groups
                .iter()
                .enumerate()
                .filter_map(|(g, group)| group.values.get(i).copied().flatten().map(|v| (g, v)))
        };
        chart
            .draw_series(present().map(|(g, v)| {
                Rectangle::new(
                    [(left(g), 0.0), (left(g) + width * 0.92, v)],
                    colour.filled(),
                )
            }))
            .map_err(failed(path))?
            .label(target.label.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled()));
        chart
            .draw_series(present().map(|(g, v)| {
                EmptyElement::at((left(g), v))
                    + Text::new(
                        format!("{}{unit}", short(v)),
                        (0, -15),
                        (FONT, 12).into_font(),
                    )
            }))
            .map_err(failed(path))?;
    }
    for (g, group) in groups.iter().enumerate() {
        if let Some(goal) = group.target {
            let (from, to) = (g as f64 + 0.05, g as f64 + 0.95);
            chart
                .draw_series([PathElement::new(
                    [(from, goal), (to, goal)],
                    BLACK.stroke_width(2),
                )])
                .map_err(failed(path))?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 13).into_font())
        .draw()
        .map_err(failed(path))?;
    root.present().map_err(failed(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_numbers_are_short() {
        assert_eq!(short(65000.0), "65k");
        assert_eq!(short(2500.0), "2.5k");
        assert_eq!(short(3.456), "3.46");
    }

    #[test]
    fn every_figure_is_written_as_svg_with_its_caption_even_with_rows_missing() {
        let data: Data = serde_json::from_str(
            r#"{"caption": "run of today", "targets": [{"key": "relay", "label": "relay"},
                {"key": "bare", "label": "bare forwarder"}],
                "latency": [{"transport": "plain", "target": "relay", "points": [[1000, 1, 2], [500, 0.5, 0.9]]}],
                "sustainable": [{"transport": "plain", "target": "relay", "per_s": 65000},
                                {"transport": "tls", "target": "bare", "per_s": null}],
                "memory": [{"transport": "tls", "target": "relay", "idle_kib": 6.5, "after_frame_kib": null}],
                "memory_targets": [{"transport": "tls", "idle_kib": 8, "after_frame_kib": 12}]}"#,
        )
        .unwrap();
        let dir = std::env::temp_dir().join(format!("relay-figures-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let written = all(&data, &dir).unwrap();
        let names: Vec<_> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_owned())
            .collect();
        assert_eq!(
            names,
            [
                "latency-plain.svg",
                "latency-tls.svg",
                "sustainable.svg",
                "memory.svg"
            ]
        );
        for path in &written {
            let svg = std::fs::read_to_string(path).unwrap();
            assert!(svg.starts_with("<svg"), "{}", path.display());
            assert!(svg.contains("run of today"), "{}", path.display());
        }
        let memory = std::fs::read_to_string(dir.join("memory.svg")).unwrap();
        assert!(
            memory.contains("6.5 KiB") && memory.contains("≤ 8 KiB"),
            "{memory}"
        );
        let rates = std::fs::read_to_string(dir.join("sustainable.svg")).unwrap();
        assert!(
            rates.contains("65k") && rates.contains("wss:// (TLS)"),
            "{rates}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
