//! The bootstrap server's HTML status page, `GET /` and `GET /status`: one server-rendered page for
//! people, with the facts of `GET /v1/status` and what they mean for operations.
//!
//! - Log: floor SCN (retention trimmed up to it), SCN range held, windows, events, bytes; the age of
//!   the oldest window (what retention keeps) and the producer's lag (now minus the commit time of the
//!   newest window logged).
//! - Snapshot: applied SCN, base SCN (the oldest `since` a consolidated delta accepts), rows, seeded
//!   or seeding.
//! - Applier lag: windows logged but not applied yet, and how old the oldest of them is.
//! - Retention: the lowest SCN pinned by bootstraps in progress (the cleaner does not trim past it).
//!
//! Invariants: every value from outside (source names) is HTML-escaped; no credentials are shown (the
//! store holds none); no scripts, only inline CSS and a `<meta http-equiv="refresh">`. Store reads run
//! on the blocking pool.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use databus_core::Scn;
use databus_http::html::{escape, page_response};
use databus_http::human;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::BootstrapError;
use crate::serve::BootstrapService;

/// Seconds between automatic reloads of the page.
pub const REFRESH_SECONDS: u32 = 5;
/// Unapplied windows counted at most (the page says "at least" beyond).
const MAX_COUNTED: usize = 10_000;

