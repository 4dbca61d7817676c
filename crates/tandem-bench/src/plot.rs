//! Plots of a results file as standalone SVG (no plotting dependency):
//! latency CDFs, and bar charts of latency and throughput by system.

use std::fmt::Write;

use serde_json::Value;

const W: f64 = 760.0;
const H: f64 = 420.0;
const L: f64 = 70.0; // left margin
const R: f64 = 190.0; // right margin (legend)
const T: f64 = 40.0;
const B: f64 = 50.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#7f7f7f",
];

fn header(title: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
        (W - R + L) / 2.0,
        esc(title)
    );
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn axes(s: &mut String, xlabel: &str, ylabel: &str) {
    let _ = writeln!(
        s,
        r#"<line x1="{L}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="black"/>
<line x1="{L}" y1="{T}" x2="{L}" y2="{y0}" stroke="black"/>
<text x="{}" y="{}" text-anchor="middle">{}</text>
<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">{}</text>"#,
        (L + W - R) / 2.0,
        H - 12.0,
        esc(xlabel),
        (T + H - B) / 2.0,
        (T + H - B) / 2.0,
        esc(ylabel),
        y0 = H - B,
        x1 = W - R,
    );
}

fn legend(s: &mut String, names: &[String]) {
    for (i, n) in names.iter().enumerate() {
        let y = T + 10.0 + 18.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<rect x="{}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            W - R + 12.0,
            y - 10.0,
            COLORS[i % COLORS.len()],
            W - R + 30.0,
            y,
            esc(n)
        );
    }
}

/// Latency CDFs: each series is (name, [(latency µs, fraction)]); x is
/// logarithmic, in milliseconds.
pub fn cdf_chart(title: &str, series: &[(String, Vec<(f64, f64)>)]) -> String {
    let mut s = header(title);
    axes(&mut s, "latency, ms (log scale)", "fraction of deliveries");
    let all = series.iter().flat_map(|(_, p)| p.iter().map(|p| p.0));
    let (mut lo, mut hi) = (f64::MAX, 0f64);
    for x in all.filter(|x| *x > 0.0) {
        lo = lo.min(x);
        hi = hi.max(x);
    }
    if hi <= 0.0 {
        return s + "</svg>\n";
    }
    let (lo, hi) = (
        10f64.powf(lo.log10().floor()),
        10f64.powf(hi.log10().ceil()),
    );
    let px =
        |x: f64| L + (x.max(lo).log10() - lo.log10()) / (hi.log10() - lo.log10()) * (W - R - L);
    let py = |y: f64| H - B - y * (H - B - T);
    let mut d = lo;
    while d <= hi * 1.001 {
        let _ = writeln!(
            s,
            r##"<line x1="{x}" y1="{T}" x2="{x}" y2="{}" stroke="#ddd"/><text x="{x}" y="{}" text-anchor="middle">{}</text>"##,
            H - B,
            H - B + 16.0,
            fmt_ms(d / 1e3),
            x = px(d)
        );
        d *= 10.0;
    }
    for f in [0.0, 0.5, 0.9, 0.99] {
        let _ = writeln!(
            s,
            r##"<line x1="{L}" y1="{y}" x2="{}" y2="{y}" stroke="#eee"/><text x="{}" y="{}" text-anchor="end">{f}</text>"##,
            W - R,
            L - 6.0,
            py(f) + 4.0,
            y = py(f)
        );
    }
    for (i, (_, pts)) in series.iter().enumerate() {
        let path: Vec<String> = pts
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
            COLORS[i % COLORS.len()],
            path.join(" ")
        );
    }
    legend(
        &mut s,
        &series.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
    );
    s + "</svg>\n"
}

fn fmt_ms(ms: f64) -> String {
    if ms >= 1.0 {
        format!("{ms:.0}")
    } else {
        format!("{ms}")
    }
}

/// Grouped bars: groups of (label, [value per series]); `names` the series.
/// With `log`, the y axis is logarithmic (for values spanning decades).
pub fn bar_chart(
    title: &str,
    ylabel: &str,
    names: &[String],
    groups: &[(String, Vec<f64>)],
    log: bool,
) -> String {
    let mut s = header(title);
    axes(&mut s, "", ylabel);
    let vals = || {
        groups
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .filter(|v| v.is_finite() && *v > 0.0)
    };
    let max = vals().fold(0f64, f64::max);
    if max <= 0.0 {
        return s + "</svg>\n";
    }
    let (ticks, py): (Vec<f64>, Box<dyn Fn(f64) -> f64>) = if log {
        let lo = 10f64.powf(vals().fold(f64::MAX, f64::min).log10().floor());
        let hi = 10f64.powf(max.log10().ceil());
        let mut t = vec![lo];
        while *t.last().unwrap() < hi * 0.999 {
            let next = t.last().unwrap() * 10.0;
            t.push(next);
        }
        let span = (hi.log10() - lo.log10()).max(1.0);
        (
            t,
            Box::new(move |y: f64| H - B - (y.max(lo).log10() - lo.log10()) / span * (H - B - T)),
        )
    } else {
        let step = nice_step(max / 5.0);
        let top = (max / step).ceil() * step;
        let n = (top / step).round() as usize;
        (
            (0..=n).map(|i| i as f64 * step).collect(),
            Box::new(move |y: f64| H - B - y / top * (H - B - T)),
        )
    };
    for y in ticks {
        let _ = writeln!(
            s,
            r##"<line x1="{L}" y1="{p}" x2="{}" y2="{p}" stroke="#eee"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
            W - R,
            L - 6.0,
            py(y) + 4.0,
            trim(y),
            p = py(y)
        );
    }
    let gw = (W - R - L) / groups.len() as f64;
    let bw = (gw * 0.8) / names.len().max(1) as f64;
    for (g, (label, vals)) in groups.iter().enumerate() {
        let x0 = L + gw * g as f64 + gw * 0.1;
        for (i, v) in vals.iter().enumerate() {
            if !v.is_finite() {
                continue;
            }
            let _ = writeln!(
                s,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}</title></rect>"#,
                x0 + bw * i as f64,
                py(*v),
                bw - 2.0,
                H - B - py(*v),
                COLORS[i % COLORS.len()],
                trim(*v)
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            x0 + gw * 0.4,
            H - B + 16.0,
            esc(label)
        );
    }
    legend(&mut s, names);
    s + "</svg>\n"
}

