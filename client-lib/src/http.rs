//! The client's view of one server over the shared [`databus_http::HttpClient`]: `http` or `https`
//! (custom CA), a bearer token, one kept-alive connection, bounded bodies, timeouts; its failures
//! mapped to [`ClientError`]s.

use std::time::Duration;

use databus_core::Scn;
use databus_http::{ClientOptions, HttpClient, HttpError};

use crate::ClientError;

/// One server (relay or bootstrap server) at a base URL such as `http://127.0.0.1:8080`.
#[derive(Debug)]
pub(crate) struct HttpServer {
    client: HttpClient,
}

/// A response read whole (bounded): the shared [`databus_http::Response`], read as the client needs
/// through [`ResponseExt`].
pub(crate) use databus_http::Response as HttpResponse;

impl HttpServer {
    /// Parses `http[s]://host:port[/prefix]` and reads the CA file of `options`.
    pub(crate) fn new(url: &str, options: &ClientOptions) -> Result<HttpServer, ClientError> {
        let client =
            HttpClient::new(url, options).map_err(|e| ClientError::Config(e.to_string()))?;
        Ok(HttpServer {
            client: client.with_user_agent(concat!("databus-client/", env!("CARGO_PKG_VERSION"))),
        })
    }

    /// Parses `http[s]://host:port[/prefix]` without a CA file or token (URL checks).
    #[cfg(test)]
    pub(crate) fn parse(url: &str) -> Result<HttpServer, ClientError> {
        HttpServer::new(url, &ClientOptions::default())
    }

    /// The base URL, for messages.
    pub(crate) fn url(&self) -> &str {
        self.client.url()
    }

    /// `GET <prefix><path_and_query>`, whole body up to `limit` bytes, within `timeout`. Network
    /// failures and timeouts are transient errors; an untrusted certificate is a configuration error;
    /// any status is returned as a response.
    pub(crate) async fn get(
        &mut self,
        path_and_query: &str,
        timeout: Duration,
        limit: usize,
    ) -> Result<HttpResponse, ClientError> {
        match self.client.get(path_and_query, timeout, limit).await {
            Ok(r) => Ok(r),
            Err(e) => {
                self.client.reset();
                Err(match e {
                    HttpError::TooLarge { limit, .. } => ClientError::Protocol {
                        // Retrying would get the same answer: a definite error.
                        server: self.url().to_owned(),
                        message: format!(
                            "response body larger than {limit} bytes (an event larger than the client's limit); raise buffer_bytes"
                        ),
                    },
                    HttpError::Connection { message, .. } => ClientError::Transient {
                        server: self.url().to_owned(),
                        message,
                    },
                    e @ HttpError::Timeout { .. } => ClientError::Transient {
                        server: self.url().to_owned(),
                        message: e.to_string(),
                    },
                    e => ClientError::Config(e.to_string()),
                })
            }
        }
    }
}

/// What the client reads of a response.
pub(crate) trait ResponseExt {
    /// The body as JSON.
    fn json(&self, server: &str) -> Result<serde_json::Value, ClientError>;
    /// The error this non-2xx response stands for.
    fn into_error(self, server: &str) -> ClientError;
}

impl ResponseExt for HttpResponse {
    /// The body as JSON.
    fn json(&self, server: &str) -> Result<serde_json::Value, ClientError> {
        serde_json::from_slice(&self.body).map_err(|e| ClientError::Protocol {
            server: server.to_owned(),
            message: format!("body is not JSON: {e}"),
        })
    }

    /// The error this non-2xx response stands for: `503 not_yet_at_scn` (a bootstrap server behind the
    /// checkpoint) is [`ClientError::NotYetAtScn`], other `5xx` are transient, other statuses refused.
    fn into_error(self, server: &str) -> ClientError {
        let json: serde_json::Value = serde_json::from_slice(&self.body).unwrap_or_default();
        let code = json["error"].as_str().unwrap_or("unknown").to_owned();
        let message = json["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).into_owned());
        if self.status == 503 && code == "not_yet_at_scn" {
            let scn = |field: &str| json[field].as_u64().map(Scn::new);
            ClientError::NotYetAtScn {
                server: server.to_owned(),
                requested: scn("requested_scn"),
                log_last: scn("log_last_scn"),
            }
        } else if self.status >= 500 {
            ClientError::Transient {
                server: server.to_owned(),
                message: format!("{} {code}: {message}", self.status),
            }
        } else {
            let message = if self.status == 401 {
                format!(
                    "{message}; set the client's token (token_env, token_file or ClientConfig::token) to one the server accepts"
                )
            } else {
                message
            };
            ClientError::Refused {
                server: server.to_owned(),
                status: self.status,
                code,
                message,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_base_urls() {
        let s = HttpServer::parse("http://127.0.0.1:8080/").unwrap();
        assert_eq!(s.client.endpoint().authority(), "127.0.0.1:8080");
        assert_eq!(s.client.endpoint().prefix(), "");
        let s = HttpServer::parse("http://relay/db").unwrap();
        assert_eq!(s.client.endpoint().authority(), "relay:80");
        assert_eq!(s.client.endpoint().prefix(), "/db");
        HttpServer::parse("https://relay:1").unwrap();
        for bad in ["ftp://x:1", "127.0.0.1:80", "http://x:1/?a=b", "::"] {
            assert!(HttpServer::parse(bad).is_err(), "{bad}");
        }
    }
}
