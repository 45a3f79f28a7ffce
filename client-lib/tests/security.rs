//! Security over real loopback: a relay and a bootstrap server with TLS (a self-signed certificate made
//! here) and bearer tokens; the client consumes through both with the CA file and its token; the
//! bootstrap producer copies the relay over TLS with a token; wrong or missing tokens and an untrusted
//! certificate stop the client at once with a definite error.

use crate::common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use databus_bootstrap::applier::ApplierSettings;
use databus_bootstrap::producer::ProducerSettings;
use databus_bootstrap::serve::ServeSettings;
use databus_bootstrap::store::{BootstrapStore, SqliteStore};
use databus_client::{
    ClientConfig, ClientError, ConsumerOutcome, DatabusClient, MemoryCheckpointStore, StartPosition,
};
use databus_core::Scn;
use databus_http::{ClientOptions, Token};
use databus_relay::ServerSecurity;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "consumer-token-1";

struct Certs {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
}

fn self_signed() -> Certs {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    Certs {
        _dir: dir,
        cert,
        key,
    }
}

fn secure(certs: &Certs) -> ServerSecurity {
    ServerSecurity::plain()
        .with_tls_files(&certs.cert, &certs.key)
        .unwrap()
        .with_tokens(
            vec![
                Token::new(TOKEN).unwrap(),
                Token::new("other-token").unwrap(),
            ],
            false,
        )
}

fn client_config(urls: &[String], certs: &Certs, token: Option<&str>) -> ClientConfig {
    let mut c = fast_config(urls);
    c.ca_cert = Some(certs.cert.clone());
    c.token = token.map(|t| Token::new(t).unwrap());
    c
}

/// Records the keys of the events it receives (snapshot rows included) and errors.
#[derive(Default)]
struct Keys {
    keys: std::sync::Mutex<Vec<i64>>,
    errors: std::sync::Mutex<Vec<String>>,
}

impl Keys {
    fn keys(&self) -> Vec<i64> {
        self.keys.lock().unwrap().clone()
    }
}

impl databus_client::DatabusConsumer for Keys {
    async fn on_event(&self, event: &databus_client::DataEvent<'_>) -> ConsumerOutcome {
        if let databus_core::KeyRef::Int(k) = event.key() {
            self.keys.lock().unwrap().push(k);
        }
        ConsumerOutcome::Success
    }

