//! The broker's admin API, as the provider calls it.

use std::time::Duration;

use reqwest::{Method, StatusCode, header};
use serde_json::Value as Json;

/// Largest response body read from the broker.
const MAX_RESPONSE: usize = 1 << 20;

#[derive(Clone)]
pub struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for Api {
    /// Never the admin token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// What went wrong, in terms a diagnostic can show.
#[derive(Debug)]
pub enum ApiError {
    NotFound,
    /// 400 `invalid_object` (or 409 with details): problems by path, such as
    /// `boundary.max_ttl`.
    Invalid(Vec<(String, String)>),
    /// Any other refusal: status, `error`, `error_description`.
    Refused(u16, String, String),
    /// The broker could not be reached, or answered something that is not JSON.
    Transport(String),
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotFound => f.write_str("not found"),
            Self::Invalid(d) => {
                let parts: Vec<String> = d.iter().map(|(p, m)| format!("{p}: {m}")).collect();
                f.write_str(&parts.join("; "))
            }
            Self::Refused(status, code, desc) => write!(f, "HTTP {status} {code}: {desc}"),
            Self::Transport(e) => f.write_str(e),
        }
    }
}

/// A response: its JSON body (if any) and the version its ETag names.
#[derive(Debug)]
pub struct Reply {
    pub body: Option<Json>,
    pub version: Option<u64>,
}

impl Api {
    pub fn new(endpoint: &str, token: &str, ca_pem: Option<&str>) -> Result<Self, String> {
        let base = endpoint.trim_end_matches('/').to_owned();
        let url = reqwest::Url::parse(&base).map_err(|e| format!("not a URL: {e}"))?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err("must be an https:// (or, on loopback, http://) URL".into());
        }
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!(
                "terraform-provider-trustbroker/",
                env!("CARGO_PKG_VERSION")
            ));
        if let Some(pem) = ca_pem {
            let ca = reqwest::Certificate::from_pem(pem.as_bytes())
                .map_err(|e| format!("ca_certificate: {e}"))?;
            builder = builder.add_root_certificate(ca);
        }
        let http = builder.build().map_err(|e| e.to_string())?;
        Ok(Self {
            base,
            token: token.to_owned(),
            http,
        })
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Json>,
        if_match: Option<u64>,
        admin: bool,
    ) -> Result<Reply, ApiError> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if admin {
            req = req.bearer_auth(&self.token);
        }
        if let Some(v) = if_match {
            req = req.header(header::IF_MATCH, format!("\"{v}\""));
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let mut resp = req
            .send()
            .await
            .map_err(|e| ApiError::Transport(format!("{}: {e}", self.base)))?;
        let status = resp.status();
        let version = resp
            .headers()
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim_matches('"').parse().ok());
        // Read within the budget, whatever Content-Length claims.
        let mut bytes = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| ApiError::Transport(format!("{}: {e}", self.base)))?
        {
            if bytes.len() + chunk.len() > MAX_RESPONSE {
                return Err(ApiError::Transport("response over 1 MiB".into()));
            }
            bytes.extend_from_slice(&chunk);
        }
        let json: Option<Json> = if bytes.is_empty() {
            None
        } else {
            Some(serde_json::from_slice(&bytes).map_err(|_| {
                ApiError::Transport(format!("HTTP {status}: the answer is not JSON"))
            })?)
        };
        if status.is_success() {
            return Ok(Reply {
                body: json,
                version,
            });
        }
        let field = |k: &str| {
            json.as_ref()
                .and_then(|j| j.get(k))
                .and_then(Json::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let details: Vec<(String, String)> = json
            .as_ref()
            .and_then(|j| j.get("details"))
            .and_then(Json::as_array)
            .map(|ds| {
                ds.iter()
                    .map(|d| {
                        let s = |k| {
                            d.get(k)
                                .and_then(Json::as_str)
                                .unwrap_or_default()
                                .to_owned()
                        };
                        (s("path"), s("message"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Err(match status {
            StatusCode::NOT_FOUND => ApiError::NotFound,
            _ if !details.is_empty() => ApiError::Invalid(details),
            _ => ApiError::Refused(status.as_u16(), field("error"), field("error_description")),
        })
    }

    pub async fn get(&self, path: &str) -> Result<Reply, ApiError> {
        self.call(Method::GET, path, None, None, true).await
    }

    /// The current version of an object (for `If-Match`).
    pub async fn version(&self, path: &str) -> Result<u64, ApiError> {
        let r = self.get(path).await?;
        r.version
            .or_else(|| r.body.as_ref()?.get("version")?.as_u64())
            .ok_or_else(|| ApiError::Transport(format!("{path}: no version in the answer")))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use std::io::{Read, Write};

    use super::*;

    /// Answers every connection with `body` (and its length), once per connection.
    fn server(body: Vec<u8>) -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(&body);
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn an_answer_over_the_budget_is_refused_and_one_at_it_is_read() {
        let mut at_limit = b"\"".to_vec();
        at_limit.resize(MAX_RESPONSE - 1, b'a');
        at_limit.push(b'"');
        let api = Api::new(&server(at_limit), "t", None).unwrap();
        let r = api.get("/x").await.unwrap();
        assert_eq!(r.body.unwrap().as_str().unwrap().len(), MAX_RESPONSE - 2);

        let mut over = b"\"".to_vec();
        over.resize(MAX_RESPONSE, b'a');
        over.push(b'"');
        let api = Api::new(&server(over), "t", None).unwrap();
        match api.get("/x").await {
            Err(ApiError::Transport(m)) => assert!(m.contains("over 1 MiB"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_admin_token_never_shows_in_debug_output() {
        let api = Api::new("https://broker.example", "s3cret-admin-token", None).unwrap();
        assert!(!format!("{api:?}").contains("s3cret"));
    }

    #[test]
    fn endpoints_must_be_http_urls() {
        assert!(Api::new("ftp://broker.example", "t", None).is_err());
        assert!(Api::new("not a url", "t", None).is_err());
    }
}
