//! Byte sizes in words.

/// A size in binary units with three significant digits: `6.78 MiB`, `640 MiB`, `1.01 GiB`
/// (so that two sizes a few percent apart read apart).
pub fn size_iec(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1023.5 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let decimals = if value >= 99.95 {
        0
    } else if value >= 9.995 {
        1
    } else {
        2
    };
    format!("{value:.decimals$} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::size_iec;

    #[test]
    fn sizes_have_three_significant_digits() {
        assert_eq!(size_iec(512), "512 B");
        assert_eq!(size_iec(8 << 20), "8.00 MiB");
        assert_eq!(size_iec(7_105_536), "6.78 MiB");
        assert_eq!(size_iec(85_266_432), "81.3 MiB");
        assert_eq!(size_iec(671_306_752), "640 MiB");
        assert_eq!(size_iec(1_084_227_584), "1.01 GiB");
        assert_eq!(size_iec(1 << 30), "1.00 GiB");
        assert_eq!(size_iec((1 << 30) - 1), "1.00 GiB");
    }
}
