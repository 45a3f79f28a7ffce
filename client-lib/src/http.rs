//! A minimal HTTP/1.1 client over hyper: one kept-alive connection per server, bounded bodies, timeouts.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HOST, HeaderMap};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;

use crate::ClientError;

/// One server (relay or bootstrap server) at a base URL such as `http://127.0.0.1:8080`.
#[derive(Debug)]
pub(crate) struct HttpServer {
    url: String,
    authority: String,
    prefix: String,
    conn: Option<SendRequest<Empty<Bytes>>>,
}

/// A response read whole (bounded).
#[derive(Debug)]
pub(crate) struct HttpResponse {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl HttpServer {
    /// Parses `http://host:port[/prefix]`.
    pub(crate) fn parse(url: &str) -> Result<HttpServer, ClientError> {
        let bad = |why: &str| ClientError::Config(format!("server url {url:?} {why}"));
        let uri: Uri = url
            .parse()
            .map_err(|e| bad(&format!("does not parse: {e}")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => return Err(bad(&format!("has scheme {other}; only http is supported"))),
            None => return Err(bad("has no scheme; write http://host:port")),
        }
        let authority = uri
            .authority()
            .ok_or_else(|| bad("has no host"))?
            .as_str()
            .to_owned();
        let authority = if uri.port_u16().is_some() {
            authority
        } else {
            format!("{authority}:80")
        };
        if uri.query().is_some() {
            return Err(bad("has a query string; give the base URL only"));
        }
        let prefix = uri.path().trim_end_matches('/').to_owned();
        Ok(HttpServer {
            url: url.trim_end_matches('/').to_owned(),
            authority,
            prefix,
            conn: None,
        })
    }

    /// The base URL, for messages.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    fn transient(&self, message: impl Into<String>) -> ClientError {
        ClientError::Transient {
            server: self.url.clone(),
            message: message.into(),
        }
    }

    /// `GET <prefix><path_and_query>`, whole body up to `limit` bytes, within `timeout`. Network
    /// failures and timeouts are transient errors; any status is returned as a response.
    pub(crate) async fn get(
        &mut self,
        path_and_query: &str,
        timeout: Duration,
        limit: usize,
    ) -> Result<HttpResponse, ClientError> {
        match tokio::time::timeout(timeout, self.get_inner(path_and_query, limit)).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => {
                self.conn = None;
                Err(e)
            }
            Err(_) => {
                self.conn = None;
                Err(self.transient(format!("no answer within {timeout:?}")))
            }
        }
    }

    async fn connection(&mut self) -> Result<&mut SendRequest<Empty<Bytes>>, ClientError> {
        if let Some(conn) = &mut self.conn {
            if !conn.is_closed() && conn.ready().await.is_ok() {
                return Ok(self.conn.as_mut().expect("checked above"));
            }
            self.conn = None;
        }
        let stream = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|e| self.transient(format!("cannot connect: {e}")))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.transient(format!("http handshake: {e}")))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "http connection ended");
            }
        });
        Ok(self.conn.insert(sender))
    }

    async fn get_inner(
        &mut self,
        path_and_query: &str,
        limit: usize,
    ) -> Result<HttpResponse, ClientError> {
        let uri = format!("{}{path_and_query}", self.prefix);
        let request = Request::get(uri)
            .header(HOST, &self.authority)
            .body(Empty::<Bytes>::new())
            .map_err(|e| ClientError::Config(format!("bad request for {}: {e}", self.url)))?;
        let url = self.url.clone();
        let transient = move |message: String| ClientError::Transient {
            server: url.clone(),
            message,
        };
        let conn = self.connection().await?;
        let response = conn
            .send_request(request)
            .await
            .map_err(|e| transient(format!("request failed: {e}")))?;
        let (parts, body) = response.into_parts();
        let body = match Limited::new(body, limit).collect().await {
            Ok(body) => body.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                // Retrying would get the same answer: a definite error.
                return Err(ClientError::Protocol {
                    server: self.url.clone(),
                    message: format!(
                        "response body larger than {limit} bytes (an event larger than the client's limit); raise buffer_bytes"
                    ),
                });
            }
            Err(e) => return Err(transient(format!("reading the body: {e}"))),
        };
        Ok(HttpResponse {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }
}

impl HttpResponse {
    /// A header as text.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON.
    pub(crate) fn json(&self, server: &str) -> Result<serde_json::Value, ClientError> {
        serde_json::from_slice(&self.body).map_err(|e| ClientError::Protocol {
            server: server.to_owned(),
            message: format!("body is not JSON: {e}"),
        })
    }

    /// The error this non-2xx response stands for: `5xx` are transient, other statuses refused.
    pub(crate) fn into_error(self, server: &str) -> ClientError {
        let json: serde_json::Value = serde_json::from_slice(&self.body).unwrap_or_default();
        let code = json["error"].as_str().unwrap_or("unknown").to_owned();
        let message = json["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).into_owned());
        if self.status >= 500 {
            ClientError::Transient {
                server: server.to_owned(),
                message: format!("{} {code}: {message}", self.status),
            }
        } else {
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
        assert_eq!(s.authority, "127.0.0.1:8080");
        assert_eq!(s.prefix, "");
        let s = HttpServer::parse("http://relay/db").unwrap();
        assert_eq!(s.authority, "relay:80");
        assert_eq!(s.prefix, "/db");
        for bad in ["https://x:1", "127.0.0.1:80", "http://x:1/?a=b", "::"] {
            assert!(HttpServer::parse(bad).is_err(), "{bad}");
        }
    }
}