    async fn on_error(&self, error: &ClientError) -> ConsumerOutcome {
        self.errors.lock().unwrap().push(error.to_string());
        ConsumerOutcome::Success
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_bootstraps_and_follows_over_tls_with_a_token() {
    let certs = self_signed();
    let mut relay = TestRelay::start_secure(1 << 20, secure(&certs)).await;
    assert!(relay.url().starts_with("https://"));
    relay.window(10, &rows(1, 0, 5, 1));
    relay.window(20, &rows(2, 5, 5, 1));

    // The bootstrap server: TLS and tokens; its producer reads the relay over TLS with a token.
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn BootstrapStore> =
        Arc::new(SqliteStore::open(dir.path().join("bootstrap.sqlite")).unwrap());
    let shutdown = CancellationToken::new();
    let mut producer = ProducerSettings::new(relay.url());
    producer.wait = Duration::from_millis(100);
    producer.client = ClientOptions {
        ca_cert: Some(certs.cert.clone()),
        token: Some(Token::new("other-token").unwrap()),
    };
    let bootstrap_url = spawn_bootstrap(
        store.clone(),
        ServeSettings::default(),
        secure(&certs),
        producer,
        ApplierSettings::default(),
        &shutdown,
    )
    .await;
    assert!(bootstrap_url.starts_with("https://"), "{bootstrap_url}");
    wait_until("the bootstrap store to apply SCN 20", || {
        store.snapshot_status().unwrap().applied_scn >= Some(Scn::new(20))
    })
    .await;

    // A new consumer: snapshot from the bootstrap server, then the relay, both over TLS.
    let mut c = client_config(&[relay.url()], &certs, Some(TOKEN));
    c.bootstrap_servers = vec![bootstrap_url];
    c.start = StartPosition::Snapshot;
    let client = DatabusClient::new(c, Arc::new(MemoryCheckpointStore::new())).unwrap();
    let consumer = Arc::new(Keys::default());
    run_until(&client, consumer.clone(), |k| k.keys().len() >= 10)
        .await
        .unwrap();
    let mut keys = consumer.keys();
    keys.sort();
    assert_eq!(keys, (0..10).collect::<Vec<_>>());
    // Then new windows through the relay.
    relay.window(30, &rows(1, 100, 2, 2));
    run_until(&client, consumer.clone(), |k| k.keys().contains(&101))
        .await
        .unwrap();
    assert!(consumer.errors.lock().unwrap().is_empty());
    shutdown.cancel();
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_tokens_and_untrusted_certificates_stop_the_client() {
    let certs = self_signed();
    let mut relay = TestRelay::start_secure(1 << 20, secure(&certs)).await;
    relay.window(10, &rows(1, 0, 3, 1));
    for token in [None, Some("wrong-token")] {
        let c = client_config(&[relay.url()], &certs, token);
        let client = DatabusClient::new(c, Arc::new(MemoryCheckpointStore::new())).unwrap();
        let recorder = Arc::new(Recorder::default());
        let started = Instant::now();
        let err = run_until(&client, recorder.clone(), |_| false)
            .await
            .unwrap_err();
        // Definite: no retry loop (the test's deadline is far longer than this bound).
        assert!(started.elapsed() < Duration::from_secs(20), "{err}");
        assert!(!err.is_transient());
        let ClientError::Refused { status, code, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!((*status, code.as_str()), (401, "unauthorized"));
        let text = err.to_string();
        assert!(text.contains("token"), "{text}");
        assert!(
            !text.contains("wrong-token") && !text.contains(TOKEN),
            "{text}"
        );
        assert_eq!(recorder.event_count(), 0);
    }
    // A client without the CA file does not trust the self-signed certificate.
    let mut c = client_config(&[relay.url()], &certs, Some(TOKEN));
    c.ca_cert = None;
    let client = DatabusClient::new(c, Arc::new(MemoryCheckpointStore::new())).unwrap();
    let err = run_until(&client, Arc::new(Recorder::default()), |_| false)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Config(_)), "{err:?}");
    assert!(err.to_string().contains("certificate"), "{err}");
    // With the right token and CA it works.
    let c = client_config(&[relay.url()], &certs, Some(TOKEN));
    let client = DatabusClient::new(c, Arc::new(MemoryCheckpointStore::new())).unwrap();
    let recorder = Arc::new(Recorder::default());
    run_until(&client, recorder.clone(), |r| r.event_count() == 3)
        .await
        .unwrap();
    relay.stop().await;
}

#[test]
fn token_settings_are_validated_and_never_serialized() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "from-file\n").unwrap();
    let mut c = ClientConfig::with_relays(["https://127.0.0.1:1"]);
    c.token_file = Some(file);
    assert_eq!(
        c.client_options().unwrap().token.unwrap().expose(),
        "from-file"
    );
    c.token = Some(Token::new("in-code").unwrap());
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("keep one"), "{err}");
    c.token_file = None;
    let json = serde_json::to_string(&c).unwrap();
    assert!(!json.contains("in-code"), "{json}");
    assert!(format!("{c:?}").contains("Token(***)"));
    c.token_env = Some("DATABUS_TEST_UNSET_TOKEN_VAR".into());
    c.token = None;
    let err = c.validate().unwrap_err().to_string();
    assert!(
        err.contains("DATABUS_TEST_UNSET_TOKEN_VAR is not set"),
        "{err}"
    );
}
