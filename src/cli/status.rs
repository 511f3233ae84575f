//! `mirrorgate status`: the status report of a running server (`/status`), as text or JSON.

use anyhow::{Context, Result};
use mirrorgate::http;

use super::admin::Admin;

/// Prints the status of the server `admin` reaches.
pub fn status(admin: &Admin, json: bool) -> Result<()> {
    let runtime = crate::runtime()?;
    let path = http::status_endpoint::PATH;
    let body = runtime.block_on(admin.call(reqwest::Method::GET, path, None))?;
    let status: mirrorgate::status_report::Status = serde_json::from_str(&body)
        .with_context(|| format!("{}{path} did not answer a mirrorgate status", admin.server))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", status.render());
    }
    Ok(())
}
