//! How a configuration section is read from the file: every key optional, a key that is missing
//! or written `null` keeps the section's default, an unknown key is an error. The values sections
//! are made of (sizes, durations, validation errors) are in [`values`]. This sits below every
//! module that owns a section, and below [`crate::config`], which composes them.
//!
//! Principal items: the [`Section`] trait (a section's keys and how each is read), the
//! `section!` macro that implements it and `Deserialize` from the list of keys, and [`Written`]
//! (a section together with the keys the file gave it).
//!
//! Why not `#[derive(Deserialize)]` with `#[serde(default)]` alone: serde fills a *missing* key
//! from `Default`, but a key written `null` (`key:` with its value commented out) reaches the
//! field's own deserializer, which refuses it for a number or a duration; and no field-level
//! helper can know a default that is not the type's own (`concurrency: 8`, `hosted_clusters:
//! true`). Reading each given key over the section's `Default` answers both cases the same way,
//! with the section declared once and its defaults written once, in its `Default`.
//!
//! Using it for a section type that has a `Default`:
//!
//! ```ignore
//! crate::section::section!(LimitsConfig {
//!     max_connections,                       // read as the field's own type
//!     header_read_timeout as HumanDuration,  // read as HumanDuration, stored through `From`
//! });
//! ```
//!
//! The keys are listed in the order of the struct (the unknown-key error lists them so); a
//! field left out of the list is a compile error.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};

pub mod values;

/// A configuration section read key by key over its [`Default`]; implemented by `section!`.
pub trait Section: Default {
    /// The type's name, for the deserializer's "expected" messages.
    const NAME: &'static str;
    /// The keys, in the order of the struct; an unknown key's error lists them.
    const KEYS: &'static [&'static str];

    /// Reads the value of `key` (one of [`Section::KEYS`]) from `map` into the section. `false`
    /// when the value is `null`, which leaves the default in place.
    fn read<'de, A: MapAccess<'de>>(
        &mut self,
        key: &'static str,
        map: &mut A,
    ) -> Result<bool, A::Error>;
}

/// Deserializes a section: `null` is its default, a mapping is read key by key over the default.
pub fn deserialize<'de, S: Section, D: Deserializer<'de>>(deserializer: D) -> Result<S, D::Error> {
    deserializer.deserialize_option(NullIsDefault(PhantomData))
}

/// Reads a key's value as `T` into `place`, unless it is `null`.
pub fn read<'de, T: Deserialize<'de>, A: MapAccess<'de>>(
    place: &mut T,
    map: &mut A,
) -> Result<bool, A::Error> {
    read_as::<T, T, A>(place, map)
}

/// Reads a key's value as written (`W`, e.g. a humantime duration) and stores what it means
/// (`T`, e.g. a `Duration`) in `place`, unless it is `null`.
pub fn read_as<'de, W: Deserialize<'de>, T: From<W>, A: MapAccess<'de>>(
    place: &mut T,
    map: &mut A,
) -> Result<bool, A::Error> {
    Ok(match map.next_value::<Option<W>>()? {
        Some(written) => {
            *place = T::from(written);
            true
        }
        None => false,
    })
}

/// A section as read from a mapping, with which of its keys the file gave a value (not `null`):
/// for the few decisions that depend on whether a key was written, not only on its value.
///
/// Unlike a section alone, the whole of it must be a mapping: `null` is refused, as for the
/// configuration file itself.
pub struct Written<S> {
    /// The section, defaults filled in.
    pub section: S,
    given: Vec<bool>,
}

impl<S: Section> Written<S> {
    /// Whether the file gave `key` a value other than `null`.
    pub fn gave(&self, key: &str) -> bool {
        S::KEYS
            .iter()
            .position(|known| *known == key)
            .is_some_and(|index| self.given[index])
    }
}

impl<'de, S: Section> Deserialize<'de> for Written<S> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_struct(S::NAME, S::KEYS, Keys(PhantomData))
    }
}

/// Turns `null` into the default and anything else into a mapping read by [`Keys`].
struct NullIsDefault<S>(PhantomData<S>);

impl<'de, S: Section> Visitor<'de> for NullIsDefault<S> {
    type Value = S;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "struct {}", S::NAME)
    }

    fn visit_none<E: de::Error>(self) -> Result<S, E> {
        Ok(S::default())
    }

    fn visit_unit<E: de::Error>(self) -> Result<S, E> {
        Ok(S::default())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<S, D::Error> {
        Written::<S>::deserialize(deserializer).map(|written| written.section)
    }
}

/// Reads a mapping key by key over the section's default, refusing unknown and repeated keys as
/// serde's derived code does (same errors, so the same messages).
struct Keys<S>(PhantomData<S>);

impl<'de, S: Section> Visitor<'de> for Keys<S> {
    type Value = Written<S>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "struct {}", S::NAME)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Written<S>, A::Error> {
        let mut section = S::default();
        let mut seen = vec![false; S::KEYS.len()];
        let mut given = vec![false; S::KEYS.len()];
        while let Some(index) = map.next_key_seed(Key(S::KEYS))? {
            let key = S::KEYS[index];
            if std::mem::replace(&mut seen[index], true) {
                return Err(de::Error::duplicate_field(key));
            }
            given[index] = section.read(key, &mut map)?;
        }
        Ok(Written { section, given })
    }
}

