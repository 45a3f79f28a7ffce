//! Human-readable sizes and durations, as the status pages and `databus status` print them.

/// `12 B`, `1.3 KiB`, `512.0 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `850 ms`, `12.5 s`, `3 min`, `2 h`, `3 days`.
pub fn duration_ms(ms: u64) -> String {
    match ms {
        0..1000 => format!("{ms} ms"),
        1000..120_000 => format!("{:.1} s", ms as f64 / 1000.0),
        120_000..7_200_000 => format!("{} min", ms / 60_000),
        7_200_000..172_800_000 => format!("{} h", ms / 3_600_000),
        _ => format!("{} days", ms / 86_400_000),
    }
}

/// [`duration_ms`] of a nanosecond count.
pub fn duration_ns(ns: u64) -> String {
    duration_ms(ns / 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(bytes(12), "12 B");
        assert_eq!(bytes(1344), "1.3 KiB");
        assert_eq!(bytes(512 << 20), "512.0 MiB");
        assert_eq!(duration_ns(850_000_000), "850 ms");
        assert_eq!(duration_ns(12_500_000_000), "12.5 s");
        assert_eq!(duration_ns(600_000_000_000), "10 min");
        assert_eq!(duration_ms(3 * 3_600_000), "3 h");
        assert_eq!(duration_ms(3 * 86_400_000), "3 days");
    }
}
