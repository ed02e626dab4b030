//! The `--plot` chart: quality against the share of strong calls (two models) or against cost
//! (many), routers as lines and the oracle dashed, as SVG or PNG by the file's extension.
//!
//! Text is laid out with a TrueType font found at run time: `TRIAGE_PLOT_FONT` if set, else a
//! common system font (DejaVu, Liberation, Arial…). Without one no chart can be drawn, SVG
//! included, and the error says so.
//!
//! Not for: computing anything; it draws what [`super::Results`] holds.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::metrics::CostPoint;
use super::{EvalError, MultiResults, PairResults, Results};

const SIZE: (u32, u32) = (1000, 680);
const FONT: &str = "sans-serif";

/// Draws `results` into `path` (`.svg` or `.png`).
pub fn write(path: &Path, results: &Results, scorer: &str) -> Result<(), EvalError> {
    let fail = |message: String| EvalError::Plot {
        path: path.display().to_string(),
        message,
    };
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    ensure_font().map_err(|e| fail(e.clone()))?;
    let drawn = match extension.as_deref() {
        Some("svg") => draw(
            SVGBackend::new(path, SIZE).into_drawing_area(),
            results,
            scorer,
        ),
        Some("png") => draw(
            BitMapBackend::new(path, SIZE).into_drawing_area(),
            results,
            scorer,
        ),
        _ => return Err(fail("the file name must end in .svg or .png".into())),
    };
    drawn.map_err(|e| fail(e.to_string()))
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    results: &Results,
    scorer: &str,
) -> Result<(), Box<dyn Error>>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    match results {
        Results::TwoModel(pair) => draw_pair(&root, pair, scorer)?,
        Results::MultiModel(multi) => draw_multi(&root, multi, scorer)?,
        Results::Battles(_) => return Err("battles have no cost-quality curve to draw".into()),
    }
    root.present()?;
    Ok(())
}

fn color(index: usize) -> RGBColor {
    const COLORS: [RGBColor; 6] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
    ];
    COLORS[index % COLORS.len()]
}

/// Quality bounds with a margin, never narrower than 0.05.
fn quality_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let pad = ((hi - lo) * 0.08).max(0.025);
    (lo - pad).max(0.0)..(hi + pad).min(1.0)
}

