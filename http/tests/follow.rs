//! The one stream follower against a real loopback server that answers as a relay does: a busy
//! `503` with `Retry-After` is waited out (never sooner), data moves the checkpoint the next request
//! sends, a `410` comes back typed with its details, and a stop during a backoff wait ends at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use databus_core::{Checkpoint, Scn};
use databus_http::follow::{FollowError, OnTransient, StreamFollower};
use databus_http::protocol::{CHECKPOINT_HEADER, ERROR_HEADER, MORE_HEADER, StreamQuery};
use databus_http::{ClientOptions, HttpClient};
use tokio_util::sync::CancellationToken;
use warp::Filter;
use warp::http::Response;

/// One scripted answer: status, headers, body.
type Step = (u16, Vec<(&'static str, String)>, String);

/// A relay-like `stream` endpoint answering each request with the next step of `script` (the last one
/// repeats); every request's query is recorded.
async fn scripted(script: Vec<Step>) -> (HttpClient, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let step = Arc::new(AtomicUsize::new(0));
    let script = Arc::new(script);
    let recorded = seen.clone();
    let route = warp::path!("v1" / "stream")
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .map(move |query: String| {
            recorded.lock().unwrap().push(query);
            let i = step.fetch_add(1, Ordering::SeqCst).min(script.len() - 1);
            let (status, headers, body) = &script[i];
            let mut r = Response::builder().status(*status);
            for (name, value) in headers {
                r = r.header(*name, value);
            }
            r.body(body.clone()).unwrap()
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(route).incoming(listener).run());
    let client = HttpClient::new(&format!("http://{addr}"), &ClientOptions::default()).unwrap();
    (client, seen)
}

fn data(cp: &Checkpoint, body: &str) -> Step {
    (
        200,
        vec![
            (CHECKPOINT_HEADER, cp.to_json()),
            (MORE_HEADER, "false".into()),
        ],
        body.into(),
    )
}

fn query() -> StreamQuery {
    StreamQuery {
        buffer: Some("shop".into()),
        wait: Duration::from_millis(100),
        max_bytes: Some(4096),
        ..StreamQuery::default()
    }
}

#[tokio::test]
async fn busy_is_waited_out_data_moves_the_checkpoint_and_gone_is_typed() {
    let busy = (
        503,
        vec![
            ("retry-after", "1".to_owned()),
            (ERROR_HEADER, "too_many_connections".to_owned()),
        ],
        r#"{"error":"too_many_connections","message":"later"}"#.to_owned(),
    );
    let gone = (
        410,
        vec![(ERROR_HEADER, "scn_not_found".to_owned())],
        r#"{"error":"scn_not_found","message":"gone","prev_scn":70,"min_scn":71}"#.to_owned(),
    );
    let (client, seen) = scripted(vec![
        busy,
        data(&Checkpoint::after(Scn::new(9)), "frames"),
        gone,
    ])
    .await;
    let mut follower = StreamFollower::new(query(), Some(Checkpoint::after(Scn::new(3))));
    let stop = CancellationToken::new();
    let mut transients = Vec::new();
    let started = Instant::now();
    let batch = follower
        .next(&client, &stop, |e, delay| {
            transients.push((e.to_string(), delay));
            OnTransient::Retry
        })
        .await
        .unwrap()
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After is a floor"
    );
    assert_eq!(transients.len(), 1, "{transients:?}");
    assert!(
        transients[0].0.contains("too_many_connections"),
        "{transients:?}"
    );
    assert!(transients[0].1 >= Duration::from_secs(1));
    assert_eq!(&batch.body[..], b"frames");
    assert_eq!(batch.checkpoint, Checkpoint::after(Scn::new(9)));
    assert_eq!(follower.checkpoint(), Some(&Checkpoint::after(Scn::new(9))));

    let err = follower
        .next(&client, &stop, |_, _| OnTransient::Retry)
        .await
        .unwrap_err();
    match &err {
        FollowError::Gone { envelope, .. } => {
            assert_eq!(envelope.error, "scn_not_found");
            assert_eq!(envelope.u64("prev_scn"), Some(70));
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.is_transient());
    assert_eq!(follower.checkpoint(), Some(&Checkpoint::after(Scn::new(9))));

    // Each request carried the long poll, the budget and the checkpoint of the answer before it.
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "{seen:?}");
    let checkpoint_of = |q: &str| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "checkpoint")
            .map(|(_, v)| Checkpoint::from_json(&v).unwrap())
    };
    assert!(seen[0].contains("wait_ms=100") && seen[0].contains("max_bytes=4096"));
    assert_eq!(
        checkpoint_of(&seen[0]),
        Some(Checkpoint::after(Scn::new(3)))
    );
    assert_eq!(
        checkpoint_of(&seen[1]),
        Some(Checkpoint::after(Scn::new(3)))
    );
    assert_eq!(
        checkpoint_of(&seen[2]),
        Some(Checkpoint::after(Scn::new(9)))
    );
}

#[tokio::test]
async fn a_follower_gives_up_when_told_and_stops_during_a_wait() {
    let busy = (
        503,
        vec![("retry-after", "30".to_owned())],
        r#"{"error":"not_positioned","message":"not yet"}"#.to_owned(),
    );
    let (client, _) = scripted(vec![busy]).await;
    let mut follower = StreamFollower::new(query(), None);
    let stop = CancellationToken::new();
    let err = follower
        .next(&client, &stop, |_, _| OnTransient::GiveUp)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, FollowError::Busy { status: 503, retry_after: Some(d), .. } if *d == Duration::from_secs(30)),
        "{err:?}"
    );
    assert!(err.is_transient());
    let stopper = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        stopper.cancel();
    });
    let started = Instant::now();
    let out = follower
        .next(&client, &stop, |_, _| OnTransient::Retry)
        .await
        .unwrap();
    assert!(out.is_none());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a stop ends the 30 s wait"
    );
}

#[tokio::test]
async fn an_unreachable_server_is_a_transient_http_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = HttpClient::new(&format!("http://{addr}"), &ClientOptions::default()).unwrap();
    let mut follower = StreamFollower::new(query(), None);
    let err = follower.poll(&client).await.unwrap_err();
    assert!(
        matches!(err, FollowError::Http(_)) && err.is_transient(),
        "{err:?}"
    );
}
