//! The chart README shows: CPU µs per request of the headline rows, one bar each (median over
//! the rounds) with the rounds' min–max as a whisker, coloured by kind. plotters with its SVG
//! backend only: no font library (the SVG names a font family; the viewer renders the text).

use super::{Context, Kind, RowFigures, Settings};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

const WIDTH: u32 = 900;
const ROW_HEIGHT: u32 = 34;
const LEGEND_HEIGHT: u32 = 30;
const FONT: &str = "sans-serif";
const KINDS: [(Kind, &str); 4] = [
    (Kind::Baseline, "router only"),
    (Kind::Floor, "trivial SDK-only filter (the floor)"),
    (Kind::Wasm, "this collection (wasm)"),
    (Kind::Native, "Envoy's native filters"),
];

fn colour(kind: Kind) -> RGBColor {
    match kind {
        Kind::Baseline => RGBColor(140, 140, 140),
        Kind::Floor => RGBColor(230, 159, 0),
        Kind::Wasm => RGBColor(0, 114, 178),
        Kind::Native => RGBColor(0, 158, 115),
    }
}

/// The SVG document.
pub(crate) fn cpu_per_request(rows: &[&RowFigures], settings: &Settings, ctx: &Context) -> Result<String, String> {
    let mut svg = String::new();
    let height = 120 + LEGEND_HEIGHT + ROW_HEIGHT * rows.len() as u32;
    let x_max = rows.iter().map(|r| r.us.2).fold(0.0, f64::max).max(1.0) * 1.15;
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        let e = |e: &dyn std::fmt::Display| format!("chart: {e}");
        root.fill(&WHITE).map_err(|x| e(&x))?;
        let (plot, legend) = root.split_vertically(height - LEGEND_HEIGHT);
        let n = rows.len() as i32;
        let caption = format!(
            "Envoy CPU µs per request (added over router-only), median of {} rounds, whisker min–max; Envoy {}, {}",
            settings.rounds,
            ctx.envoy_version_short(),
            ctx.date
        );
        let mut chart = ChartBuilder::on(&plot)
            .caption(caption, (FONT, 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(230)
            // A segmented range 0..m has m + 1 slots: one per row.
            .build_cartesian_2d(0f64..x_max, (0..(n - 1).max(0)).into_segmented())
            .map_err(|x| e(&x))?;
        let names: Vec<&str> = rows.iter().map(|r| r.name).collect();
        chart
            .configure_mesh()
            .disable_y_mesh()
            .light_line_style(WHITE)
            .y_labels(rows.len())
            .y_label_style((FONT, 13))
            .x_label_style((FONT, 12))
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => {
                    // Rows run top to bottom: the first row sits at the top.
                    let k = (n - 1 - *i) as usize;
                    names.get(k).map(|s| s.to_string()).unwrap_or_default()
                }
                _ => String::new(),
            })
            .x_desc("CPU µs per request (Envoy utime + stime / requests)")
            .axis_desc_style((FONT, 13))
            .draw()
            .map_err(|x| e(&x))?;
        let slot = |k: usize| n - 1 - k as i32;
        chart
            .draw_series(rows.iter().enumerate().map(|(k, r)| {
                let y = slot(k);
                let mut bar = Rectangle::new(
                    [(0.0, SegmentValue::Exact(y)), (r.us.0, SegmentValue::Exact(y + 1))],
                    colour(r.kind).filled(),
                );
                bar.set_margin(5, 5, 0, 0);
                bar
            }))
            .map_err(|x| e(&x))?;
        chart
            .draw_series(rows.iter().enumerate().map(|(k, r)| {
                let y = SegmentValue::CenterOf(slot(k));
                PathElement::new(vec![(r.us.1, y.clone()), (r.us.2, y)], BLACK.stroke_width(1))
            }))
            .map_err(|x| e(&x))?;
        chart
            .draw_series(rows.iter().enumerate().map(|(k, r)| {
                let label = match r.added {
                    Some((added, _, _)) => format!("{:.1} ({added:+.1})", r.us.0),
                    None => format!("{:.1}", r.us.0),
                };
                let style = TextStyle::from((FONT, 12)).pos(Pos::new(HPos::Left, VPos::Center));
                Text::new(label, (r.us.2 + x_max * 0.01, SegmentValue::CenterOf(slot(k))), style)
            }))
            .map_err(|x| e(&x))?;
        // The legend, in its own strip under the plot (a legend inside it would cover bars).
        let mut x = 40;
        for (kind, label) in KINDS {
            if !rows.iter().any(|r| r.kind == kind) {
                continue;
            }
            legend.draw(&Rectangle::new([(x, 8), (x + 14, 20)], colour(kind).filled())).map_err(|x| e(&x))?;
            let style = TextStyle::from((FONT, 12)).pos(Pos::new(HPos::Left, VPos::Center));
            legend.draw(&Text::new(label, (x + 20, 14), style)).map_err(|x| e(&x))?;
            x += 40 + 6 * label.len() as i32;
        }
        root.present().map_err(|x| e(&x))?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_is_a_labelled_bar() {
        let rows = [
            RowFigures { name: "router-only", kind: Kind::Baseline, us: (50.0, 45.0, 60.0), added: None },
            RowFigures {
                name: "trivial filter",
                kind: Kind::Floor,
                us: (55.0, 50.0, 66.0),
                added: Some((5.0, 4.0, 6.0)),
            },
            RowFigures {
                name: "all five",
                kind: Kind::Wasm,
                us: (120.0, 110.0, 150.0),
                added: Some((70.0, 65.0, 90.0)),
            },
            RowFigures {
                name: "native chain",
                kind: Kind::Native,
                us: (58.0, 52.0, 61.0),
                added: Some((8.0, 7.0, 9.0)),
            },
        ];
        let refs: Vec<&RowFigures> = rows.iter().collect();
        let settings = Settings::for_test();
        let ctx = Context::for_test();
        let svg = cpu_per_request(&refs, &settings, &ctx).unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        for r in &rows {
            assert!(svg.contains(r.name), "{} missing", r.name);
        }
        assert!(svg.contains("120.0 (+70.0)"), "value labels");
        // One filled bar per row, in its kind's colour.
        for kind in [Kind::Baseline, Kind::Floor, Kind::Wasm, Kind::Native] {
            let RGBColor(r, g, b) = colour(kind);
            let fill = format!("fill=\"#{r:02X}{g:02X}{b:02X}\"");
            assert!(svg.matches(&fill).count() >= 2, "bar and legend in {fill}");
        }
        let dir = e2e::repo_root().join("target").join("bench");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("chart-test.svg"), &svg).unwrap();
    }
}
