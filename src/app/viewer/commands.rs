//! Every viewer command in one table, as rerun's `re_ui::UICommand`: [`ViewerCommand`]'s methods
//! give each one's label, keyboard shortcuts and help text, and the keyboard handler, the help
//! window and the buttons all read them there, so they cannot drift apart. Mouse controls, which
//! are no commands, are the second table, [`MOUSE_CONTROLS`].

use egui::{Key, KeyboardShortcut, ModifierNames, Modifiers};

use ape::slicing::WindowLevel;

use super::state::{OverlayMode, ViewerState};

/// What a key or a button asks the viewer to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewerCommand {
    OpenScans,
    OpenFolder,
    OpenPacs,
    Screenshot,
    /// Preset `n` of [`WindowLevel::PRESETS`] (key `n + 1`).
    Preset(usize),
    ToggleOverlay,
    ToggleIsolines,
    NextScan,
    ToggleApeSpace,
    Undo,
    Redo,
    SaveBoxes,
    LoadBoxes,
    ResetViews,
    ToggleHelp,
}

const fn key(key: Key) -> KeyboardShortcut {
    KeyboardShortcut::new(Modifiers::NONE, key)
}

/// Ctrl on Linux and Windows, Cmd on macOS.
const fn command(key: Key) -> KeyboardShortcut {
    KeyboardShortcut::new(Modifiers::COMMAND, key)
}

/// Keys 1… of the presets; the array's length ties them to [`WindowLevel::PRESETS`].
const PRESET_KEYS: [KeyboardShortcut; WindowLevel::PRESETS.len()] = [
    key(Key::Num1),
    key(Key::Num2),
    key(Key::Num3),
    key(Key::Num4),
    key(Key::Num5),
];

/// What the mouse does in the views, for the help window: (what, how).
pub const MOUSE_CONTROLS: [(&str, &str); 8] = [
    (
        "set the crosshair, find the point on every scan",
        "left click",
    ),
    ("scroll slices", "mouse wheel"),
    ("zoom", "Ctrl + wheel (or pinch)"),
    ("pan", "left drag"),
    (
        "window / level",
        "right drag (horizontal: width, vertical: level)",
    ),
    (
        "draw an organ box (with the box option on)",
        "left drag, in two views",
    ),
    (
        "adjust a box (box option on)",
        "drag an edge or corner handle; drag inside to move it",
    ),
    ("open scans", "drag files or folders onto the window"),
];

impl ViewerCommand {
    /// Every command, in the order the help window lists them.
    pub fn all() -> impl Iterator<Item = Self> {
        use ViewerCommand::*;
        [OpenScans, OpenFolder, OpenPacs, Screenshot]
            .into_iter()
            .chain((0..WindowLevel::PRESETS.len()).map(Preset))
            .chain([
                ToggleOverlay,
                ToggleIsolines,
                NextScan,
                ToggleApeSpace,
                Undo,
                Redo,
                SaveBoxes,
                LoadBoxes,
                ResetViews,
                ToggleHelp,
            ])
    }

