//! Native support for the `sphinx` binary and the integration tests: reading a model
//! directory from disk and choosing a compute device. Nothing here decides what the
//! model computes; that is all in `sphinx-core`.

pub mod device;
pub mod files;
pub mod load;
pub mod model_writer;
pub mod quantize;
pub mod shards;
pub mod staging;
pub mod model_dir;
pub mod process;
pub mod views;
