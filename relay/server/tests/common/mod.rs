//! What the relay's integration tests share: a bare HTTP/1.1 client over loopback (one request per
//! connection), a relay run in process from its TOML configuration, and waiting on its `/v1/status`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use databus_core::{Checkpoint, Event, EventView, SourceId};
use databus_relay::config::{ValidatedConfig, ValidatedTable};
use databus_relay::{RelayConfig, RelayError};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A response as read off the socket (a chunked body already de-chunked).
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    /// Whether the body came with `Transfer-Encoding: chunked`.
    pub chunked: bool,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no header {name} in {:?}", self.headers))
    }

    /// The `X-Databus-Checkpoint` header as sent, if any.
    pub fn checkpoint_header(&self) -> Option<String> {
        self.headers.get("x-databus-checkpoint").cloned()
    }

    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint::from_json(self.header("x-databus-checkpoint")).unwrap()
    }

    pub fn events(&self) -> Vec<Event> {
        EventView::parse_all(&self.body)
            .unwrap()
            .into_iter()
            .map(Event::from)
            .collect()
    }
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&body[..line_end]).unwrap().trim(), 16)
                .unwrap();
        body = &body[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

/// A minimal HTTP/1.1 client: one request per connection.
pub async fn request(addr: SocketAddr, method: &str, path: &str) -> Resp {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let req = format!("{method} {path} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = std::str::from_utf8(&raw[..split]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: BTreeMap<String, String> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    let chunked = headers.get("transfer-encoding").map(String::as_str) == Some("chunked");
    let mut body = raw[split + 4..].to_vec();
    if chunked {
        body = dechunk(&body);
    }
    Resp {
        status,
        headers,
        body,
        chunked,
    }
}

pub async fn get(addr: SocketAddr, path: &str) -> Resp {
    request(addr, "GET", path).await
}

/// `text` as a URL query value.
pub fn enc(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Table `shop.<name>` as logical source `id` named `name`.
pub fn shop_table(id: u16, name: &str) -> ValidatedTable {
    ValidatedTable {
        id: SourceId::new(id),
        name: name.to_owned(),
        database: "shop".to_owned(),
        table: name.to_owned(),
    }
}

/// A whole relay (`databus_relay::run_with`) running in process on 127.0.0.1, port 0.
pub struct Relay {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), RelayError>>,
}

impl Relay {
    /// Parses and validates a TOML configuration, then runs it.
    pub async fn from_toml(text: &str) -> Relay {
        Relay::run(RelayConfig::from_toml(text).unwrap().validate().unwrap()).await
    }

    pub async fn run(config: ValidatedConfig) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(databus_relay::run_with(
            config,
            listener,
            None,
            shutdown.clone(),
        ));
        Relay {
            addr,
            shutdown,
            task,
        }
    }

    /// Shuts down and waits for the relay to stop without error.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("relay stops")
            .unwrap()
            .unwrap();
    }
}

/// `GET /v1/status` as JSON.
pub async fn status(addr: SocketAddr) -> Value {
    get(addr, "/v1/status").await.json()
}

/// Polls `/v1/status` until `done` holds for it (`done` may assert on the way), failing with `what`
/// and the last status once `deadline` passes; the status that was done.
pub async fn wait_status(
    addr: SocketAddr,
    deadline: Instant,
    what: &str,
    mut done: impl FnMut(&Value) -> bool,
) -> Value {
    loop {
        let body = status(addr).await;
        if done(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{what}: {body}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the relay's first buffer streams, failing at once if its ingest failed.
pub async fn wait_streaming(addr: SocketAddr, deadline: Instant) {
    wait_status(addr, deadline, "relay never connected", |body| {
        let state = &body["buffers"][0]["ingest"]["state"];
        assert_ne!(state, "failed", "{body}");
        state == "streaming"
    })
    .await;
}
