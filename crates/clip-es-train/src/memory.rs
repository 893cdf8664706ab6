//! What this process may still allocate: the memory the kernel reports available and what is
//! left of the address-space limit (`ulimit -v`). The CAM, mask and prediction stages and the
//! clip-decoder's feature cache compare their per-image estimates with it before allocating.

/// The rule for a `--memory-limit` in bytes (`train`, `predict`): none, or at least one MB's worth
/// (0 would refuse every image).
pub fn check_memory_limit(limit: Option<u64>) -> Result<(), String> {
    match limit {
        Some(0) => Err("--memory-limit must be at least 1 MB".into()),
        _ => Ok(()),
    }
}

/// Bytes this process may still allocate: the smaller of the memory the kernel reports as
/// available (`MemAvailable`) and what is left of the address-space limit (`ulimit -v`) beyond
/// the current size. `None` where neither can be read (not Linux).
pub fn available_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let available = meminfo
        .as_deref()
        .and_then(|m| kib_field(m, "MemAvailable:"));
    let limits = std::fs::read_to_string("/proc/self/limits").ok();
    let address_limit = limits.as_deref().and_then(address_space_limit);
    let status = std::fs::read_to_string("/proc/self/status").ok();
    let vm_size = status.as_deref().and_then(|s| kib_field(s, "VmSize:"));
    let left = match (address_limit, vm_size) {
        (Some(l), Some(v)) => Some(l.saturating_sub(v)),
        (Some(l), None) => Some(l),
        _ => None,
    };
    match (available, left) {
        (Some(a), Some(l)) => Some(a.min(l)),
        (a, l) => a.or(l),
    }
}

/// `Name:   1234 kB` of /proc/meminfo or /proc/self/status, in bytes.
pub(crate) fn kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line[name.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

/// The soft `Max address space` of /proc/self/limits in bytes; None when unlimited.
pub(crate) fn address_space_limit(limits: &str) -> Option<u64> {
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max address space"))?;
    line["Max address space".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Formats bytes for messages (one format with the ViT input-size check of `clip-es-model`).
pub use clip_es_model::input_size::human_bytes;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_fields_parse() {
        assert_eq!(
            kib_field("MemTotal: 10 kB\nMemAvailable:   2 kB\n", "MemAvailable:"),
            Some(2048)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax address space         4096000000           unlimited            bytes\n";
        assert_eq!(address_space_limit(limits), Some(4_096_000_000));
        let unlimited =
            "Max address space         unlimited            unlimited            bytes\n";
        assert_eq!(address_space_limit(unlimited), None);
    }
}
