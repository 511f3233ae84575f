//! Sealed records in the shared bucket.
//!
//! Blobs and manifests there need no seal: they are named by their digest and every read is
//! verified against it. The *records* are different: a confirmation marker lets every replica
//! serve a digest to a repository, and a tag answer names the manifest a tag is served as, so
//! whoever can write the bucket could otherwise grant any repository any content. Each record
//! therefore carries an HMAC-SHA256, under a key only the replicas hold (`cache.shared.key_file`),
//! of its object key and its content; a record without a valid one (planted, altered, copied to
//! another key, or sealed with another key) is not trusted.
//!
//! Principal type: [`RecordKeys`]. A sealed body is the record's content followed by one line
//! `hmac-sha256 <64 hex digits>`.

use std::fmt;

use ring::hmac;

/// The shortest key accepted, in bytes (the output size of SHA-256, as RFC 2104 advises).
pub const MIN_KEY_LEN: usize = 32;
/// The largest body a sealed record may have: a larger object is not one of ours, and is
/// rejected without being read.
pub const MAX_RECORD_LEN: u64 = 1024;

const MAC_TAG: &str = "hmac-sha256 ";
/// Keeps these MACs apart from anything else the same key might ever sign.
const DOMAIN: &[u8] = b"mirrorgate shared record v1\n";

/// The keys records are sealed and checked with: the first seals, every one is accepted (so
/// that a new key can be rolled out before it is used, and an old one retired after).
pub struct RecordKeys {
    keys: Vec<hmac::Key>,
}

impl fmt::Debug for RecordKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordKeys")
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

/// Why a record is not trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// Larger than any record mirrorgate writes (1 KiB).
    TooLarge,
    /// No MAC line: written without a key (e.g. by a version before sealing, or planted).
    Unsealed,
    /// A MAC that no key accepts: altered, copied from another key, or sealed with a key this
    /// replica does not have.
    BadMac,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rejected::TooLarge => "larger than any record mirrorgate writes",
            Rejected::Unsealed => "not sealed (no MAC: written without the key)",
            Rejected::BadMac => {
                "its MAC matches no key (altered, copied from another key, or sealed with another key)"
            }
        })
    }
}

impl RecordKeys {
    /// The keys of a key file: one per line (surrounding white space ignored), the first the
    /// one that seals; empty lines and lines starting with `#` are skipped. Each must have at
    /// least [`MIN_KEY_LEN`] bytes (`openssl rand -hex 32` makes one).
    pub fn parse(text: &str) -> Result<RecordKeys, String> {
        let mut keys = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.len() < MIN_KEY_LEN {
                return Err(format!(
                    "line {}: a key of {} bytes; at least {MIN_KEY_LEN} are needed (e.g. \
                     `openssl rand -hex 32`)",
                    number + 1,
                    line.len()
                ));
            }
            keys.push(hmac::Key::new(hmac::HMAC_SHA256, line.as_bytes()));
        }
        if keys.is_empty() {
            return Err(format!(
                "no key in it: one per line, at least {MIN_KEY_LEN} bytes (e.g. `openssl rand \
                 -hex 32`)"
            ));
        }
        Ok(RecordKeys { keys })
    }

    /// How many keys are accepted.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The body of the record `content` stored at object key `key`.
    pub fn seal(&self, key: &str, content: &str) -> String {
        // The seal is the line after the content: content that does not end a line could not be
        // told from it when opened.
        debug_assert!(
            content.is_empty() || content.ends_with('\n'),
            "a sealed record is whole lines"
        );
        let mac = hmac::sign(&self.keys[0], &message(key, content));
        let mut body = String::with_capacity(content.len() + MAC_TAG.len() + 65);
        body.push_str(content);
        body.push_str(MAC_TAG);
        for byte in mac.as_ref() {
            body.push_str(&format!("{byte:02x}"));
        }
        body.push('\n');
        body
    }

    /// The content of the record `body` read at object key `key`, if one of the keys sealed it
    /// there.
    pub fn open<'a>(&self, key: &str, body: &'a [u8]) -> Result<&'a str, Rejected> {
        if body.len() as u64 > MAX_RECORD_LEN {
            return Err(Rejected::TooLarge);
        }
        let text = std::str::from_utf8(body).map_err(|_| Rejected::Unsealed)?;
        let without_newline = text.strip_suffix('\n').ok_or(Rejected::Unsealed)?;
        let start = without_newline.rfind('\n').map_or(0, |i| i + 1);
        let (content, last) = text.split_at(start);
        let mac = last
            .strip_suffix('\n')
            .and_then(|line| line.strip_prefix(MAC_TAG))
            .ok_or(Rejected::Unsealed)?;
        let mac = decode_hex(mac).ok_or(Rejected::BadMac)?;
        let message = message(key, content);
        self.keys
            .iter()
            .any(|k| hmac::verify(k, &message, &mac).is_ok())
            .then_some(content)
            .ok_or(Rejected::BadMac)
    }
}