/// `GET /` and `GET /status`: the HTML status page of `service`. Rejects other paths (not found) so
/// that it composes with the API routes.
pub fn route(
    service: Arc<BootstrapService>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path::end()
        .or(warp::path!("status"))
        .unify()
        .and(warp::get())
        .and(warp::any().map(move || service.clone()))
        .then(|svc: Arc<BootstrapService>| async move {
            let page = tokio::task::spawn_blocking(move || render(&svc, now_ns())).await;
            match page {
                Ok(Ok(html)) => page_response(StatusCode::OK, html),
                Ok(Err(e)) => page_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!(
                        "<!DOCTYPE html><html><body><p>cannot read the bootstrap store: {}</p></body></html>",
                        escape(&e.to_string())
                    ),
                ),
                Err(e) => page_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!(
                        "<!DOCTYPE html><html><body><p>status task failed: {}</p></body></html>",
                        escape(&e.to_string())
                    ),
                ),
            }
        })
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn opt(v: Option<Scn>) -> String {
    v.map_or_else(|| "–".to_owned(), |v| v.to_string())
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.5em}\
table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}\
th{background:#f3f3f3;font-weight:600;width:16em}td{font-variant-numeric:tabular-nums}\
.muted{color:#777}";

/// Renders the page (blocking: reads the store).
fn render(svc: &BootstrapService, now: u64) -> Result<String, BootstrapError> {
    let store = svc.store();
    let log = store.log_status()?;
    let snap = store.snapshot_status()?;
    let seeding = store.seed_progress()?;
    let sources = store.sources()?;
    let pin = store.min_pin(now / 1_000_000)?;
    let oldest = match log.first_scn {
        Some(first) => store
            .windows(Scn::new(first.get().saturating_sub(1)), first, 1)?
            .first()
            .copied(),
        None => None,
    };
    let newest = match log.last_scn {
        Some(last) => store
            .windows(Scn::new(last.get().saturating_sub(1)), last, 1)?
            .first()
            .copied(),
        None => None,
    };
    let (behind, oldest_unapplied) = match (log.last_scn, snap.applied_scn) {
        (Some(last), applied) => {
            let after = applied.or(log.floor_scn).unwrap_or(Scn::ZERO);
            if after >= last {
                (0, None)
            } else {
                let ws = store.windows(after, last, MAX_COUNTED + 1)?;
                (ws.len(), ws.first().copied())
            }
        }
        (None, _) => (0, None),
    };

    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
         <title>databus bootstrap server</title><style>{STYLE}</style></head><body>\
         <h1>databus bootstrap server</h1>\
         <p class=\"muted\">Refreshes every {REFRESH_SECONDS} s. JSON: \
         <a href=\"/v1/status\">/v1/status</a>, <a href=\"/v1/sources\">/v1/sources</a>.</p>"
    );
    render_health(svc, &mut out)?;
    let range = match (log.first_scn, log.last_scn) {
        (Some(first), Some(last)) => format!("{first}..={last}"),
        _ => "empty".to_owned(),
    };
    let age = |ts: u64| human::duration_ns(now.saturating_sub(ts));
    let _ = write!(
        out,
        "<h2>Log</h2><table id=\"log\">\
         <tr><th>SCN range held</th><td id=\"log-scn-range\" data-first-scn=\"{first}\" \
         data-last-scn=\"{last}\">{range}</td></tr>\
         <tr><th>floor SCN</th><td id=\"log-floor-scn\">{floor}</td></tr>\
         <tr><th>held</th><td>{windows} windows, {events} events, {bytes}</td></tr>\
         <tr><th>oldest window committed</th><td>{oldest}</td></tr>\
         <tr><th>producer lag</th><td id=\"producer-lag\">{lag}</td></tr></table>",
        first = opt(log.first_scn),
        last = opt(log.last_scn),
        floor = opt(log.floor_scn),
        windows = log.windows,
        events = log.events,
        bytes = human::bytes(log.bytes),
        oldest = oldest.map_or_else(
            || "–".to_owned(),
            |w| format!("{} ago", age(w.timestamp_ns))
        ),
        lag = newest.map_or_else(
            || "–".to_owned(),
            |w| format!("{} (newest window committed then)", age(w.timestamp_ns))
        ),
    );
    let seeded = match (&seeding, snap.seeded) {
        (Some(p), _) => format!("seeding at SCN {} (in progress)", p.scn),
        (None, true) => "yes".to_owned(),
        (None, false) => "no".to_owned(),
    };
    let _ = write!(
        out,
        "<h2>Snapshot</h2><table id=\"snapshot\">\
         <tr><th>applied SCN</th><td id=\"applied-scn\">{applied}</td></tr>\
         <tr><th>base SCN</th><td id=\"snapshot-base-scn\">{base}</td></tr>\
         <tr><th>rows (tombstones included)</th><td>{rows}</td></tr>\
         <tr><th>seeded</th><td>{seeded}</td></tr></table>",
        applied = opt(snap.applied_scn),
        base = opt(snap.base_scn),
        rows = snap.rows,
    );
    let behind_text = if behind > MAX_COUNTED {
        format!("at least {MAX_COUNTED} windows")
    } else {
        format!("{behind} windows")
    };
    let _ = write!(
        out,
        "<h2>Applier</h2><table id=\"applier\">\
         <tr><th>windows not applied yet</th><td id=\"applier-behind\">{behind_text}</td></tr>\
         <tr><th>applier lag</th><td id=\"applier-lag\">{lag}</td></tr></table>",
        lag = oldest_unapplied.map_or_else(
            || "caught up".to_owned(),
            |w| format!(
                "{} (oldest unapplied window, SCN {})",
                age(w.timestamp_ns),
                w.scn
            )
        ),
    );
    let _ = write!(
        out,
        "<h2>Retention</h2><table id=\"retention\">\
         <tr><th>trimmed up to SCN</th><td>{floor}</td></tr>\
         <tr><th>pinned by bootstraps in progress</th><td>{pin}</td></tr></table>\
         <p class=\"muted\">The cleaner trims by age and size ([retention] in bootstrap.toml), \
         never past the applied SCN or a pin.</p>",
        floor = opt(log.floor_scn),
        pin = pin.map_or_else(|| "none".to_owned(), |p| format!("after SCN {p}")),
    );
    out.push_str("<h2>Sources</h2><table id=\"sources\"><tr><th>id</th><th>name</th></tr>");
    for s in &sources {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td></tr>",
            s.id,
            escape(&s.name)
        );
    }
    out.push_str("</table></body></html>\n");
    Ok(out)
}

