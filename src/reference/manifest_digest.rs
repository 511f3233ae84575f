//! The digest a manifest is addressed by. For every manifest but one kind it is the digest of its
//! bytes. A *signed* Docker schema-1 manifest (`application/vnd.docker.distribution.manifest.v1+
//! prettyjws`) is a JSON Web Signature in libtrust's "pretty" form: the signed payload with a
//! `signatures` member spliced in before its closing brace. Its digest is over the payload alone,
//! as containers/image (`manifest.Digest`) and Distribution compute it, and Distribution signs
//! anew on every GET, so two answers for one digest differ in their bytes and both are right.
//!
//! [`manifest_digest`] recovers the payload as libtrust's `ParsePrettySignature` does: every
//! signature's protected header names `formatLength` (how many leading bytes of the document are
//! the payload's) and `formatTail` (the payload's remaining bytes, base64url); the payload is
//! `document[..formatLength] + formatTail`. Anything that does not parse that way is hashed
//! whole, so it can only fail verification, never pass it unchecked.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use super::{Algorithm, digest_of};

/// The digest of a manifest's `bytes` in `algorithm` (see the module docs).
pub fn manifest_digest(algorithm: Algorithm, bytes: &[u8]) -> String {
    match signed_schema1_payload(bytes) {
        Some(payload) => digest_of(algorithm, &payload),
        None => digest_of(algorithm, bytes),
    }
}

/// The members of a manifest that tell a signed schema-1 one (containers/image's
/// `GuessMIMEType`: `schemaVersion` 1 with a `signatures` member).
#[derive(Deserialize)]
struct Schema1<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: Option<i64>,
    #[serde(borrow, default)]
    signatures: Option<Vec<Signature<'a>>>,
}

#[derive(Deserialize)]
struct Signature<'a> {
    #[serde(borrow)]
    protected: std::borrow::Cow<'a, str>,
}

#[derive(Deserialize)]
struct Protected {
    #[serde(rename = "formatLength")]
    format_length: usize,
    #[serde(rename = "formatTail")]
    format_tail: String,
}

/// The JWS payload of a signed schema-1 manifest; `None` for any other document.
fn signed_schema1_payload(bytes: &[u8]) -> Option<Vec<u8>> {
    let manifest: Schema1<'_> = serde_json::from_slice(bytes).ok()?;
    let signatures = manifest.signatures.filter(|s| !s.is_empty())?;
    if manifest.schema_version != Some(1) {
        return None;
    }
    // Every signature must describe the same payload (libtrust refuses a document whose
    // signatures disagree).
    let mut format: Option<(usize, Vec<u8>)> = None;
    for signature in &signatures {
        let header = base64url(&signature.protected)?;
        let protected: Protected = serde_json::from_slice(&header).ok()?;
        let tail = base64url(&protected.format_tail)?;
        match &format {
            None => format = Some((protected.format_length, tail)),
            Some((length, known)) if *length == protected.format_length && *known == tail => {}
            Some(_) => return None,
        }
    }
    let (length, tail) = format?;
    let mut payload = bytes.get(..length)?.to_vec();
    payload.extend_from_slice(&tail);
    Some(payload)
}

/// JOSE base64url: without padding, though a padded value is read too (libtrust pads first).
fn base64url(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAYLOAD: &str = "{\n   \"schemaVersion\": 1,\n   \"name\": \"ns/app\",\n   \"tag\": \"v1\",\n   \"architecture\": \"amd64\",\n   \"fsLayers\": [],\n   \"history\": []\n}";

    /// `PAYLOAD` signed the way libtrust's `PrettySignature` writes it, with `signature` standing
    /// for a signature made at another time (Distribution signs on every GET).
    fn signed(payload: &str, signature: &str) -> String {
        let length = payload.rfind("\n}").unwrap();
        let tail = URL_SAFE_NO_PAD.encode(&payload[length..]);
        let protected = URL_SAFE_NO_PAD.encode(format!(
            r#"{{"formatLength":{length},"formatTail":"{tail}","time":"2026-12-07T00:00:00Z"}}"#
        ));
        format!(
            "{},\n   \"signatures\": [\n      {{\n         \"header\": {{\"alg\": \"ES256\"}},\n         \"signature\": \"{signature}\",\n         \"protected\": \"{protected}\"\n      }}\n   ]{}",
            &payload[..length],
            &payload[length..]
        )
    }

    #[test]
    fn a_signed_schema1_manifest_is_addressed_by_its_payload_whatever_its_signature() {
        let first = signed(PAYLOAD, "c2lnbmF0dXJlLW9uZQ");
        let again = signed(PAYLOAD, "c2lnbmF0dXJlLXR3bw");
        let expected = digest_of(Algorithm::Sha256, PAYLOAD.as_bytes());
        assert_eq!(
            (
                manifest_digest(Algorithm::Sha256, first.as_bytes()),
                manifest_digest(Algorithm::Sha256, again.as_bytes()),
                first == again,
            ),
            (expected.clone(), expected, false)
        );
    }

    #[test]
    fn a_changed_payload_changes_the_digest() {
        let tampered = signed(PAYLOAD, "c2ln").replace("\"tag\": \"v1\"", "\"tag\": \"v2\"");
        assert_ne!(
            manifest_digest(Algorithm::Sha256, tampered.as_bytes()),
            digest_of(Algorithm::Sha256, PAYLOAD.as_bytes())
        );
    }

    #[test]
    fn unsigned_and_other_manifests_are_hashed_whole() {
        let schema2 = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","signatures":[]}"#;
        let schema1_unsigned = PAYLOAD.as_bytes();
        let not_json = b"\x00not json";
        for bytes in [&schema2[..], schema1_unsigned, not_json] {
            assert_eq!(
                manifest_digest(Algorithm::Sha256, bytes),
                digest_of(Algorithm::Sha256, bytes),
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn signatures_that_disagree_on_the_payload_are_hashed_whole() {
        let one = signed(PAYLOAD, "c2ln");
        let protected = |length: usize| {
            URL_SAFE_NO_PAD.encode(format!(
                r#"{{"formatLength":{length},"formatTail":"{}"}}"#,
                URL_SAFE_NO_PAD.encode("\n}")
            ))
        };
        let length = PAYLOAD.rfind("\n}").unwrap();
        let two = one.replacen(
            "\n   ]",
            &format!(
                ",\n      {{\"signature\": \"x\", \"protected\": \"{}\"}}\n   ]",
                protected(length - 1)
            ),
            1,
        );
        assert_eq!(
            manifest_digest(Algorithm::Sha256, two.as_bytes()),
            digest_of(Algorithm::Sha256, two.as_bytes())
        );
    }

    #[test]
    fn a_format_length_past_the_end_is_hashed_whole() {
        let length = PAYLOAD.len() * 4;
        let protected =
            URL_SAFE_NO_PAD.encode(format!(r#"{{"formatLength":{length},"formatTail":"fQ"}}"#));
        let document = format!(
            "{{\"schemaVersion\": 1, \"signatures\": [{{\"protected\": \"{protected}\"}}]}}"
        );
        assert_eq!(
            manifest_digest(Algorithm::Sha256, document.as_bytes()),
            digest_of(Algorithm::Sha256, document.as_bytes())
        );
    }
}
