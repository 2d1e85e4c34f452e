//! The charts written next to the JSON: latency against offered rate (F1 and F2) and
//! manager memory against open sockets (F3), as SVG.

use std::path::Path;

use plotters::prelude::*;

use crate::BenchError;

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

fn failed<E: std::fmt::Display>(e: E) -> BenchError {
    BenchError::Chart(e.to_string())
}

fn bounds(series: &[Series]) -> Option<(f64, f64, f64, f64)> {
    let points = series.iter().flat_map(|s| s.points.iter().copied());
    let mut bounds: Option<(f64, f64, f64, f64)> = None;
    for (x, y) in points.filter(|(x, y)| x.is_finite() && y.is_finite()) {
        bounds = Some(match bounds {
            None => (x, x, y, y),
            Some((x0, x1, y0, y1)) => (x0.min(x), x1.max(x), y0.min(y), y1.max(y)),
        });
    }
    bounds
}

/// Latencies (ms, log scale) against a rate (tasks a second).
pub fn latency(path: &Path, title: &str, series: &[Series]) -> Result<(), BenchError> {
    let Some((_, x_max, y_min, y_max)) = bounds(series) else {
        return Ok(());
    };
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(failed)?;
    let y_min = (y_min / 1.5).max(0.01);
    let y_max = (y_max * 1.5).max(y_min * 10.0);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..(x_max * 1.05).max(1.0), (y_min..y_max).log_scale())
        .map_err(failed)?;
    chart
        .configure_mesh()
        .x_desc("offered rate (tasks/s)")
        .y_desc("latency from the intended submit time (ms)")
        .draw()
        .map_err(failed)?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                s.points.iter().map(|&(x, y)| (x, y.max(y_min))),
                color.stroke_width(2),
            ))
            .map_err(failed)?
            .label(s.name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart
            .draw_series(
                s.points
                    .iter()
                    .map(|&(x, y)| Circle::new((x, y.max(y_min)), 3, color.filled())),
            )
            .map_err(failed)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(failed)?;
    root.present().map_err(failed)
}

/// Manager memory (MiB) against open sockets.
pub fn memory(path: &Path, title: &str, series: &[Series]) -> Result<(), BenchError> {
    let Some((_, x_max, _, y_max)) = bounds(series) else {
        return Ok(());
    };
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(failed)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..(x_max * 1.05).max(1.0), 0f64..(y_max * 1.15).max(1.0))
        .map_err(failed)?;
    chart
        .configure_mesh()
        .x_desc("idle delegate sockets")
        .y_desc("manager resident memory (MiB)")
        .draw()
        .map_err(failed)?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(2)))
            .map_err(failed)?
            .label(s.name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart
            .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(failed)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(failed)?;
    root.present().map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_written_as_svg() {
        let dir = tempfile::tempdir().unwrap();
        let series = vec![Series {
            name: "p99 notify".into(),
            points: vec![(10.0, 1.5), (50.0, 2.5), (80.0, 40.0)],
        }];
        let path = dir.path().join("latency.svg");
        latency(&path, "latency", &series).unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().contains("<svg"));
        let path = dir.path().join("memory.svg");
        memory(&path, "memory", &series).unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().contains("p99 notify"));
    }
}
