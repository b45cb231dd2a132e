//! Choosing the device a model lives on, from the spelling users give on the command line and
//! in configs: `cpu`, `cuda`, `cuda:N`, or `auto` (the first GPU when this build has CUDA and
//! one is present, else the CPU).

use candle_core::Device;

/// Whether this binary was built with the `cuda` feature.
pub const CUDA_BUILT: bool = cfg!(feature = "cuda");

/// The device named by `spec`; an unknown spelling, or `cuda` in a build without CUDA, is an
/// error that says what was expected.
pub fn parse_device(spec: &str) -> anyhow::Result<Device> {
    let spec = spec.trim();
    match spec {
        "cpu" => Ok(Device::Cpu),
        "auto" => {
            if CUDA_BUILT && candle_core::utils::cuda_is_available() {
                cuda(0)
            } else {
                Ok(Device::Cpu)
            }
        }
        "cuda" | "gpu" => cuda(0),
        _ => match spec.strip_prefix("cuda:") {
            Some(n) => match n.parse::<usize>() {
                Ok(ordinal) => cuda(ordinal),
                Err(_) => anyhow::bail!(
                    "device `{spec}`: `{n}` is not a GPU ordinal (expected cuda:0, cuda:1, ...)"
                ),
            },
            None => anyhow::bail!("device `{spec}`: expected cpu, cuda, cuda:N or auto"),
        },
    }
}

fn cuda(ordinal: usize) -> anyhow::Result<Device> {
    if !CUDA_BUILT {
        anyhow::bail!(
            "device cuda:{ordinal}: this rlvr was built without CUDA; rebuild with \
             `cargo build --release --features cuda` (needs the CUDA toolkit)"
        );
    }
    Device::new_cuda(ordinal).map_err(|e| anyhow::anyhow!("device cuda:{ordinal}: {e}"))
}

/// A short name for logs: `cpu` or `cuda:N`.
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_auto_parse_and_bad_spellings_say_what_is_expected() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        assert_eq!(device_name(&parse_device(" cpu ").unwrap()), "cpu");
        if !CUDA_BUILT {
            assert!(parse_device("auto").unwrap().is_cpu());
            let e = parse_device("cuda:1").unwrap_err().to_string();
            assert!(e.contains("built without CUDA"), "{e}");
        }
        let e = parse_device("cuda:x").unwrap_err().to_string();
        assert!(e.contains("not a GPU ordinal"), "{e}");
        let e = parse_device("tpu").unwrap_err().to_string();
        assert!(e.contains("expected cpu, cuda, cuda:N or auto"), "{e}");
    }
}
