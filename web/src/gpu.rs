//! The browser's WebGPU device, created once per wasm instance (Burn's runtime can be
//! initialised only once) after checking that WebGPU exists and that the adapter's
//! limits and features are enough for the model — before any weight is downloaded.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::tensor::Device;
use sphinx_core::api::ErrorKind;
use sphinx_core::weights::Requirements;
use wasm_bindgen::JsValue;

use crate::errors::js_error;

/// Set by wgpu's device-lost callback.
static DEVICE_LOST: AtomicBool = AtomicBool::new(false);

struct Gpu {
    device: Device,
    adapter: wgpu::Adapter,
}

thread_local! {
    static GPU: RefCell<Option<Gpu>> = const { RefCell::new(None) };
}

pub fn device_lost() -> bool {
    DEVICE_LOST.load(Ordering::Relaxed)
}

/// Fails with a device-lost error once the device is gone.
pub fn check_alive() -> Result<(), JsValue> {
    if device_lost() {
        return Err(js_error(ErrorKind::DeviceLost, "the GPU device was lost; load the model again"));
    }
    Ok(())
}

/// The WebGPU device, after checking the adapter against `need`.
pub async fn webgpu_device(need: &Requirements) -> Result<Device, JsValue> {
    check_alive()?;
    if GPU.with(|g| g.borrow().is_none()) {
        let (device, setup) = Device::wgpu_options()
            .init_with_setup_async()
            .await
            .map_err(|e| js_error(ErrorKind::WebgpuUnavailable, format!("WebGPU is not available: {e}")))?;
        setup.device.set_device_lost_callback(|reason, message| {
            DEVICE_LOST.store(true, Ordering::Relaxed);
            web_sys::console::error_1(&format!("sphinx-web: GPU device lost ({reason:?}): {message}").into());
        });
        GPU.with(|g| *g.borrow_mut() = Some(Gpu { device, adapter: setup.adapter }));
    }
    GPU.with(|g| {
        let g = g.borrow();
        let gpu = g.as_ref().ok_or_else(|| js_error(ErrorKind::Internal, "no GPU device"))?;
        check_adapter(&gpu.adapter, need)?;
        Ok(gpu.device.clone())
    })
}

fn check_adapter(adapter: &wgpu::Adapter, need: &Requirements) -> Result<(), JsValue> {
    let limits = adapter.limits();
    let want = need.max_storage_buffer_binding_size.max(need.max_buffer_size);
    if (limits.max_storage_buffer_binding_size as u64) < want || limits.max_buffer_size < want {
        return Err(js_error(
            ErrorKind::Limits,
            format!(
                "this GPU's limits are too small: the model needs {want}-byte buffers, the adapter allows {} (storage binding) / {} (buffer)",
                limits.max_storage_buffer_binding_size, limits.max_buffer_size
            ),
        ));
    }
    let have = adapter.features();
    for name in &need.features {
        let flag = wgpu::Features::from_name(&name.to_ascii_uppercase().replace('-', "_"));
        if !flag.is_some_and(|f| have.contains(f)) {
            return Err(js_error(ErrorKind::Limits, format!("this GPU lacks the WebGPU feature '{name}' the model needs")));
        }
    }
    Ok(())
}
