//! What a `Range` header asks of a blob ([`parse_range`]), and a stored blob served whole or in
//! the part asked for ([`stored_blob_response`]).

use std::sync::Arc;

use futures_util::StreamExt;
use http::HeaderValue;

use super::served_blob;
use crate::cache::stats::CacheStats;
use crate::cache::{BlobFile, read_range};
use crate::proxy::served::{BlobRange, ServedBlob};
use crate::reference::Digest;

/// Whether `range` asks for the blob from its first byte (`bytes=0-`, `bytes=0-N`).
pub(super) fn from_first_byte(range: &HeaderValue) -> bool {
    range
        .to_str()
        .ok()
        .and_then(|range| range.trim().strip_prefix("bytes="))
        .is_some_and(|spec| {
            !spec.contains(',')
                && spec
                    .trim()
                    .strip_prefix('0')
                    .is_some_and(|rest| rest.trim_start().starts_with('-'))
        })
}

/// A stored blob, whole or the part a single `Range` asks for.
pub(super) fn stored_blob_response(
    blob: BlobFile,
    digest: &Digest,
    range: Option<&HeaderValue>,
    head: bool,
    stats: &Arc<crate::cache::stats::CacheStats>,
) -> ServedBlob {
    let size = blob.size;
    let (answer, start, len, content_range) = match range.map(|r| parse_range(r, size)) {
        None | Some(RangeAnswer::Whole) => (BlobRange::Whole, 0, size, None),
        Some(RangeAnswer::Part { start, end }) => (
            BlobRange::Part,
            start,
            end - start + 1,
            HeaderValue::from_str(&format!("bytes {start}-{end}/{size}")).ok(),
        ),
        Some(RangeAnswer::Unsatisfiable) => return ServedBlob::unsatisfiable(digest, Some(size)),
    };
    if head {
        return served_blob(answer, Some(len), digest, content_range, None);
    }
    let BlobFile { file, guard, .. } = blob;
    let stats = stats.clone();
    let body = read_range(file, start, len).map(move |chunk| {
        // The guard lives as long as the body: the blob cannot be evicted under a reader.
        let _ = &guard;
        if let Ok(chunk) = &chunk {
            CacheStats::add(&stats.bytes_from_cache, chunk.len() as u64);
        }
        chunk
    });
    served_blob(answer, Some(len), digest, content_range, Some(body.boxed()))
}

/// What a `Range` header asks of a blob of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum RangeAnswer {
    /// Serve it whole (no usable range, or several ranges: the whole is a valid answer).
    Whole,
    /// Bytes `start..=end`.
    Part { start: u64, end: u64 },
    /// The range lies outside the blob.
    Unsatisfiable,
}

pub(super) fn parse_range(header: &HeaderValue, size: u64) -> RangeAnswer {
    let Some(spec) = header
        .to_str()
        .ok()
        .and_then(|h| h.trim().strip_prefix("bytes="))
    else {
        return RangeAnswer::Whole;
    };
    if spec.contains(',') {
        return RangeAnswer::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeAnswer::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    let parsed = match (first.is_empty(), last.is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => last.parse::<u64>().ok().map(|n| {
            if n == 0 {
                None
            } else {
                Some((size.saturating_sub(n), size.saturating_sub(1)))
            }
        }),
        (false, true) => first
            .parse::<u64>()
            .ok()
            .map(|a| Some((a, size.saturating_sub(1)))),
        (false, false) => match (first.parse::<u64>(), last.parse::<u64>()) {
            (Ok(a), Ok(b)) if a <= b => Some(Some((a, b.min(size.saturating_sub(1))))),
            // An inverted range (`bytes=500-0`) can be satisfied by no byte: 416, as Go's
            // `http.ServeContent` (Distribution) answers, not the whole blob.
            (Ok(_), Ok(_)) => Some(None),
            _ => None,
        },
        (true, true) => None,
    };
    match parsed {
        None => RangeAnswer::Whole,
        Some(None) => RangeAnswer::Unsatisfiable,
        Some(Some((start, end))) if size == 0 || start >= size || start > end => {
            RangeAnswer::Unsatisfiable
        }
        Some(Some((start, end))) => RangeAnswer::Part { start, end },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(spec: &str, size: u64) -> RangeAnswer {
        parse_range(&HeaderValue::from_str(spec).unwrap(), size)
    }

    #[test]
    fn closed_range_is_a_part() {
        assert_eq!(
            range("bytes=10-19", 100),
            RangeAnswer::Part { start: 10, end: 19 }
        );
    }

    #[test]
    fn open_range_runs_to_the_end() {
        assert_eq!(
            range("bytes=90-", 100),
            RangeAnswer::Part { start: 90, end: 99 }
        );
    }

    #[test]
    fn suffix_range_is_the_last_bytes() {
        assert_eq!(
            range("bytes=-10", 100),
            RangeAnswer::Part { start: 90, end: 99 }
        );
    }

    #[test]
    fn range_past_the_end_is_clamped() {
        assert_eq!(
            range("bytes=95-200", 100),
            RangeAnswer::Part { start: 95, end: 99 }
        );
    }

    #[test]
    fn an_inverted_range_is_unsatisfiable_whatever_the_size() {
        assert_eq!(
            [range("bytes=500-0", 1000), range("bytes=500-0", u64::MAX)],
            [RangeAnswer::Unsatisfiable, RangeAnswer::Unsatisfiable]
        );
    }

    #[test]
    fn range_starting_past_the_end_is_unsatisfiable() {
        assert_eq!(range("bytes=100-", 100), RangeAnswer::Unsatisfiable);
    }

    #[test]
    fn several_ranges_get_the_whole_blob() {
        assert_eq!(range("bytes=0-1,5-6", 100), RangeAnswer::Whole);
    }

    #[test]
    fn garbage_range_gets_the_whole_blob() {
        assert_eq!(range("items=1-2", 100), RangeAnswer::Whole);
    }
}
