//! Native support for the `sphinx` binary and the integration tests: reading a model
//! directory from disk and choosing a compute device. Nothing here decides what the
//! model computes; that is all in `sphinx-core`.

pub mod device;
pub mod model_dir;
pub mod views;