/// The health verdict (as `/health`) and each role's report.
fn render_health(svc: &BootstrapService, out: &mut String) -> Result<(), BootstrapError> {
    let (roles, problems) = svc.health()?;
    let verdict = if problems.is_empty() {
        "ok".to_owned()
    } else {
        format!("not ok ({} problems; /health answers 503)", problems.len())
    };
    let _ = write!(
        out,
        "<h2>Health</h2><table id=\"health\"><tr><th>health</th><td id=\"health-status\">{}</td></tr>",
        escape(&verdict)
    );
    for p in &problems {
        let _ = write!(
            out,
            "<tr><th>{} {}</th><td class=\"problem\">{}</td></tr>",
            p.role.name(),
            p.state,
            escape(&p.message)
        );
    }
    let now = crate::health::now_ms();
    for role in [crate::store::Role::Producer, crate::store::Role::Applier] {
        let text = match roles.iter().find(|r| r.role == role) {
            None => "not reported (never ran on this database)".to_owned(),
            Some(r) => format!(
                "{} for {}, last report {} ago{}",
                format!("{:?}", r.state).to_lowercase(),
                human::duration_ms(now.saturating_sub(r.since_ms)),
                human::duration_ms(now.saturating_sub(r.updated_ms)),
                r.message
                    .as_ref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ),
        };
        let _ = write!(
            out,
            "<tr><th>{name}</th><td id=\"{name}-state\">{}</td></tr>",
            escape(&text),
            name = role.name()
        );
    }
    out.push_str("</table>");
    Ok(())
}

#[cfg(test)]
mod tests {
    use databus_core::{Opcode, SourceId};

    use super::*;
    use crate::serve::ServeSettings;
    use crate::store::{LogStore, LogWindow, MemoryStore, SnapshotStore, SourceInfo, StoredEvent};

    #[tokio::test]
    async fn page_shows_log_snapshot_and_applier_lag() {
        let store = Arc::new(MemoryStore::new());
        store.start_log(Scn::new(3)).unwrap();
        let event = |scn: u64| {
            let mut frame = Vec::new();
            databus_core::EventBuilder::new(Scn::new(scn), Opcode::Upsert)
                .source(SourceId::new(1))
                .key(databus_core::KeyRef::Int(scn as i64))
                .payload(&[1])
                .write_to_vec(&mut frame);
            StoredEvent::from_frame(&frame).unwrap()
        };
        let windows: Vec<LogWindow> = [4u64, 6, 9]
            .iter()
            .map(|&scn| LogWindow {
                scn: Scn::new(scn),
                timestamp_ns: now_ns() - 3_000_000_000,
                events: vec![event(scn)],
            })
            .collect();
        store.append(&windows).unwrap();
        store.init_base(Scn::new(3)).unwrap();
        store.apply(&windows[0].events, Scn::new(4)).unwrap();
        store
            .set_sources(&[SourceInfo {
                id: SourceId::new(1),
                name: "<orders>".into(),
            }])
            .unwrap();
        let routes = crate::http::routes(BootstrapService::new(store, ServeSettings::default()));
        for path in ["/", "/status"] {
            let r = warp::test::request().path(path).reply(&routes).await;
            assert_eq!(r.status(), 200, "{path}");
            assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
            let body = String::from_utf8(r.body().to_vec()).unwrap();
            assert!(body.contains(">4..=9<"), "{body}");
            assert!(body.contains("<td id=\"applied-scn\">4</td>"), "{body}");
            assert!(
                body.contains("<td id=\"applier-behind\">2 windows</td>"),
                "{body}"
            );
            assert!(body.contains("SCN 6)"), "{body}");
            assert!(body.contains("&lt;orders&gt;"), "{body}");
            assert!(!body.contains("<orders>"), "{body}");
        }
        let r = warp::test::request().path("/nope").reply(&routes).await;
        assert_eq!(r.status(), 404);
    }
}
