//! The building blocks of configuration sections, shared by every module that owns one.
//!
//! Principal types: [`ByteSize`] (a size written with binary units), [`HumanDuration`] (a
//! humantime duration as written in a file) and [`Invalid`] (what a section's own validation
//! reports: the key, relative to the section, and what is wrong). Each module owns its section
//! type and checks it; [`crate::config`] composes the sections into the file and names the file
//! and the full key path in errors.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// A section value that is well-formed but not acceptable: `key` is relative to the section
/// (`max_size`, `"mirror.corp.com".endpoint`); the configuration prefixes the section's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The offending key, relative to the section.
    pub key: String,
    /// What is wrong and, where possible, how to fix it.
    pub message: String,
}

impl Invalid {
    /// `key`: `message`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Invalid {
        Invalid {
            key: key.into(),
            message: message.into(),
        }
    }

    /// Checks that an optional path, when given, is not empty.
    pub fn empty_path(key: &str, path: Option<&PathBuf>) -> Result<(), Invalid> {
        match path {
            Some(path) if path.as_os_str().is_empty() => Err(Invalid::new(key, "empty path")),
            _ => Ok(()),
        }
    }
}

/// A humantime duration (`30s`, `5m`, `24h`) as it appears in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(text.trim())
            .map(HumanDuration)
            .map_err(|err| de::Error::custom(format!("invalid duration {text:?}: {err}")))
    }
}

impl From<HumanDuration> for Duration {
    fn from(duration: HumanDuration) -> Duration {
        duration.0
    }
}

/// A number of bytes, written with binary units (`KiB`, `MiB`, `GiB`, `TiB`), `B`, or as a bare
/// integer.
///
/// Decimal units (`KB`, `MB`, `GB`, ...) are rejected rather than read either way: `10GB`
/// means 10·10⁹ to some and 10·2³⁰ to others, and a cache bound off by 7% is a surprise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;

/// Units from largest to smallest, so that [`ByteSize`]'s `Display` picks the largest exact one.
const UNITS: [(&str, u64); 5] = [
    ("TiB", TIB),
    ("GiB", GIB),
    ("MiB", MIB),
    ("KiB", KIB),
    ("B", 1),
];

impl ByteSize {
    /// `n` KiB, saturating at `u64::MAX`.
    pub const fn kib(n: u64) -> ByteSize {
        ByteSize(n.saturating_mul(KIB))
    }

    /// `n` MiB, saturating at `u64::MAX`.
    pub const fn mib(n: u64) -> ByteSize {
        ByteSize(n.saturating_mul(MIB))
    }

    /// `n` GiB, saturating at `u64::MAX`.
    pub const fn gib(n: u64) -> ByteSize {
        ByteSize(n.saturating_mul(GIB))
    }

    /// The number of bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }

    /// The size for people: one decimal in the largest binary unit it reaches (`512 B`,
    /// `1.5 MiB`, `2.0 GiB`). Unlike `Display`, it need not parse back to the same value.
    pub fn human(self) -> String {
        match UNITS.iter().copied().find(|&(_, factor)| self.0 >= factor) {
            Some((unit, factor)) if factor > 1 => {
                format!("{:.1} {unit}", self.0 as f64 / factor as f64)
            }
            _ => format!("{} B", self.0),
        }
    }
}

/// Prints the largest binary unit that represents the size exactly (`10GiB`, `1536B`), so the
/// output parses back to the same value.
impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (unit, factor) = UNITS
            .iter()
            .copied()
            .find(|&(_, factor)| self.0 != 0 && self.0.is_multiple_of(factor))
            .unwrap_or(("B", 1));
        write!(f, "{}{unit}", self.0 / factor)
    }
}

/// Why a string is not a [`ByteSize`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid size {input:?}: {reason}")]
pub struct ByteSizeError {
    input: String,
    reason: String,
}

impl FromStr for ByteSize {
    type Err = ByteSizeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = |reason: String| ByteSizeError {
            input: s.to_owned(),
            reason,
        };
        let text = s.trim();
        let digits_end = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(digits_end);
        let unit = unit.trim_start();
        if number.is_empty() {
            return Err(fail(
                "expected a whole number with a binary unit, e.g. 512MiB or 10GiB".to_owned(),
            ));
        }
        let factor = match unit {
            "" | "B" => 1,
            "KiB" => KIB,
            "MiB" => MIB,
            "GiB" => GIB,
            "TiB" => TIB,
            _ => return Err(fail(unit_hint(unit))),
        };
        number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(factor))
            .map(ByteSize)
            .ok_or_else(|| fail("too large".to_owned()))
    }
}

/// Explains an unaccepted unit, pointing at the binary unit the writer most likely meant.
fn unit_hint(unit: &str) -> String {
    let binary = match unit.to_ascii_lowercase().as_str() {
        "k" | "kb" | "kib" => Some("KiB"),
        "m" | "mb" | "mib" => Some("MiB"),
        "g" | "gb" | "gib" => Some("GiB"),
        "t" | "tb" | "tib" => Some("TiB"),
        "b" => Some("B"),
        _ => None,
    };
    match binary {
        Some(binary) if unit.to_ascii_lowercase().ends_with("ib") || binary == "B" => {
            format!("unit {unit:?} is written {binary:?}")
        }
        Some(binary) => format!(
            "decimal unit {unit:?} is not accepted; use the binary unit {binary:?} (powers of 1024)"
        ),
        None if unit.starts_with('.') => "a size is a whole number; use a smaller unit".to_owned(),
        None => format!("unknown unit {unit:?}; use B, KiB, MiB, GiB or TiB"),
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;

        impl Visitor<'_> for SizeVisitor {
            type Value = ByteSize;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as 512MiB or 10GiB, or a number of bytes")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("invalid size {v}: must not be negative")))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_any(SizeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes_use_the_largest_binary_unit_reached() {
        assert_eq!(
            [0, 1023, 1536, 5 * 1024 * 1024, 3 << 30].map(|n| ByteSize(n).human()),
            ["0 B", "1023 B", "1.5 KiB", "5.0 MiB", "3.0 GiB"]
        );
    }

    #[test]
    fn size_units_parse() {
        let parsed: Vec<Option<u64>> = ["2TiB", "3KiB", "7B", "42", " 5 MiB "]
            .iter()
            .map(|s| s.parse::<ByteSize>().ok().map(ByteSize::bytes))
            .collect();
        assert_eq!(
            parsed,
            vec![
                Some(2 << 40),
                Some(3 << 10),
                Some(7),
                Some(42),
                Some(5 << 20)
            ]
        );
    }

    #[test]
    fn fractional_and_negative_sizes_are_rejected() {
        let results: Vec<bool> = ["1.5GiB", "-1", "GiB", "", "99999999999TiB"]
            .iter()
            .map(|s| s.parse::<ByteSize>().is_err())
            .collect();
        assert_eq!(results, vec![true; 5]);
    }

    #[test]
    fn byte_size_display_round_trips() {
        let sizes = [
            ByteSize(0),
            ByteSize(1536),
            ByteSize::mib(256),
            ByteSize::gib(10),
        ];
        let shown: Vec<String> = sizes.iter().map(ToString::to_string).collect();
        let reparsed: Vec<ByteSize> = shown.iter().filter_map(|s| s.parse().ok()).collect();
        assert_eq!(
            (shown, reparsed),
            (
                vec![
                    "0B".to_owned(),
                    "1536B".to_owned(),
                    "256MiB".to_owned(),
                    "10GiB".to_owned()
                ],
                sizes.to_vec()
            )
        );
    }
}
