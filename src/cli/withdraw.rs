//! `mirrorgate deny` and `allow`: withdrawing content on a running server, and lifting
//! withdrawals, through its withdrawal API.

use anyhow::{Context, Result};
use mirrorgate::http;

use super::admin::Admin;

/// Withdraws `digests` on the server `admin` reaches, for `reason`.
pub fn deny(admin: &Admin, reason: &str, digests: &[String]) -> Result<()> {
    withdrawal(
        admin,
        http::withdrawn_endpoint::PATH,
        serde_json::json!({ "digests": digests, "reason": reason }),
        "added",
        "withdrawn",
    )
}

/// Lifts the withdrawals of `digests` on the server `admin` reaches.
pub fn allow(admin: &Admin, digests: &[String]) -> Result<()> {
    withdrawal(
        admin,
        http::withdrawn_endpoint::ALLOW,
        serde_json::json!({ "digests": digests }),
        "lifted",
        "allowed again",
    )
}

/// Sends a change of the deny list and prints what it did: one line per digest `field` of the
/// answer lists (`withdrawn sha256:…`), and how many digests stay withdrawn.
fn withdrawal(
    admin: &Admin,
    path: &str,
    body: serde_json::Value,
    field: &str,
    done: &str,
) -> Result<()> {
    let runtime = crate::runtime()?;
    let answer = runtime.block_on(admin.call(reqwest::Method::POST, path, Some(body)))?;
    let answer: serde_json::Value = serde_json::from_str(&answer)
        .with_context(|| format!("{}{path} did not answer JSON", admin.server))?;
    let changed = answer[field].as_array().cloned().unwrap_or_default();
    for digest in &changed {
        println!("{done} {}", digest.as_str().unwrap_or_default());
    }
    if changed.is_empty() {
        println!("nothing changed");
    }
    let count = answer["withdrawn"].as_object().map_or(0, |m| m.len());
    println!("{count} digest(s) withdrawn on {}", admin.server);
    Ok(())
}
