//! Choosing where tensors live: a GPU through wgpu (Vulkan, Metal, DX12) or Burn's
//! pure-Rust CPU backend (`flex`).

use anyhow::{anyhow, Result};
use burn::tensor::wgpu::{wgpu, WgpuBackend};
use burn::tensor::Device;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceChoice {
    /// A hardware GPU if wgpu finds one, else the CPU backend.
    Auto,
    /// wgpu on whichever graphics API it prefers (software adapters included).
    Wgpu,
    Vulkan,
    Metal,
    Dx12,
    /// Burn's pure-Rust CPU backend.
    Cpu,
}

/// The device, and a human-readable description of it.
pub fn init_device(choice: DeviceChoice) -> Result<(Device, String)> {
    let api = match choice {
        DeviceChoice::Cpu => return Ok((Device::flex(), "CPU (Burn flex)".into())),
        DeviceChoice::Auto | DeviceChoice::Wgpu => WgpuBackend::Auto,
        DeviceChoice::Vulkan => WgpuBackend::Vulkan,
        DeviceChoice::Metal => WgpuBackend::Metal,
        DeviceChoice::Dx12 => WgpuBackend::Dx12,
    };
    let opts = Device::wgpu_options();
    let opts = if api == WgpuBackend::Auto { opts } else { opts.graphics_api(api) };
    match opts.init_with_setup() {
        Ok((device, setup)) => {
            let info = setup.adapter.get_info();
            let what = format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type);
            if choice == DeviceChoice::Auto && info.device_type == wgpu::DeviceType::Cpu {
                log::info!("only a software GPU ({what}) was found; using the CPU backend");
                return Ok((Device::flex(), "CPU (Burn flex)".into()));
            }
            Ok((device, what))
        }
        Err(e) if choice == DeviceChoice::Auto => {
            log::info!("no GPU through wgpu ({e}); using the CPU backend");
            Ok((Device::flex(), "CPU (Burn flex)".into()))
        }
        Err(e) => Err(anyhow!("cannot open a {choice:?} device: {e}")),
    }
}