fn nice_step(raw: f64) -> f64 {
    let mag = 10f64.powf(raw.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if raw <= m * mag {
            return m * mag;
        }
    }
    10.0 * mag
}

fn trim(v: f64) -> String {
    if v >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v >= 0.1 {
        format!("{v:.2}")
    } else {
        format!("{v}")
    }
}

fn find<'a>(results: &'a [Value], name: &str, system: &str) -> Option<&'a Value> {
    results
        .iter()
        .find(|r| r["name"] == name && r["system"] == system)
}

/// Write the standard plots of a suite's results into `dir`; returns the
/// files written.
pub fn write_all(results: &[Value], dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    let mut written = Vec::new();
    let mut put = |name: &str, svg: String| {
        let p = dir.join(name);
        std::fs::write(&p, svg).unwrap();
        written.push(p);
    };
    let loads: Vec<&Value> = results.iter().filter(|r| r.get("cdf").is_some()).collect();
    // Latency CDFs of the hot-room runs (W3), every system.
    let w3: Vec<(String, Vec<(f64, f64)>)> = loads
        .iter()
        .filter(|r| r["name"].as_str().is_some_and(|n| n.starts_with("W3")))
        .map(|r| {
            let pts = r["cdf"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p[0].as_f64().unwrap_or(0.0), p[1].as_f64().unwrap_or(0.0)))
                .collect();
            (
                format!("{} {}", r["system"].as_str().unwrap(), short(&r["name"])),
                pts,
            )
        })
        .collect();
    put(
        "w3-latency-cdf.svg",
        cdf_chart(
            "W3 hot room: delivery latency (sender → each receiver)",
            &w3,
        ),
    );

    // W3: p50 and p99 by room size, one bar per system.
    let systems = ["tandem", "echo", "sharedb"];
    let names: Vec<String> = systems.iter().map(|s| s.to_string()).collect();
    let mut sizes: Vec<&str> = loads
        .iter()
        .filter_map(|r| r["name"].as_str())
        .filter_map(|n| n.strip_prefix("W3 hot room "))
        .collect();
    sizes.dedup();
    let mut w3_groups = Vec::new();
    for n in &sizes {
        for q in ["p50", "p99"] {
            let vals = systems
                .iter()
                .map(|sys| {
                    find(results, &format!("W3 hot room {n}"), sys)
                        .and_then(|r| r["latency_us"][q].as_f64())
                        .map_or(f64::NAN, |v| v / 1e3)
                })
                .collect();
            w3_groups.push((format!("{n} {q}"), vals));
        }
    }
    if !w3_groups.is_empty() {
        put(
            "w3-latency-by-n.svg",
            bar_chart(
                "W3 hot room, 5 edits/s per client: delivery latency",
                "ms (log scale)",
                &names,
                &w3_groups,
                true,
            ),
        );
    }
    // W5: the same room on one and on two instances (Redis; ShareDB with
    // PostgreSQL as its shared database).
    let mut w5_groups = Vec::new();
    for r in &loads {
        let Some(name) = r["name"].as_str().filter(|n| n.starts_with("W5")) else {
            continue;
        };
        if r["system"] != "tandem" {
            continue;
        }
        let vals = ["tandem", "sharedb"]
            .iter()
            .map(|sys| {
                find(results, name, sys)
                    .and_then(|r| r["latency_us"]["p50"].as_f64())
                    .map_or(f64::NAN, |v| v / 1e3)
            })
            .collect();
        w5_groups.push((name.trim_start_matches("W5 ").to_string(), vals));
    }
    if !w5_groups.is_empty() {
        put(
            "w5-cross-instance.svg",
            bar_chart(
                "W5 cross-instance: delivery latency p50",
                "ms (log scale)",
                &["tandem".to_string(), "sharedb".to_string()],
                &w5_groups,
                true,
            ),
        );
    }
    // W9: edits per second through the server.
    let w9: Vec<(String, Vec<f64>)> = results
        .iter()
        .filter(|r| r["name"].as_str().is_some_and(|n| n.starts_with("W9")))
        .map(|r| {
            let label = r["name"]
                .as_str()
                .unwrap()
                .rsplit('(')
                .next()
                .unwrap_or("")
                .trim_end_matches(')');
            (
                format!("{} {label}", r["system"].as_str().unwrap()),
                vec![r["ops_per_second"].as_f64().unwrap_or(f64::NAN)],
            )
        })
        .collect();
    if !w9.is_empty() {
        put(
            "w9-replay.svg",
            bar_chart(
                "W9 trace replay, one op in flight: edits/s",
                "edits/s",
                &["edits/s".to_string()],
                &w9,
                false,
            ),
        );
    }
    written
}

fn short(name: &Value) -> String {
    let n = name.as_str().unwrap_or("");
    n.split_once(' ').map_or(n, |(_, rest)| rest).to_string()
}
