//! Durations as operators write them: a number and a unit (`250ms`, `30s`, `5m`, `6h`,
//! `7d`), read by the manager's settings and the operator commands alike, and written back
//! the same way in messages.

use std::time::Duration;

/// The accepted forms, for error messages.
pub const DURATION_FORMS: &str = "a number and a unit (ms, s, m, h, d), like 250ms, 30s, 5m, 6h or 7d";

/// Parses `250ms`, `30s`, `5m`, `6h`, `7d`. A unit is required: a bare `30` is the kind of
/// ambiguity (seconds? milliseconds?) that bites during an incident.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let s = raw.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    if digits.is_empty() {
        return Err(format!("expected {DURATION_FORMS}"));
    }
    let millis_per_unit: u64 = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "" => return Err(format!("the unit is missing; expected {DURATION_FORMS}")),
        other => return Err(format!("unknown unit {other:?}; expected {DURATION_FORMS}")),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(millis_per_unit))
        .map(Duration::from_millis)
        .ok_or_else(|| "the duration is too large".to_owned())
}

/// Writes a duration in the largest unit that represents it exactly, so messages echo
/// the way the operator wrote it (`30s`, not `30000ms`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if ms != 0 && ms.checked_rem(size) == Some(0) {
            return format!("{}{unit}", ms / size);
        }
    }
    if ms == 0 { "0s".to_owned() } else { format!("{ms}ms") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_every_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("6h"), Ok(Duration::from_secs(6 * 3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration(" 0s "), Ok(Duration::ZERO));
        assert_eq!(parse_duration("10 s"), Ok(Duration::from_secs(10)));
    }

    #[test]
    fn durations_without_a_known_unit_are_refused() {
        assert!(parse_duration("30").expect_err("no unit").contains("unit is missing"));
        assert!(parse_duration("30w").expect_err("bad unit").contains("unknown unit"));
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("1.5s").is_err());
        assert!(
            parse_duration("99999999999999999999d")
                .expect_err("overflow")
                .contains("too large")
        );
    }

    #[test]
    fn durations_are_written_in_their_largest_exact_unit() {
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_secs(300)), "5m");
        assert_eq!(format_duration(Duration::from_secs(86_400)), "1d");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }
}
