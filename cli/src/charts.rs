//! Self-contained SVG charts (no scripts, no external assets) for the HTML report and dashboard.
//! Every data point is a `<circle class="pt">` with its values in `data-x`/`data-y` and a
//! `<title>`, so a reader can hover it and a test can count and read it.

use std::fmt::Write;

const W: f64 = 520.0;
const H: f64 = 240.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 36.0;

/// Colours that stay apart for common colour blindness (Okabe–Ito).
pub const PALETTE: [&str; 7] = [
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442",
];

pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// Escapes text for HTML and SVG.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A short human number: 1234567 → "1.23M".
pub fn short(v: f64) -> String {
    let a = v.abs();
    let (x, suffix) = if a >= 1e9 {
        (v / 1e9, "G")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let text = if x.fract() == 0.0 || x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    };
    format!("{text}{suffix}")
}

/// A line chart of `series` over a shared x axis, with an optional horizontal reference line
/// (e.g. the rate limit). An empty chart says "no data" instead of drawing axes over nothing.
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    reference: Option<(&str, f64)>,
) -> String {
    let mut svg = open(title);
    let all: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .collect();
    if all.is_empty() {
        let _ = write!(
            svg,
            r#"<text class="nodata" x="{}" y="{}" text-anchor="middle">no data</text></svg>"#,
            W / 2.0,
            H / 2.0
        );
        return svg;
    }
    let (x0, x1) = bounds(all.iter().map(|p| p.0));
    let ymax = all
        .iter()
        .map(|p| p.1)
        .chain(reference.map(|r| r.1))
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.1;
    let sx = |x: f64| LEFT + (x - x0) / (x1 - x0) * (W - LEFT - RIGHT);
    let sy = |y: f64| H - BOTTOM - y / ymax * (H - TOP - BOTTOM);
    axes(&mut svg, x0, x1, ymax, x_label, y_label);
    if let Some((label, y)) = reference {
        let _ = write!(
            svg,
            r##"<line class="ref" x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#444" stroke-dasharray="6 4"/><text x="{}" y="{}" text-anchor="end" font-size="11">{} {}</text>"##,
            W - RIGHT,
            W - RIGHT,
            sy(y) - 4.0,
            esc(label),
            short(y),
            y = sy(y)
        );
    }
    for (i, s) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let path: Vec<String> = s
            .points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline class="series" data-label="{}" fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            esc(&s.label),
            path.join(" ")
        );
        for (x, y) in &s.points {
            let _ = write!(
                svg,
                r#"<circle class="pt" data-series="{}" data-x="{x}" data-y="{y}" cx="{:.1}" cy="{:.1}" r="2.5" fill="{color}"><title>{}: {} at {}</title></circle>"#,
                esc(&s.label),
                sx(*x),
                sy(*y),
                esc(&s.label),
                short(*y),
                short(*x)
            );
        }
        // Legend.
        let ly = TOP + 4.0 + 14.0 * i as f64;
        let _ = write!(
            svg,
            r#"<rect x="{}" y="{}" width="10" height="10" fill="{color}"/><text x="{}" y="{}" font-size="11">{}</text>"#,
            LEFT + 8.0,
            ly,
            LEFT + 22.0,
            ly + 9.0,
            esc(&s.label)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Horizontal bars, one per (label, value).
pub fn bar_chart(title: &str, bars: &[(String, f64)]) -> String {
    let height = TOP + 8.0 + 26.0 * bars.len().max(1) as f64;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart bar" viewBox="0 0 {W} {height}" width="{W}" height="{height}" role="img" aria-label="{t}"><title>{t}</title><text x="8" y="18" font-size="14" font-weight="bold">{t}</text>"#,
        t = esc(title)
    );
    if bars.is_empty() {
        svg.push_str(
            r#"<text class="nodata" x="280" y="50" text-anchor="middle">no data</text></svg>"#,
        );
        return svg;
    }
    let max = bars.iter().map(|b| b.1).fold(0.0f64, f64::max).max(1e-9);
    let label_w = 150.0;
    for (i, (label, v)) in bars.iter().enumerate() {
        let y = TOP + 26.0 * i as f64;
        let w = (v / max * (W - label_w - 80.0)).max(1.0);
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end" font-size="12">{}</text><rect class="pt" data-x="{}" data-y="{v}" x="{label_w}" y="{y}" width="{w:.1}" height="18" fill="{}"><title>{}: {v}</title></rect><text x="{}" y="{}" font-size="12">{}</text>"#,
            label_w - 6.0,
            y + 13.0,
            esc(label),
            esc(label),
            PALETTE[i % PALETTE.len()],
            esc(label),
            label_w + w + 6.0,
            y + 13.0,
            short(*v)
        );
    }
    svg.push_str("</svg>");
    svg
}

