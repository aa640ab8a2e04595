//! Intensities: Hounsfield units, the window the model sees, and pre-windowed data sets.

use serde::{Deserialize, Serialize};

/// An HU window mapped linearly to [0, 1], values outside clipped.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HuWindow {
    pub lower: f32,
    pub upper: f32,
}

impl HuWindow {
    /// The soft-tissue window the APE model is trained with (method.md): [−125, 275] HU.
    pub const MODEL: HuWindow = HuWindow {
        lower: -125.0,
        upper: 275.0,
    };

    /// `hu` clipped to the window and scaled to [0, 1].
    #[inline]
    pub fn to_unit(&self, hu: f32) -> f32 {
        ((hu - self.lower) / (self.upper - self.lower)).clamp(0.0, 1.0)
    }

    pub fn width(&self) -> f32 {
        self.upper - self.lower
    }
}

/// How stored voxel values become Hounsfield units.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Intensity {
    /// Values are HU already (after the file's own slope and intercept).
    Hounsfield,
    /// Values 0…`max_value` stand for the HU `window` (data that was windowed before it was
    /// stored, as the BTCV scans here): HU = v / max_value × width + lower.
    PreWindowed { window: HuWindow, max_value: f32 },
}

impl Intensity {
    /// The model's window stored as 0…255, as BTCV's uint8 scans.
    pub const PRE_WINDOWED_U8: Intensity = Intensity::PreWindowed {
        window: HuWindow::MODEL,
        max_value: 255.0,
    };

    #[inline]
    pub fn to_hu(&self, value: f32) -> f32 {
        match *self {
            Intensity::Hounsfield => value,
            Intensity::PreWindowed { window, max_value } => {
                value / max_value * window.width() + window.lower
            }
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Intensity::Hounsfield => "Hounsfield units".to_owned(),
            Intensity::PreWindowed { window, max_value } => format!(
                "pre-windowed: 0…{max_value} stands for {}…{} HU",
                window.lower, window.upper
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_clips_and_scales() {
        let w = HuWindow::MODEL;
        assert_eq!(w.to_unit(-1000.0), 0.0);
        assert_eq!(w.to_unit(75.0), 0.5);
        assert_eq!(w.to_unit(3000.0), 1.0);
    }

    #[test]
    fn pre_windowed_values_map_back_to_hu() {
        let i = Intensity::PRE_WINDOWED_U8;
        assert_eq!(i.to_hu(0.0), -125.0);
        assert_eq!(i.to_hu(255.0), 275.0);
        // And through the model window this is the identity up to scale.
        assert!((HuWindow::MODEL.to_unit(i.to_hu(51.0)) - 0.2).abs() < 1e-6);
    }
}