/// What is signed: the object key binds the record to its repository, digest or tag (a copy
/// under another key fails), the content to what it says.
fn message(key: &str, content: &str) -> Vec<u8> {
    let mut message = Vec::with_capacity(DOMAIN.len() + key.len() + 1 + content.len());
    message.extend_from_slice(DOMAIN);
    message.extend_from_slice(key.as_bytes());
    // Object keys never hold a newline: the key ends here.
    message.push(b'\n');
    message.extend_from_slice(content.as_bytes());
    message
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 {
        return None;
    }
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    text.as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef-one";
    const OTHER: &str = "0123456789abcdef0123456789abcdef-two";
    const MARKER: &str = "repos/quay.io/a/sha256/00ff";

    fn keys(text: &str) -> RecordKeys {
        RecordKeys::parse(text).unwrap()
    }

    #[test]
    fn a_sealed_record_opens_to_its_content_under_its_key() {
        let keys = keys(KEY);
        let tag = "sha256:00ff\n42\n1700000000\n";
        assert_eq!(keys.open(MARKER, keys.seal(MARKER, "").as_bytes()), Ok(""));
        assert_eq!(
            keys.open(
                "tags/quay.io/a/v1",
                keys.seal("tags/quay.io/a/v1", tag).as_bytes()
            ),
            Ok(tag)
        );
    }

    #[test]
    fn an_empty_or_unsealed_record_is_rejected() {
        let keys = keys(KEY);
        for body in [&b""[..], b"\n", b"sha256:00ff\n42\n1700000000\n", b"\xff\n"] {
            assert_eq!(keys.open(MARKER, body), Err(Rejected::Unsealed), "{body:?}");
        }
    }

    #[test]
    fn a_record_copied_to_another_key_or_altered_is_rejected() {
        let keys = keys(KEY);
        let sealed = keys.seal(MARKER, "");
        assert_eq!(
            keys.open("repos/quay.io/b/sha256/00ff", sealed.as_bytes()),
            Err(Rejected::BadMac)
        );
        let tag = keys.seal("tags/quay.io/a/v1", "sha256:00ff\n42\n1700000000\n");
        let rewritten = tag.replacen("00ff", "11ee", 1);
        assert_eq!(
            keys.open("tags/quay.io/a/v1", rewritten.as_bytes()),
            Err(Rejected::BadMac)
        );
        let truncated_mac = &sealed[..sealed.len() - 3];
        assert_eq!(
            keys.open(MARKER, format!("{truncated_mac}\n").as_bytes()),
            Err(Rejected::BadMac)
        );
    }

    #[test]
    fn another_key_is_rejected_and_every_listed_key_is_accepted() {
        let sealed_with_other = keys(OTHER).seal(MARKER, "");
        assert_eq!(
            keys(KEY).open(MARKER, sealed_with_other.as_bytes()),
            Err(Rejected::BadMac)
        );
        // Rotation: the new key listed second is accepted before it seals.
        let both = keys(&format!(
            "# new key first once every replica has it\n{KEY}\n\n{OTHER}\n"
        ));
        assert_eq!(both.len(), 2);
        assert_eq!(both.open(MARKER, sealed_with_other.as_bytes()), Ok(""));
        assert_eq!(
            keys(KEY).open(MARKER, both.seal(MARKER, "").as_bytes()),
            Ok("")
        );
    }

    #[test]
    fn a_record_larger_than_any_we_write_is_rejected_unread() {
        let keys = keys(KEY);
        let large = vec![b'a'; MAX_RECORD_LEN as usize + 1];
        assert_eq!(keys.open(MARKER, &large), Err(Rejected::TooLarge));
    }

    #[test]
    fn a_key_file_needs_a_key_of_at_least_32_bytes() {
        let error = RecordKeys::parse("# only a comment\n\n").unwrap_err();
        assert!(error.starts_with("no key in it"), "{error}");
        let error = RecordKeys::parse(&format!("{KEY}\nsecret\n")).unwrap_err();
        assert!(error.starts_with("line 2: a key of 6 bytes"), "{error}");
    }
}