fn open(title: &str) -> String {
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart line" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{t}"><title>{t}</title><text x="8" y="18" font-size="14" font-weight="bold">{t}</text>"#,
        t = esc(title)
    )
}

fn bounds(xs: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
        (lo.min(x), hi.max(x))
    });
    if hi > lo {
        (lo, hi)
    } else {
        (lo - 0.5, lo + 0.5)
    }
}

fn axes(svg: &mut String, x0: f64, x1: f64, ymax: f64, x_label: &str, y_label: &str) {
    let (bx, by) = (LEFT, H - BOTTOM);
    let _ = write!(
        svg,
        r##"<line x1="{bx}" y1="{TOP}" x2="{bx}" y2="{by}" stroke="#888"/><line x1="{bx}" y1="{by}" x2="{}" y2="{by}" stroke="#888"/>"##,
        W - RIGHT
    );
    for i in 0..=4 {
        let v = ymax / 1.1 * f64::from(i) / 4.0;
        let y = by - v / ymax * (H - TOP - BOTTOM);
        let _ = write!(
            svg,
            r##"<line x1="{}" x2="{bx}" y1="{y:.1}" y2="{y:.1}" stroke="#888"/><text x="{}" y="{:.1}" text-anchor="end" font-size="10">{}</text>"##,
            bx - 4.0,
            bx - 6.0,
            y + 3.0,
            short(v)
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{bx}" y="{}" font-size="10">{}</text><text x="{}" y="{}" text-anchor="end" font-size="10">{}</text><text x="{}" y="{}" text-anchor="middle" font-size="11">{}</text><text x="12" y="{}" font-size="11" transform="rotate(-90 12 {})" text-anchor="middle">{}</text>"#,
        by + 14.0,
        short(x0),
        W - RIGHT,
        by + 14.0,
        short(x1),
        (LEFT + W - RIGHT) / 2.0,
        H - 6.0,
        esc(x_label),
        (TOP + by) / 2.0,
        (TOP + by) / 2.0,
        esc(y_label)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_chart_has_a_point_per_value_and_the_reference_line() {
        let svg = line_chart(
            "calls/s",
            "s",
            "calls/s",
            &[Series {
                label: "a<b".into(),
                points: vec![(0.0, 1.0), (1.0, 3.0), (2.0, 2.0)],
            }],
            Some(("limit", 5.0)),
        );
        assert_eq!(svg.matches(r#"<circle class="pt""#).count(), 3);
        assert!(svg.contains(r#"data-y="3""#));
        assert!(svg.contains(r#"class="ref""#));
        assert!(svg.contains("a&lt;b") && !svg.contains("a<b"));
        assert!(svg.ends_with("</svg>"));
    }

    #[test]
    fn empty_charts_say_so() {
        assert!(line_chart("t", "x", "y", &[], None).contains("no data"));
        assert!(bar_chart("t", &[]).contains("no data"));
    }

    #[test]
    fn bars_and_numbers() {
        let svg = bar_chart("status", &[("2xx".into(), 90.0), ("5xx".into(), 10.0)]);
        assert_eq!(svg.matches(r#"class="pt""#).count(), 2);
        assert_eq!(short(1_234_567.0), "1.23M");
        assert_eq!(short(950.0), "950");
        assert_eq!(short(12_500.0), "12.5k");
    }
}
