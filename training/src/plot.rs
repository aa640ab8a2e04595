//! A PNG of the loss curves (log scale, smoothed, with a legend): total, distance term,
//! equivariance term and, when used, the axis anchor.

use std::path::Path;

use anyhow::Context;

use ape::evaluation::plots::{Curve, log_curves};

use crate::train::StepLoss;

/// Reads `loss.csv` and writes `loss.png` beside it.
pub fn plot_csv(csv: &Path, png: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(csv)?;
    plot(&read_losses(&text, csv)?, png)
}

/// The rows of a `loss.csv`, columns found by their header names (older runs lack `axis`).
pub fn read_losses(text: &str, csv: &Path) -> anyhow::Result<Vec<StepLoss>> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let column = |name: &str| header.iter().position(|h| h.trim() == name);
    let required =
        |name: &str| column(name).with_context(|| format!("{}: no column {name:?}", csv.display()));
    let (step, total) = (required("step")?, required("loss")?);
    let (distance, equivariance) = (required("distance")?, required("equivariance")?);
    let axis = column("axis");
    Ok(lines
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let number = |i: usize| f.get(i).and_then(|v| v.parse::<f32>().ok());
            Some(StepLoss {
                step: f.get(step)?.parse().ok()?,
                total: number(total)?,
                distance: number(distance)?,
                equivariance: number(equivariance)?,
                axis: axis.and_then(number).unwrap_or(0.0),
            })
        })
        .collect())
}

/// The loss terms against the step, each smoothed over a window of 1/100 of the run.
pub fn plot(losses: &[StepLoss], png: &Path) -> anyhow::Result<()> {
    let window = (losses.len() / 100).max(1);
    let smoothed = |term: fn(&StepLoss) -> f32| -> Vec<(f64, f64)> {
        let mut sum = 0.0f64;
        let mut count = 0usize;
        let mut out = Vec::with_capacity(losses.len());
        for (i, l) in losses.iter().enumerate() {
            let v = f64::from(term(l));
            if v.is_finite() {
                sum += v;
                count += 1;
            }
            if i >= window {
                let old = f64::from(term(&losses[i - window]));
                if old.is_finite() {
                    sum -= old;
                    count -= 1;
                }
            }
            if count > 0 {
                out.push((l.step as f64, sum / count as f64));
            }
        }
        out
    };
    let curve = |label: &str, colour, term| Curve {
        label: label.to_owned(),
        colour,
        points: smoothed(term),
    };
    let mut curves = vec![
        curve("total", (0, 0, 0), |l: &StepLoss| l.total),
        curve("distance", (40, 90, 200), |l: &StepLoss| l.distance),
        curve("equivariance", (230, 120, 20), |l: &StepLoss| {
            l.equivariance
        }),
    ];
    if losses.iter().any(|l| l.axis > 0.0) {
        curves.push(curve("axis anchor", (40, 160, 60), |l: &StepLoss| l.axis));
    }
    let title = format!(
        "Training loss ({} steps; mean over {window} steps)",
        losses.len()
    );
    log_curves(png, &title, ["step", "loss (log scale)"], &curves)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_are_read_by_column_name_whatever_the_order() {
        let csv = Path::new("loss.csv");
        let written = format!(
            "{}\n3,0.5,0.25,0.125,0.001,1,2.00,0.75\n",
            crate::train::LOSS_COLUMNS.join(",")
        );
        let reordered = "axis,seconds,equivariance,step,distance,loss\n0.75,2,0.125,3,0.25,0.5\n";
        // A run from before the axis anchor had no `axis` column.
        let old = "step,loss,distance,equivariance,lr,z_weight,seconds\n3,0.5,0.25,0.125,0,1,2\n";
        let expected = StepLoss {
            step: 3,
            total: 0.5,
            distance: 0.25,
            equivariance: 0.125,
            axis: 0.75,
        };
        assert_eq!(read_losses(&written, csv).unwrap(), [expected]);
        assert_eq!(read_losses(reordered, csv).unwrap(), [expected]);
        let old_rows = read_losses(old, csv).unwrap();
        assert_eq!(old_rows[0].axis, 0.0);
        let err = read_losses("step,total\n1,2\n", csv)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no column \"loss\""), "{err}");
    }
}
