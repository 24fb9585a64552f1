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

/// An open device.
pub struct OpenDevice {
    pub device: Device,
    /// Human-readable: adapter name, API and type.
    pub description: String,
    /// Whether its memory is the host's (the CPU backend, software adapters such as
    /// lavapipe), so the host's available memory bounds what it can hold.
    pub host_memory: bool,
    /// The largest buffer the device allocates and binds (wgpu's `max_buffer_size` and
    /// `max_storage_buffer_binding_size`, the smaller); `None` on the CPU backend.
    pub max_buffer_bytes: Option<u64>,
}

impl OpenDevice {
    fn cpu() -> Self {
        Self { device: Device::flex(), description: "CPU (Burn flex)".into(), host_memory: true, max_buffer_bytes: None }
    }

    /// Bytes a model may use on this device, when known.
    pub fn memory_budget(&self) -> Option<u64> {
        if self.host_memory { available_host_memory() } else { None }
    }
}

/// `MemAvailable` from /proc/meminfo (Linux), in bytes.
pub fn available_host_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok()?.checked_mul(1024)
}

/// Opens the device `choice` names.
pub fn init_device(choice: DeviceChoice) -> Result<OpenDevice> {
    let api = match choice {
        DeviceChoice::Cpu => return Ok(OpenDevice::cpu()),
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
            let software = info.device_type == wgpu::DeviceType::Cpu;
            if choice == DeviceChoice::Auto && software {
                log::info!("only a software GPU ({what}) was found; using the CPU backend");
                return Ok(OpenDevice::cpu());
            }
            let limits = setup.device.limits();
            let max_buffer_bytes = Some(limits.max_buffer_size.min(u64::from(limits.max_storage_buffer_binding_size)));
            Ok(OpenDevice { device, description: what, host_memory: software, max_buffer_bytes })
        }
        Err(e) if choice == DeviceChoice::Auto => {
            log::info!("no GPU through wgpu ({e}); using the CPU backend");
            Ok(OpenDevice::cpu())
        }
        Err(e) => Err(anyhow!("cannot open a {choice:?} device: {e}")),
    }
}