    /// The text of its button.
    pub fn label(self) -> &'static str {
        match self {
            Self::OpenScans => "Open…",
            Self::OpenFolder => "Open folder…",
            Self::OpenPacs => "Open from PACS…",
            Self::Screenshot => "Screenshot",
            Self::Preset(n) => WindowLevel::PRESETS.get(n).map_or("preset", |p| p.0),
            Self::ToggleOverlay => "APE overlay",
            Self::ToggleIsolines => "iso-lines",
            Self::NextScan => "next scan",
            Self::ToggleApeSpace => "APE space",
            Self::Undo => "Undo",
            Self::Redo => "Redo",
            Self::SaveBoxes => "Save…",
            Self::LoadBoxes => "Load…",
            Self::ResetViews => "Reset views",
            Self::ToggleHelp => "?",
        }
    }

    /// What it does, for the help window and tooltips.
    pub fn help(self) -> String {
        match self {
            Self::OpenScans => "open NIfTI scans".into(),
            Self::OpenFolder => "open every scan of a folder".into(),
            Self::OpenPacs => "search a PACS (DIMSE or DICOMweb) and open a series from it".into(),
            Self::Screenshot => "save the window as PNG".into(),
            Self::Preset(n) => WindowLevel::PRESETS
                .get(n)
                .map_or_else(String::new, |(name, w)| {
                    format!("window / level {name}: {} / {}", w.width, w.level)
                }),
            Self::ToggleOverlay => "APE overlay on / off".into(),
            Self::ToggleIsolines => "iso-lines of the APE overlay on / off".into(),
            Self::NextScan => "next scan of the cohort".into(),
            Self::ToggleApeSpace => {
                "the cohort in APE space (organ centres, boxes, landmark)".into()
            }
            Self::Undo => "undo the last box edit".into(),
            Self::Redo => "redo the box edit undone last".into(),
            Self::SaveBoxes => "save the organ boxes to a file".into(),
            Self::LoadBoxes => "replace the organ boxes with those of a file".into(),
            Self::ResetViews => "reset zoom and pan".into(),
            Self::ToggleHelp => "mouse and keyboard controls".into(),
        }
    }

    /// Its keyboard shortcuts, the first one the main one; none for most buttons.
    pub fn shortcuts(self) -> &'static [KeyboardShortcut] {
        const OPEN: [KeyboardShortcut; 1] = [command(Key::O)];
        const OVERLAY: [KeyboardShortcut; 1] = [key(Key::O)];
        const ISOLINES: [KeyboardShortcut; 1] = [key(Key::I)];
        const NEXT: [KeyboardShortcut; 1] = [key(Key::Tab)];
        const APE_SPACE: [KeyboardShortcut; 1] = [key(Key::E)];
        const UNDO: [KeyboardShortcut; 1] = [command(Key::Z)];
        const REDO: [KeyboardShortcut; 1] = [command(Key::Y)];
        const RESET: [KeyboardShortcut; 1] = [key(Key::R)];
        const HELP: [KeyboardShortcut; 2] = [key(Key::F1), key(Key::H)];
        match self {
            Self::OpenScans => &OPEN,
            Self::Preset(n) => PRESET_KEYS.get(n).map_or(&[], std::slice::from_ref),
            Self::ToggleOverlay => &OVERLAY,
            Self::ToggleIsolines => &ISOLINES,
            Self::NextScan => &NEXT,
            Self::ToggleApeSpace => &APE_SPACE,
            Self::Undo => &UNDO,
            Self::Redo => &REDO,
            Self::ResetViews => &RESET,
            Self::ToggleHelp => &HELP,
            Self::OpenFolder
            | Self::OpenPacs
            | Self::Screenshot
            | Self::SaveBoxes
            | Self::LoadBoxes => &[],
        }
    }

    /// The shortcuts as the help window writes them ("F1 or H"); `None` without any.
    pub fn shortcut_text(self) -> Option<String> {
        let names: Vec<String> = self.shortcuts().iter().map(shortcut_name).collect();
        (!names.is_empty()).then(|| names.join(" or "))
    }

    /// Its tooltip: what it does, and its keys.
    pub fn tooltip(self) -> String {
        let help = self.help();
        let mut chars = help.chars();
        let help = chars.next().map_or_else(String::new, |first| {
            first.to_uppercase().chain(chars).collect()
        });
        match self.shortcut_text() {
            Some(keys) => format!("{help} ({keys})"),
            None => help,
        }
    }

    /// The label with the main shortcut, for buttons that show it: "Reset views (R)".
    pub fn label_with_shortcut(self) -> String {
        match self.shortcuts().first() {
            Some(s) => format!("{} ({})", self.label(), shortcut_name(s)),
            None => self.label().to_owned(),
        }
    }

    /// Whether one of its shortcuts was pressed this frame. Ctrl must match exactly (Ctrl+O
    /// is not O); Shift and Alt, which some layouts need to type a key, are ignored.
    pub fn pressed(self, input: &egui::InputState) -> bool {
        self.shortcuts().iter().any(|s| {
            input.events.iter().any(|e| {
                matches!(e, egui::Event::Key { key, pressed: true, modifiers, .. }
                    if *key == s.logical_key && modifiers.matches_logically(s.modifiers))
            })
        })
    }

    /// Carries out a command that concerns only the state; `false` for those the app must
    /// carry out (dialogs, windows, its views' zoom and pan).
    pub fn apply(self, state: &mut ViewerState) -> bool {
        match self {
            Self::Preset(n) => {
                if let Some((_, preset)) = WindowLevel::PRESETS.get(n) {
                    state.window = *preset;
                }
            }
            Self::ToggleOverlay => {
                state.overlay.mode = match state.overlay.mode {
                    OverlayMode::Off => OverlayMode::Rgb,
                    _ => OverlayMode::Off,
                };
            }
            Self::ToggleIsolines => state.overlay.isolines ^= true,
            Self::NextScan => {
                if !state.cohort.is_empty() {
                    state.activate((state.active + 1) % state.cohort.len());
                }
            }
            Self::Undo => {
                state.undo();
            }
            Self::Redo => {
                state.redo();
            }
            Self::OpenScans
            | Self::OpenFolder
            | Self::OpenPacs
            | Self::Screenshot
            | Self::ToggleApeSpace
            | Self::SaveBoxes
            | Self::LoadBoxes
            | Self::ResetViews
            | Self::ToggleHelp => return false,
        }
        true
    }
}

