//! `sphinx-core`: everything that decides what SPHINX computes, shared unchanged by
//! the native binary and the browser build. No file system, no network: bytes come
//! in through [`weights::ByteSource`] / [`weights::WeightSource`].

pub mod api;
pub mod bench;
pub mod config;
pub mod error;
pub mod generate;
pub mod llm;
pub mod mixing;
pub mod model;
pub mod preprocess;
pub mod tasks;
pub mod tokenizer;
pub mod vision;
pub mod weights;

pub use burn::tensor::Device;
pub use error::{Result, SphinxError};
