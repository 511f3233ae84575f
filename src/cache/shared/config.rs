//! The `cache.shared` section: the bucket, its prefix and credentials, parsed and validated.

use object_store::path::Path;

use crate::section::{Written, section};

use std::path::PathBuf;

/// The `cache.shared` section.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SharedConfig {
    /// The S3-compatible bucket (`cache.shared.s3`).
    pub s3: S3Config,
    /// The keys that seal the bucket's records (`cache.shared.key_file`): one per line, the
    /// first seals, all are accepted. `None`: records are neither written nor trusted, and only
    /// content is shared.
    pub key_file: Option<PathBuf>,
}

/// The `cache.shared.s3` section: where the bucket is and how to sign requests to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    /// The bucket (it must exist: mirrorgate does not create it).
    pub bucket: String,
    /// Key prefix inside the bucket (`""`: the bucket's root), without a leading `/`.
    pub prefix: String,
    /// Where to connect, e.g. `https://s3.openshift-storage.svc`; `None`: AWS, from `region`.
    pub endpoint: Option<String>,
    /// The region requests are signed for.
    pub region: String,
    /// Address the bucket as `endpoint/bucket/key` rather than `bucket.endpoint/key`; what most
    /// on-premises servers (Ceph RGW, MinIO, SeaweedFS) need.
    pub path_style: bool,
    /// Allow a plain `http://` endpoint. TLS, when used, is always verified (see `ca_file`).
    pub insecure: bool,
    /// Extra PEM root certificates for the endpoint.
    pub ca_file: Option<PathBuf>,
    /// An AWS credentials file, whose `[default]` profile is used; `None`: the environment
    /// variables `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`.
    pub credentials_file: Option<PathBuf>,
}

section!(SharedConfig { s3, key_file });

/// A `cache.shared` section that names no bucket (`shared:` or `shared: {}`) means the local
/// cache only; a missing bucket name inside `s3` is left empty for [`SharedConfig::validate`] to
/// report.
impl From<Written<SharedConfig>> for Option<SharedConfig> {
    fn from(written: Written<SharedConfig>) -> Self {
        written.gave("s3").then_some(written.section)
    }
}

section!(S3Config {
    bucket,
    prefix,
    endpoint,
    region,
    path_style,
    insecure,
    ca_file,
    credentials_file,
});

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            bucket: String::new(),
            prefix: String::new(),
            endpoint: None,
            region: "us-east-1".to_owned(),
            path_style: false,
            insecure: false,
            ca_file: None,
            credentials_file: None,
        }
    }
}

impl SharedConfig {
    /// Checks what the types do not; the error is `(key under cache.shared, message)`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        self.s3
            .validate()
            .map_err(|(key, message)| (format!("s3.{key}"), message))?;
        if self
            .key_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err(("key_file".to_owned(), "empty path".to_owned()));
        }
        Ok(())
    }
}

impl S3Config {
    /// Checks the values; the error is `(key under cache.shared.s3, message)`. Reads no file and
    /// contacts nothing: [`SharedStore::open`](super::SharedStore::open) and [`SharedStore::check`](super::SharedStore::check) do that.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |key: &str, message: String| Err((key.to_owned(), message));
        if self.bucket.is_empty() {
            return err(
                "bucket",
                "required: the name of an existing bucket".to_owned(),
            );
        }
        if let Some(why) = bucket_name_problem(&self.bucket) {
            return err(
                "bucket",
                format!("{:?} is not an S3 bucket name: {why}", self.bucket),
            );
        }
        if let Err(why) = prefix_path(&self.prefix) {
            return err("prefix", why);
        }
        if let Some(endpoint) = &self.endpoint {
            let url = match url::Url::parse(endpoint) {
                Ok(url) => url,
                Err(e) => return err("endpoint", format!("{endpoint:?} is not a URL: {e}")),
            };
            match url.scheme() {
                "https" => {}
                "http" if self.insecure => {}
                "http" => {
                    return err(
                        "endpoint",
                        format!("plain http endpoint \"{endpoint}\" needs insecure: true"),
                    );
                }
                other => {
                    return err(
                        "endpoint",
                        format!("scheme {other:?} in \"{endpoint}\": use https:// or http://"),
                    );
                }
            }
            if url.host_str().is_none_or(str::is_empty) {
                return err("endpoint", format!("\"{endpoint}\" names no host"));
            }
            if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
                return err(
                    "endpoint",
                    format!("\"{endpoint}\": no query, fragment or user info allowed"),
                );
            }
        }
        if self.region.is_empty() {
            return err(
                "region",
                "empty: name the region requests are signed for (us-east-1 for most \
                 on-premises servers)"
                    .to_owned(),
            );
        }
        for (key, path) in [
            ("ca_file", &self.ca_file),
            ("credentials_file", &self.credentials_file),
        ] {
            if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                return err(key, "empty path".to_owned());
            }
        }
        Ok(())
    }

    /// `s3://bucket/prefix` (and the endpoint), for logs and `check`.
    pub fn describe(&self) -> String {
        let mut out = format!("s3://{}/{}", self.bucket, self.prefix);
        if let Some(endpoint) = &self.endpoint {
            out.push_str(&format!(" at {endpoint}"));
        }
        out
    }
}

/// Why `name` is not a valid S3 bucket name (the rules every S3 implementation accepts).
fn bucket_name_problem(name: &str) -> Option<&'static str> {
    if !(3..=63).contains(&name.len()) {
        return Some("3 to 63 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return Some("only lower-case letters, digits, '.' and '-'");
    }
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !alnum(name.as_bytes()[0]) || !alnum(name.as_bytes()[name.len() - 1]) {
        return Some("must begin and end with a letter or digit");
    }
    if name.contains("..") {
        return Some("no two adjacent dots");
    }
    None
}

