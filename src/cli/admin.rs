//! A running server's admin API (`/status`, the warm-up and withdrawal APIs) as the commands
//! that talk to it (`status`, `deny`, `allow`, `warm`) reach it: which server, with which
//! credentials and trusted roots.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use mirrorgate::config::Config;

use crate::AdminArgs;

/// A running server's admin API.
pub struct Admin {
    /// The HTTP client.
    pub client: reqwest::Client,
    /// The base URL, without a trailing slash.
    pub server: String,
    /// Credentials for a server on another host.
    pub credentials: Option<Credentials>,
}

impl Admin {
    /// `method path` with `body` as JSON; the answer's text, or an error naming the URL and
    /// the server's message.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<String> {
        let url = format!("{}{path}", self.server);
        let mut request = self.client.request(method, &url);
        request = match &self.credentials {
            Some(Credentials::Basic(creds)) => {
                let (user, password) = creds.split_once(':').unwrap_or((creds, ""));
                request.basic_auth(user, Some(password))
            }
            Some(Credentials::Bearer(token)) => request.bearer_auth(token),
            None => request,
        };
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let code = response.status();
        let text = response
            .text()
            .await
            .with_context(|| format!("cannot read the answer of {url}"))?;
        if !code.is_success() {
            let message = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["errors"][0]["message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| text.trim().to_owned());
            bail!("{url} answered {code}: {message}");
        }
        Ok(text)
    }
}

/// The admin API of the running server `args` name, reached as `agent`, each request bounded
/// by `timeout`.
pub fn connect(agent: &str, timeout: Duration, args: AdminArgs) -> Result<Admin> {
    let server = match args.server {
        Some(server) => server,
        None => {
            let rule_args = crate::RuleArgs {
                config: args.config,
                rules: Vec::new(),
            };
            default_server(&rule_args.config()?.0)
        }
    };
    let credentials = match (args.creds, args.token) {
        (Some(creds), _) => Some(Credentials::Basic(creds)),
        (None, Some(token)) => Some(Credentials::Bearer(token)),
        (None, None) => None,
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder()
        .user_agent(format!("{agent}/{}", env!("CARGO_PKG_VERSION")))
        .timeout(timeout)
        .no_proxy();
    if let Some(path) = &args.ca_file {
        let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        for certificate in reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("{}: no PEM certificate", path.display()))?
        {
            builder = builder.add_root_certificate(certificate);
        }
    }
    Ok(Admin {
        client: builder.build().context("cannot set up the HTTP client")?,
        server: server.trim_end_matches('/').to_owned(),
        credentials,
    })
}

/// The credentials the admin API is asked with, for a server on another host that wants them.
pub enum Credentials {
    /// `USER:PASSWORD`.
    Basic(String),
    /// A token.
    Bearer(String),
}

/// Where a server started from `config` serves `/status`.
fn default_server(config: &Config) -> String {
    let (address, tls) = match config.metrics_listen {
        Some(address) => (address, false),
        None => (config.listen, config.tls.is_some()),
    };
    let host = match address.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => "127.0.0.1".to_owned(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => "[::1]".to_owned(),
        std::net::IpAddr::V4(ip) => ip.to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
    };
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{host}:{}", address.port())
}