/// "Ctrl+Z", "F1", "1": the same names on every system, as the README writes them.
fn shortcut_name(shortcut: &KeyboardShortcut) -> String {
    shortcut.format(&ModifierNames::NAMES, false)
}

/// The help window's rows, (what, how): the mouse, then every command with a shortcut, the
/// presets in one row.
pub fn help_rows() -> Vec<(String, String)> {
    let mut rows: Vec<(String, String)> = MOUSE_CONTROLS
        .iter()
        .map(|(what, how)| ((*what).to_owned(), (*how).to_owned()))
        .collect();
    let presets: Vec<ViewerCommand> = ViewerCommand::all()
        .filter(|c| matches!(c, ViewerCommand::Preset(_)))
        .collect();
    for command in ViewerCommand::all() {
        let Some(keys) = command.shortcut_text() else {
            continue;
        };
        match command {
            ViewerCommand::Preset(0) => {
                let names: Vec<String> = presets.iter().map(|c| c.label().to_lowercase()).collect();
                let first_last = (presets.first(), presets.last());
                let keys = match first_last.0.zip(first_last.1) {
                    Some((a, b)) if a != b => format!(
                        "{} … {}",
                        a.shortcut_text().unwrap_or_default(),
                        b.shortcut_text().unwrap_or_default()
                    ),
                    _ => keys,
                };
                rows.push((format!("presets {}", names.join(", ")), keys));
            }
            ViewerCommand::Preset(_) => {}
            _ => rows.push((command.help(), keys)),
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_two_commands_share_a_shortcut() {
        let shortcuts: Vec<KeyboardShortcut> = ViewerCommand::all()
            .flat_map(|c| c.shortcuts().iter().copied())
            .collect();
        for (i, a) in shortcuts.iter().enumerate() {
            assert!(!shortcuts[i + 1..].contains(a), "{}", shortcut_name(a));
        }
    }

    #[test]
    fn every_preset_has_a_key_and_its_name() {
        for (n, (name, _)) in WindowLevel::PRESETS.iter().enumerate() {
            let c = ViewerCommand::Preset(n);
            assert_eq!(c.label(), *name);
            assert_eq!(c.shortcut_text(), Some((n + 1).to_string()));
        }
        assert!(
            ViewerCommand::Preset(WindowLevel::PRESETS.len())
                .shortcuts()
                .is_empty()
        );
    }

    #[test]
    fn labels_and_help_rows_are_built_from_the_table() {
        assert_eq!(
            ViewerCommand::ResetViews.label_with_shortcut(),
            "Reset views (R)"
        );
        assert_eq!(
            ViewerCommand::Undo.tooltip(),
            "Undo the last box edit (Ctrl+Z)"
        );
        assert_eq!(
            ViewerCommand::ToggleHelp.shortcut_text().as_deref(),
            Some("F1 or H")
        );
        let rows = help_rows();
        assert!(rows.contains(&(
            "presets abdomen, liver, lung, bone, soft tissue".into(),
            "1 … 5".into()
        )));
        for c in ViewerCommand::all().filter(|c| !matches!(c, ViewerCommand::Preset(_))) {
            if let Some(keys) = c.shortcut_text() {
                assert!(rows.contains(&(c.help(), keys)), "{c:?}");
            }
        }
    }

    #[test]
    fn ctrl_must_match_but_shift_is_ignored() {
        let press = |key, modifiers| {
            let mut input = egui::InputState::default();
            input.events.push(egui::Event::Key {
                key,
                physical_key: None,
                pressed: true,
                repeat: false,
                modifiers,
            });
            input
        };
        let ctrl_o = press(Key::O, Modifiers::CTRL | Modifiers::COMMAND);
        assert!(ViewerCommand::OpenScans.pressed(&ctrl_o));
        assert!(!ViewerCommand::ToggleOverlay.pressed(&ctrl_o));
        let shift_1 = press(Key::Num1, Modifiers::SHIFT);
        assert!(ViewerCommand::Preset(0).pressed(&shift_1));
        assert!(!ViewerCommand::Undo.pressed(&press(Key::Z, Modifiers::NONE)));
    }
}