/// A key of the section, as its index in the keys; an unknown one is refused while the key is
/// read, so that the error points at it.
struct Key(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for Key {
    type Value = usize;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<usize, D::Error> {
        deserializer.deserialize_identifier(self)
    }
}

impl Visitor<'_> for Key {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("field identifier")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<usize, E> {
        self.0
            .iter()
            .position(|known| *known == key)
            .ok_or_else(|| E::unknown_field(key, self.0))
    }
}

/// Implements [`Section`] and `Deserialize` for a section type from the list of its keys: each
/// `key` is read as the field's type, `key as Written` as `Written` stored through `From`.
/// Attributes before a key (`#[cfg(...)]`) apply to it. After the keys, `accepting [key, ...]`
/// names keys read and dropped (the section keeps nothing of them; [`Written::gave`] tells
/// whether they were given).
macro_rules! section {
    ($section:ident {
        $( $(#[$attr:meta])* $key:ident $(as $written:ty)? ),* $(,)?
    } $(accepting [ $( $(#[$dropped_attr:meta])* $dropped:ident ),* $(,)? ])?) => {
        impl $crate::section::Section for $section {
            const NAME: &'static str = stringify!($section);
            const KEYS: &'static [&'static str] = &[
                $( $(#[$attr])* stringify!($key), )*
                $($( $(#[$dropped_attr])* stringify!($dropped), )*)?
            ];

            fn read<'de, A: ::serde::de::MapAccess<'de>>(
                &mut self,
                key: &'static str,
                map: &mut A,
            ) -> Result<bool, A::Error> {
                // Naming every field, without `..`, makes a field missing from the keys a
                // compile error.
                let $section { $( $(#[$attr])* $key, )* } = self;
                $(
                    $(#[$attr])*
                    if key == stringify!($key) {
                        return $crate::section::read_key!($key, map $(, $written)?);
                    }
                )*
                $($(
                    $(#[$dropped_attr])*
                    if key == stringify!($dropped) {
                        return map
                            .next_value::<Option<::serde::de::IgnoredAny>>()
                            .map(|value| value.is_some());
                    }
                )*)?
                unreachable!("{key} is not a key of {}", stringify!($section))
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $section {
            fn deserialize<D: ::serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                $crate::section::deserialize(deserializer)
            }
        }
    };
}

/// One key's read for `section!`: as the field's own type, or as written and converted.
macro_rules! read_key {
    ($place:ident, $map:ident) => {
        $crate::section::read($place, $map)
    };
    ($place:ident, $map:ident, $written:ty) => {
        $crate::section::read_as::<$written, _, _>($place, $map)
    };
}

pub(crate) use {read_key, section};

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::section::values::HumanDuration;

    /// A section whose defaults are not its types' own (`usize` 0, `bool` false, no duration).
    #[derive(Debug, PartialEq, Eq)]
    struct Example {
        workers: usize,
        enabled: bool,
        timeout: Duration,
    }

    impl Default for Example {
        fn default() -> Self {
            Example {
                workers: 8,
                enabled: true,
                timeout: Duration::from_secs(30),
            }
        }
    }

    section!(Example {
        workers,
        enabled,
        timeout as HumanDuration,
    });

    fn parse(text: &str) -> Result<Example, String> {
        serde_saphyr::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn a_missing_or_null_key_keeps_the_sections_default_not_its_types() {
        assert_eq!(
            [
                parse("{}"),
                parse("workers:\nenabled: ~\ntimeout: null\n"),
                parse("null"),
            ],
            [
                Ok(Example::default()),
                Ok(Example::default()),
                Ok(Example::default())
            ]
        );
    }

    #[test]
    fn a_given_key_is_read_in_its_written_form() {
        assert_eq!(
            parse("workers: 2\ntimeout: 5m\n"),
            Ok(Example {
                workers: 2,
                enabled: true,
                timeout: Duration::from_secs(300),
            })
        );
    }

    #[test]
    fn an_unknown_key_is_refused_listing_the_keys_in_order() {
        let err = parse("worker: 2\n").unwrap_err();
        assert!(
            err.contains("unknown field `worker`, expected one of workers, enabled, timeout"),
            "{err}"
        );
    }

    #[test]
    fn a_repeated_key_is_refused_where_the_parser_would_let_it_through() {
        let err = serde_json::from_str::<Example>(r#"{"workers": 1, "workers": 2}"#).unwrap_err();
        assert!(
            err.to_string().contains("duplicate field `workers`"),
            "{err}"
        );
    }

    #[test]
    fn written_tells_which_keys_were_given_a_value_and_null_is_none() {
        let written: Written<Example> =
            serde_saphyr::from_str("workers: 3\nenabled:\n").expect("valid section");
        assert_eq!(
            (
                written.gave("workers"),
                written.gave("enabled"),
                written.gave("timeout"),
                written.section.workers,
            ),
            (true, false, false, 3)
        );
    }

    #[test]
    fn written_refuses_null_as_a_whole() {
        assert!(serde_saphyr::from_str::<Written<Example>>("null").is_err());
    }
}
