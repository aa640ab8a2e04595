//! The front ends of ape over the library: the eframe/egui viewer. The `ape` command line
//! (`main.rs`, `cli/`) parses arguments, makes one library call per command and prints.

pub mod viewer;