/// The prefix as an object path (one trailing `/` allowed).
pub(super) fn prefix_path(prefix: &str) -> Result<Path, String> {
    let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
    if trimmed.is_empty() {
        return if prefix.is_empty() {
            Ok(Path::default())
        } else {
            Err("\"/\": use \"\" for the bucket's root".to_owned())
        };
    }
    if trimmed.starts_with('/') {
        return Err(format!("{prefix:?}: no leading '/'"));
    }
    if trimmed
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(format!("{prefix:?}: empty, '.' or '..' component"));
    }
    Path::parse(trimmed).map_err(|e| format!("{prefix:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn config() -> S3Config {
        S3Config {
            bucket: "mirrorgate-cache".to_owned(),
            ..S3Config::default()
        }
    }

    fn problem(edit: impl FnOnce(&mut S3Config)) -> Option<(String, String)> {
        let mut config = config();
        edit(&mut config);
        config.validate().err()
    }

    #[test]
    fn defaults_are_those_of_the_contract() {
        assert_eq!(
            config(),
            S3Config {
                bucket: "mirrorgate-cache".to_owned(),
                prefix: String::new(),
                endpoint: None,
                region: "us-east-1".to_owned(),
                path_style: false,
                insecure: false,
                ca_file: None,
                credentials_file: None,
            }
        );
        assert_eq!(config().validate(), Ok(()));
    }

    #[test]
    fn the_configuration_file_reads_the_section_and_names_bad_keys() {
        let text = "cache:\n  shared:\n    s3:\n      bucket: team-cache\n      \
                    endpoint: http://127.0.0.1:8333\n      insecure: true\n      \
                    path_style: true\n";
        let config = crate::config::Config::from_yaml_str(text, "f.yaml").unwrap();
        let s3 = config.cache.shared.map(|shared| shared.s3);
        assert_eq!(
            s3.as_ref()
                .map(|s3| (s3.bucket.as_str(), s3.path_style, s3.insecure)),
            Some(("team-cache", true, true))
        );
        let error_of = |text: &str| {
            crate::config::Config::from_yaml_str(text, "f.yaml")
                .unwrap_err()
                .to_string()
        };
        let error =
            error_of("cache: {shared: {s3: {bucket: team-cache, endpoint: 'http://s3:8333'}}}");
        assert!(
            error.starts_with("f.yaml: cache.shared.s3.endpoint: plain http"),
            "{error}"
        );
        let error = error_of("cache: {shared: {s3: {bucket: b, secret: x}}}");
        assert!(error.contains("secret"), "{error}");
        let keyed = crate::config::Config::from_yaml_str(
            "cache: {shared: {key_file: /etc/mirrorgate/shared-key/key, s3: {bucket: b-1}}}",
            "f.yaml",
        )
        .unwrap();
        assert_eq!(
            keyed.cache.shared.and_then(|shared| shared.key_file),
            Some(PathBuf::from("/etc/mirrorgate/shared-key/key"))
        );
        let error = error_of("cache: {shared: {key_file: '', s3: {bucket: b-1}}}");
        assert!(
            error.starts_with("f.yaml: cache.shared.key_file: empty path"),
            "{error}"
        );
        assert_eq!(
            crate::config::Config::from_yaml_str("cache: {shared: }", "f.yaml")
                .unwrap()
                .cache
                .shared,
            None
        );
    }

    #[test]
    fn an_empty_section_means_no_shared_store() {
        let read = |text: &str| {
            let written: Written<SharedConfig> = serde_saphyr::from_str(text).unwrap();
            Option::<SharedConfig>::from(written)
        };
        assert_eq!(read("{}"), None);
        assert_eq!(read("{key_file: /k, s3: null}"), None);
        assert_eq!(
            read("{s3: {bucket: b}}").map(|shared| shared.s3.bucket),
            Some("b".to_owned())
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let key = |p: Option<(String, String)>| p.map(|(key, _)| key);
        assert_eq!(
            key(problem(|c| c.bucket.clear())),
            Some("bucket".to_owned())
        );
        assert_eq!(
            key(problem(|c| c.bucket = "Upper_Case".to_owned())),
            Some("bucket".to_owned())
        );
        assert_eq!(
            key(problem(|c| c.prefix = "/abs".to_owned())),
            Some("prefix".to_owned())
        );
        assert_eq!(
            key(problem(|c| c.prefix = "a//b".to_owned())),
            Some("prefix".to_owned())
        );
        assert_eq!(
            key(problem(
                |c| c.endpoint = Some("http://s3.local:8333".to_owned())
            )),
            Some("endpoint".to_owned())
        );
        assert_eq!(
            key(problem(|c| c.endpoint = Some("ftp://s3.local".to_owned()))),
            Some("endpoint".to_owned())
        );
        assert_eq!(
            key(problem(|c| c.region.clear())),
            Some("region".to_owned())
        );
        assert_eq!(
            key(problem(|c| c.ca_file = Some(PathBuf::new()))),
            Some("ca_file".to_owned())
        );
    }

    #[test]
    fn plain_http_is_accepted_with_insecure_and_a_prefix_may_end_in_a_slash() {
        assert_eq!(
            problem(|c| {
                c.endpoint = Some("http://127.0.0.1:8333".to_owned());
                c.insecure = true;
                c.prefix = "team/mirrorgate/".to_owned();
            }),
            None
        );
    }
}