fn draw_pair<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    results: &PairResults,
    scorer: &str,
) -> Result<(), Box<dyn Error>>
where
    DB::ErrorType: 'static,
{
    let qualities = results
        .routers
        .values()
        .flat_map(|r| r.curve.iter().map(|p| p.quality))
        .chain([results.strong.quality, results.weak.quality]);
    let mut chart = ChartBuilder::on(root)
        .caption(
            format!(
                "{} vs {} (scorer {scorer})",
                results.strong.model, results.weak.model
            ),
            (FONT, 22),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..100.0, quality_range(qualities))?;
    chart
        .configure_mesh()
        .x_desc("calls to the strong model (%)")
        .y_desc("quality")
        .draw()?;
    for (i, (name, router)) in results.routers.iter().enumerate() {
        let points: Vec<(f64, f64)> = router
            .curve
            .iter()
            .map(|p| (p.strong_pct, p.quality))
            .collect();
        let label = format!(
            "{name} (APGR {})",
            router.apgr.map_or("–".into(), |a| format!("{a:.3}"))
        );
        let style = color(i).stroke_width(2);
        if name == "oracle" {
            chart
                .draw_series(DashedLineSeries::new(points, 8, 5, style))?
                .label(label)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
        } else {
            chart
                .draw_series(LineSeries::new(points, style).point_size(3))?
                .label(label)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
        }
    }
    for (model, quality, shade) in [
        (
            &results.strong.model,
            results.strong.quality,
            RGBColor(120, 120, 120),
        ),
        (
            &results.weak.model,
            results.weak.quality,
            RGBColor(180, 180, 180),
        ),
    ] {
        let style = shade.stroke_width(1);
        chart
            .draw_series(DashedLineSeries::new(
                [(0.0, quality), (100.0, quality)],
                4,
                4,
                style,
            ))?
            .label(format!("{model} alone"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 14))
        .draw()?;
    Ok(())
}

fn draw_multi<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    results: &MultiResults,
    scorer: &str,
) -> Result<(), Box<dyn Error>>
where
    DB::ErrorType: 'static,
{
    let per_1k = |p: &CostPoint| (p.cost * 1000.0, p.quality);
    let all_points: Vec<(f64, f64)> = results
        .routers
        .values()
        .flat_map(|r| r.curve.iter().map(per_1k))
        .chain(
            results
                .models
                .values()
                .map(|m| (m.cost * 1000.0, m.quality)),
        )
        .collect();
    let max_cost = all_points.iter().map(|p| p.0).fold(0.0, f64::max).max(1e-9);
    let mut chart = ChartBuilder::on(root)
        .caption(format!("cost and quality (scorer {scorer})"), (FONT, 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(
            0.0..max_cost * 1.15,
            quality_range(all_points.iter().map(|p| p.1)),
        )?;
    chart
        .configure_mesh()
        .x_desc("US$ per 1,000 prompts")
        .y_desc("quality")
        .draw()?;
    for (i, (name, router)) in results.routers.iter().enumerate() {
        let hull: Vec<(f64, f64)> = router.hull.iter().map(per_1k).collect();
        let label = format!(
            "{name} (AIQ {})",
            router.aiq.map_or("–".into(), |a| format!("{a:.3}"))
        );
        let style = color(i).stroke_width(2);
        if name == "oracle" {
            chart
                .draw_series(DashedLineSeries::new(hull, 8, 5, style))?
                .label(label)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
        } else {
            chart
                .draw_series(LineSeries::new(hull, style))?
                .label(label)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
            let dots = color(i).mix(0.5).filled();
            chart.draw_series(router.curve.iter().map(|p| Circle::new(per_1k(p), 2, dots)))?;
        }
    }
    chart.draw_series(results.models.iter().map(|(name, m)| {
        EmptyElement::at((m.cost * 1000.0, m.quality))
            + Circle::new((0, 0), 4, BLACK.filled())
            + Text::new(name.clone(), (6, -14), (FONT, 12))
    }))?;
    let triage = color(0).stroke_width(2);
    chart.draw_series(results.profiles.iter().map(|(name, p)| {
        EmptyElement::at((p.cost * 1000.0, p.quality))
            + Cross::new((0, 0), 6, triage)
            + Text::new(name.clone(), (6, 4), (FONT, 12))
    }))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 14))
        .draw()?;
    Ok(())
}

/// Registers a TrueType font as "sans-serif" once per process.
fn ensure_font() -> Result<(), &'static String> {
    static FONT_STATE: OnceLock<Result<(), String>> = OnceLock::new();
    FONT_STATE
        .get_or_init(|| {
            let path = font_path().ok_or_else(|| {
                "no TrueType font found for the chart's text: set TRIAGE_PLOT_FONT to a .ttf file".to_owned()
            })?;
            let bytes = std::fs::read(&path).map_err(|e| format!("font {}: {e}", path.display()))?;
            // plotters keeps fonts for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font(FONT, FontStyle::Normal, bytes)
                .map_err(|_| format!("font {} is not a TrueType/OpenType font", path.display()))
        })
        .as_ref()
        .map(|_| ())
}

fn font_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("TRIAGE_PLOT_FONT") {
        return Some(PathBuf::from(path));
    }
    const KNOWN: [&str; 9] = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
        "/System/Library/Fonts/Supplemental/Arial.ttf",
        "/Library/Fonts/Arial.ttf",
        "C:\\Windows\\Fonts\\arial.ttf",
    ];
    KNOWN
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .or_else(|| {
            ["/usr/share/fonts", "/usr/local/share/fonts"]
                .iter()
                .find_map(|d| any_ttf(Path::new(d), 4))
        })
}

/// Some .ttf file under `dir`, looking `depth` levels down.
fn any_ttf(dir: &Path, depth: u32) -> Option<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    let is_ttf = |p: &PathBuf| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("ttf"));
    entries.iter().find(|p| is_ttf(p)).cloned().or_else(|| {
        (depth > 0)
            .then(|| {
                entries
                    .iter()
                    .filter(|p| p.is_dir())
                    .find_map(|d| any_ttf(d, depth - 1))
            })
            .flatten()
    })
}
