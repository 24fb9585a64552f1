//! Shared helpers for the integration tests: fixture paths, reference tensors
//! written by `fixtures/gen/make_fixtures.py`, and the backends every test runs on.

pub mod craft;

use std::path::PathBuf;
use std::sync::OnceLock;

use burn::tensor::Device;
use sphinx_core::model::SphinxModel;
use sphinx_core::weights::{MemoryBytes, SafetensorsFile, WeightDtype, WeightSource};

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

pub fn model_dir(name: &str) -> PathBuf {
    fixtures().join("models").join(name)
}

/// The backends under test: Burn's CPU backend always, and wgpu when an adapter
/// exists (lavapipe in CI). With `SPHINX_REQUIRE_WGPU=1` a missing adapter fails.
pub fn devices() -> Vec<(&'static str, Device)> {
    let mut out = vec![("cpu", Device::flex())];
    if let Some(d) = wgpu_device() {
        out.push(("wgpu", d.clone()));
    }
    out
}

/// The wgpu device under test and whether its adapter runs on the CPU (lavapipe).
fn wgpu() -> Option<&'static (Device, bool)> {
    static WGPU: OnceLock<Option<(Device, bool)>> = OnceLock::new();
    WGPU.get_or_init(|| match Device::wgpu_options().init_with_setup() {
        Ok((d, setup)) => {
            let info = setup.adapter.get_info();
            eprintln!("wgpu adapter: {:?}", info.name);
            Some((d, info.device_type == burn::tensor::wgpu::wgpu::DeviceType::Cpu))
        }
        Err(e) => {
            assert!(std::env::var("SPHINX_REQUIRE_WGPU").is_err(), "SPHINX_REQUIRE_WGPU is set but wgpu failed: {e}");
            eprintln!("wgpu unavailable ({e}); testing the CPU backend only");
            None
        }
    })
    .as_ref()
}

fn wgpu_device() -> Option<&'static Device> {
    wgpu().map(|(d, _)| d)
}

/// Whether the wgpu adapter under test is a CPU driver, as the adapter itself reports
/// (`DeviceType::Cpu`), to check [`sphinx_shaders::is_cpu_driver`] against.
pub fn wgpu_is_cpu_driver() -> bool {
    wgpu().is_some_and(|&(_, cpu)| cpu)
}

/// Reference outputs of one fixture model.
pub struct Reference {
    pub meta: serde_json::Value,
    source: SafetensorsFile<MemoryBytes>,
}

impl Reference {
    pub fn load(name: &str) -> Self {
        let dir = fixtures().join("reference");
        let meta = std::fs::read_to_string(dir.join(format!("{name}.json"))).expect("reference json");
        let bytes = std::fs::read(dir.join(format!("{name}.safetensors"))).expect("reference tensors");
        Self {
            meta: serde_json::from_str(&meta).expect("reference json parses"),
            source: SafetensorsFile::open(MemoryBytes::new(name, bytes)).expect("reference safetensors"),
        }
    }

    pub fn f32(&self, name: &str) -> Vec<f32> {
        pollster::block_on(self.source.read(name)).expect(name).to_f32().expect("float tensor")
    }

    pub fn ids(&self, name: &str) -> Vec<u32> {
        let v = pollster::block_on(self.source.read(name)).expect(name).to_i64().expect("int tensor");
        v.into_iter().map(|x| x as u32).collect()
    }

    pub fn has(&self, name: &str) -> bool {
        self.source.info(name).is_some()
    }
}

pub fn load_model(name: &str, device: &Device) -> SphinxModel {
    load_model_from(&model_dir(name), device)
}

/// A model directory anywhere (e.g. the shipped `models/sphinx-micro`), loaded as the
/// `sphinx` binary loads it.
pub fn load_model_from(dir: &std::path::Path, device: &Device) -> SphinxModel {
    load_model_as(dir, device, WeightDtype::Auto)
}

/// [`load_model_from`] with the LLM's matrices held in `dtype`.
pub fn load_model_as(dir: &std::path::Path, device: &Device, dtype: WeightDtype) -> SphinxModel {
    let mut args = sphinx_native::load::ModelArgs::for_dir(dir);
    args.dtype = dtype;
    sphinx_native::load::load_model_on(&args, device).expect("model loads")
}

/// max |a − b| / max |b|
pub fn rel_max_err(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let max_ref = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let max_diff = got.iter().zip(want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    max_diff / max_ref
}
