//! THREAD `alerts`: incidents from the metrics, as Slack-compatible webhook messages.
//!
//! The thread looks at the registry (and the gate and plugin views) every `check_every`, so no
//! other thread ever waits for it or even knows it exists. What it sees becomes incidents:
//!
//! - conditions that last: the stream down past `SYNCD_STREAM_DEADLINE_S`, the fill log
//!   failing, a plugin disabled (panic or error), stalled or stuck; the incident ends when the
//!   condition does;
//! - events: a 418, a taker fill on one of the daemon's own orders, a filter rejection
//!   (`-1013`/`-1111`); the incident ends after `SYNCD_ALERT_QUIET_S` without another one (and,
//!   for a 418, once the ban is over).
//!
//! Each incident sends one message when it opens, a reminder after `SYNCD_ALERT_REPEAT_S`,
//! then after twice that and so on (an hour-long outage: a handful of messages), and one
//! "resolved" when it ends. Messages wait in an outbox, in order, until the webhook takes
//! them: a failed POST is retried with a backoff (1 s doubling to 60 s) and spends no token of
//! the alert rate gate (its own token bucket, not the exchange's). Under rate pressure
//! reminders go first (dropped, counted, mentioned in the next message that goes); an ALERT or
//! a RESOLVED is never dropped, only delayed (the outbox drops its oldest only past
//! [`OUTBOX_MAX`], which takes a webhook down for hours while incidents flap).
//!
//! The webhook URL carries its token: it is a [`Secret`], and logs name only its host.

use super::{Shared, Sources};
#[cfg(test)]
use crate::lock::LockAnyway;
use crate::lock::RwLockAnyway;
use crate::registry::StreamHealth;
use crate::secret::Secret;
use crossbeam_channel::Receiver;
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct AlertSettings {
    pub webhook: Secret,
    /// First reminder of an open incident; each later one waits twice as long.
    pub repeat: Duration,
    /// An event incident ends after this long without a new event.
    pub quiet: Duration,
    pub check_every: Duration,
    /// Messages that may go at once, and how fast that allowance comes back.
    pub burst: u32,
    pub refill: Duration,
    /// `[binance-syncd <name>]` in front of every message: which daemon speaks.
    pub name: String,
}

impl AlertSettings {
    pub fn new(webhook: Secret, repeat: Duration, quiet: Duration) -> AlertSettings {
        AlertSettings {
            webhook,
            repeat,
            quiet,
            check_every: Duration::from_millis(500),
            burst: 10,
            refill: Duration::from_secs(60),
            name: String::new(),
        }
    }
}

/// The scheme and host of a URL, for logs: never its path, where webhook tokens live.
pub fn redacted(url: &Secret) -> String {
    let text = url.expose();
    let (scheme, rest) = text.split_once("://").unwrap_or(("?", text));
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or(host);
    format!("{scheme}://{host}/…")
}

/// Messages kept for a webhook that does not take them.
pub const OUTBOX_MAX: usize = 500;
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Alert,
    Reminder,
    Resolved,
}

/// One message for the webhook, from one incident.
#[derive(Debug, Clone)]
struct Message {
    key: String,
    kind: Kind,
    text: String,
}

#[derive(Debug)]
struct Incident {
    text: String,
    opened: Instant,
    last_event: Instant,
    /// An event incident (ends when quiet), or a condition (ends when it clears).
    event: bool,
    /// Looks that found a new event (event incidents) since it opened.
    events: u64,
    reminders: u32,
    next_reminder: Instant,
}

/// A token bucket: `burst` messages, one more every `refill`.
#[derive(Debug)]
struct Bucket {
    tokens: u32,
    burst: u32,
    refill: Duration,
    last: Instant,
}

impl Bucket {
    /// Whether a message may go at `now`; [`Bucket::spend`] once it went.
    fn ready(&mut self, now: Instant) -> bool {
        while self.tokens < self.burst && now.duration_since(self.last) >= self.refill {
            self.tokens += 1;
            self.last += self.refill;
        }
        if self.tokens == self.burst {
            self.last = now;
        }
        self.tokens > 0
    }

    fn spend(&mut self) {
        self.tokens = self.tokens.saturating_sub(1);
    }
}

/// Where messages go: the webhook, or (unit tests) a list that can refuse the first few.
enum Transport {
    Http(ureq::Agent),
    #[cfg(test)]
    Fake(std::sync::Arc<std::sync::Mutex<FakeSink>>),
}

#[cfg(test)]
#[derive(Debug, Default)]
struct FakeSink {
    fail_first: u32,
    tries: u32,
    got: Vec<String>,
}

/// What the thread compares from one look to the next.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    http_418: u64,
    taker: u64,
    filter: u64,
}

pub struct Alerter {
    settings: AlertSettings,
    sources: Sources,
    /// Where newer sources appear (the daemon attaches its parts once it has started).
    shared: Option<Shared>,
    transport: Transport,
    incidents: BTreeMap<String, Incident>,
    bucket: Bucket,
    held_back: u64,
    last: Counts,
    outbox: VecDeque<Message>,
    /// Failed POSTs in a row, and when the next may try.
    failures: u32,
    retry_at: Option<Instant>,
}

fn mins(d: Duration) -> String {
    let s = d.as_secs();
    if s < 120 {
        format!("{s} s")
    } else {
        format!("{} min", s / 60)
    }
}

impl Alerter {
    pub fn new(settings: AlertSettings, sources: Sources) -> Alerter {
        let agent_config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .max_redirects(0)
            .user_agent(concat!("binance-syncd/", env!("CARGO_PKG_VERSION")))
            .build();
        let bucket =
            Bucket { tokens: settings.burst, burst: settings.burst, refill: settings.refill, last: Instant::now() };
        let mut alerter = Alerter {
            settings,
            sources,
            shared: None,
            transport: Transport::Http(ureq::Agent::new_with_config(agent_config)),
            incidents: BTreeMap::new(),
            bucket,
            held_back: 0,
            last: Counts::default(),
            outbox: VecDeque::new(),
            failures: 0,
            retry_at: None,
        };
        alerter.last = alerter.counts();
        alerter
    }

    /// Reads its sources from `shared` at each look from now on.
    pub fn following(mut self, shared: Shared) -> Alerter {
        self.shared = Some(shared);
        self
    }

    pub fn spawn(mut self, stop: Receiver<()>) -> io::Result<JoinHandle<()>> {
        log::info!("alerts: to {}", redacted(&self.settings.webhook));
        thread::Builder::new().name("alerts".into()).spawn(move || loop {
            if !matches!(
                stop.recv_timeout(self.settings.check_every),
                Err(crossbeam_channel::RecvTimeoutError::Timeout)
            ) {
                return;
            }
            self.look(Instant::now());
        })
    }

    fn counts(&self) -> Counts {
        let m = &self.sources.metrics;
        Counts {
            http_418: self.sources.gate.stats().http_418,
            taker: m.taker_fills.get(),
            filter: m.rejections.get(&["-1013"]) + m.rejections.get(&["-1111"]),
        }
    }

    /// The conditions that hold now, by incident key.
    fn conditions(&self) -> Vec<(String, String)> {
        let m = &self.sources.metrics;
        let mut out = Vec::new();
        let (health, down) = m.stream_health();
        if health == StreamHealth::Down {
            out.push((
                "stream_down".to_string(),
                format!(
                    "user-data stream down for {} (deadline {}); fills continue over REST",
                    mins(down),
                    mins(m.deadline())
                ),
            ));
        }
        if m.filllog_failing() {
            out.push((
                "filllog".to_string(),
                "cannot write the fill log; fills are held in memory and retried every second".to_string(),
            ));
        }
        if let Some(plugins) = &self.sources.plugins {
            for p in plugins.all() {
                if matches!(p.state.as_str(), "disabled" | "stalled" | "stuck" | "quarantined") {
                    let why = if p.problem.is_empty() { String::new() } else { format!(": {}", p.problem) };
                    out.push((format!("plugin:{}", p.name), format!("plugin {} is {}{why}", p.name, p.state)));
                }
            }
        }
        out
    }

    /// One look: open, remind and resolve incidents, then send what the outbox holds.
    fn look(&mut self, now: Instant) {
        if let Some(shared) = &self.shared {
            self.sources = shared.read_anyway().clone();
        }
        for message in self.decide(now) {
            self.enqueue(message);
        }
        self.flush(now);
        let m = &self.sources.metrics;
        m.alerts_pending.set(i64::try_from(self.outbox.len()).unwrap_or(i64::MAX));
        m.alert_checks.inc();
    }

    fn enqueue(&mut self, message: Message) {
        let m = &self.sources.metrics;
        if message.kind == Kind::Reminder {
            // A newer reminder says all an older unsent one did.
            if let Some(old) = self.outbox.iter_mut().find(|o| o.kind == Kind::Reminder && o.key == message.key) {
                old.text = message.text;
                return;
            }
        }
        self.outbox.push_back(message);
        while self.outbox.len() > OUTBOX_MAX {
            let at = self.outbox.iter().position(|o| o.kind == Kind::Reminder).unwrap_or(0);
            if let Some(lost) = self.outbox.remove(at) {
                self.held_back += 1;
                m.alerts_suppressed.inc();
                log::warn!("alerts: outbox full ({OUTBOX_MAX}); dropped: {}", lost.text);
            }
        }
    }

    /// Sends from the front of the outbox while the webhook takes messages and the rate gate
    /// allows them.
    fn flush(&mut self, now: Instant) {
        if self.retry_at.is_some_and(|at| now < at) {
            return;
        }
        while let Some(front) = self.outbox.front() {
            if !self.bucket.ready(now) {
                // Reminders make way for the ALERT and RESOLVED messages that wait for tokens.
                let before = self.outbox.len();
                self.outbox.retain(|o| {
                    if o.kind == Kind::Reminder {
                        log::warn!("alerts: held back by the alert rate limit: {}", o.text);
                    }
                    o.kind != Kind::Reminder
                });
                let dropped = (before - self.outbox.len()) as u64;
                self.held_back += dropped;
                for _ in 0..dropped {
                    self.sources.metrics.alerts_suppressed.inc();
                }
                return;
            }
            let text = front.text.clone();
            if self.send(&text) {
                self.bucket.spend();
                self.outbox.pop_front();
                self.failures = 0;
                self.retry_at = None;
            } else {
                self.failures += 1;
                let wait = RETRY_MIN.saturating_mul(2u32.saturating_pow(self.failures - 1)).min(RETRY_MAX);
                self.retry_at = Some(now + wait);
                log::warn!("alerts: {} message(s) waiting; next try in {wait:?}", self.outbox.len());
                return;
            }
        }
    }

    /// The messages one look at `now` calls for (before the outbox and the rate gate).
    fn decide(&mut self, now: Instant) -> Vec<Message> {
        let counts = self.counts();
        let mut events = Vec::new();
        if counts.http_418 > self.last.http_418 {
            let left = self.sources.gate.banned_for().unwrap_or_default();
            events.push((
                "banned",
                format!("HTTP 418: the exchange banned this IP ({} left); all requests wait", mins(left)),
            ));
        }
        if counts.taker > self.last.taker {
            events.push((
                "taker_fill",
                format!(
                    "{} taker fill(s) on the daemon's own orders (maker-only broken)",
                    counts.taker - self.last.taker
                ),
            ));
        }
        if counts.filter > self.last.filter {
            events.push((
                "filter_rejection",
                format!(
                    "{} order(s) rejected for a filter (-1013/-1111): the rules were wrong",
                    counts.filter - self.last.filter
                ),
            ));
        }
        self.last = counts;
        let conditions = self.conditions();

        let mut outgoing = Vec::new();
        let upsert = |incidents: &mut BTreeMap<String, Incident>,
                      key: &str,
                      text: String,
                      event: bool,
                      out: &mut Vec<Message>| {
            match incidents.get_mut(key) {
                Some(i) => {
                    i.text = text;
                    i.last_event = now;
                    i.events += 1;
                }
                None => {
                    out.push(Message { key: key.to_string(), kind: Kind::Alert, text: format!("ALERT: {text}") });
                    let next_reminder = now + self.settings.repeat;
                    incidents.insert(
                        key.to_string(),
                        Incident { text, opened: now, last_event: now, event, events: 1, reminders: 0, next_reminder },
                    );
                }
            }
        };
        for (key, text) in &conditions {
            upsert(&mut self.incidents, key, text.clone(), false, &mut outgoing);
        }
        for (key, text) in events {
            upsert(&mut self.incidents, key, text, true, &mut outgoing);
        }
        let banned = self.sources.gate.banned_for().is_some();
        let quiet = self.settings.quiet;
        let ended: Vec<String> = self
            .incidents
            .iter()
            .filter(|(key, i)| {
                if i.event {
                    now.duration_since(i.last_event) >= quiet && !(key.as_str() == "banned" && banned)
                } else {
                    !conditions.iter().any(|(k, _)| k == *key)
                }
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in ended {
            if let Some(i) = self.incidents.remove(&key) {
                let times = if i.event && i.events > 1 { format!(" ({} times)", i.events) } else { String::new() };
                let text = format!("RESOLVED after {}: {}{times}", mins(now.duration_since(i.opened)), i.text);
                outgoing.push(Message { key, kind: Kind::Resolved, text });
            }
        }
        for (key, i) in self.incidents.iter_mut() {
            if now >= i.next_reminder {
                i.reminders += 1;
                i.next_reminder = now + self.settings.repeat * 2u32.saturating_pow(i.reminders);
                let text = format!("STILL OPEN after {}: {}", mins(now.duration_since(i.opened)), i.text);
                outgoing.push(Message { key: key.clone(), kind: Kind::Reminder, text });
            }
        }
        outgoing
    }

    /// One POST of `text`: whether the webhook took it.
    fn send(&mut self, text: &str) -> bool {
        let m = &self.sources.metrics;
        let name = if self.settings.name.is_empty() { String::new() } else { format!(" {}", self.settings.name) };
        let mut full = format!("[binance-syncd{name}] {text}");
        if self.held_back > 0 {
            full.push_str(&format!(" ({} earlier alert(s) held back by the rate limit)", self.held_back));
        }
        let body = serde_json::json!({ "text": full }).to_string();
        match self.post(&body) {
            Ok(()) => {
                self.held_back = 0;
                m.alerts_sent.inc();
                log::info!("alerts: sent: {text}");
                true
            }
            Err(why) => {
                m.alerts_failed.inc();
                log::warn!("alerts: {} did not take a message ({why}): {text}", redacted(&self.settings.webhook));
                false
            }
        }
    }

    /// Why it failed, never naming the URL (its path holds the webhook's token).
    // Outside tests the transport has one variant, which the lint sees as a plain destructure.
    #[allow(clippy::infallible_destructuring_match)]
    fn post(&self, body: &str) -> Result<(), String> {
        let agent = match &self.transport {
            Transport::Http(agent) => agent,
            #[cfg(test)]
            Transport::Fake(sink) => {
                let mut sink = sink.lock_anyway();
                sink.tries += 1;
                if sink.tries <= sink.fail_first {
                    return Err("answered 500".into());
                }
                sink.got.push(body.to_string());
                return Ok(());
            }
        };
        let result =
            agent.post(self.settings.webhook.expose()).header("Content-Type", "application/json").send(body.as_bytes());
        match result {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("answered {}", r.status().as_u16())),
            Err(ureq::Error::Io(io)) => Err(format!("io: {}", io.kind())),
            Err(ureq::Error::Timeout(t)) => Err(format!("timeout: {t:?}")),
            Err(_) => Err("http client error".to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_show_only_the_host() {
        let url = Secret::new("https://hooks.slack.com/services/T000/B000/XXXXSECRET");
        assert_eq!(redacted(&url), "https://hooks.slack.com/…");
        let url = Secret::new("http://user:pw@127.0.0.1:9/x?token=SECRET");
        assert_eq!(redacted(&url), "http://127.0.0.1:9/…");
    }

    fn alerter() -> Alerter {
        let sources = Sources::bare();
        let settings =
            AlertSettings::new(Secret::new("http://127.0.0.1:9/"), Duration::from_secs(900), Duration::from_secs(600));
        Alerter::new(settings, sources)
    }

    fn texts(messages: Vec<Message>) -> Vec<String> {
        messages.into_iter().map(|m| m.text).collect()
    }

    fn faked(a: &mut Alerter, fail_first: u32) -> std::sync::Arc<std::sync::Mutex<FakeSink>> {
        let sink = std::sync::Arc::new(std::sync::Mutex::new(FakeSink { fail_first, ..FakeSink::default() }));
        a.transport = Transport::Fake(sink.clone());
        sink
    }

    #[test]
    fn failed_posts_are_retried_with_a_backoff_and_nothing_is_sent_twice() {
        let mut a = alerter();
        let sink = faked(&mut a, 5);
        let t0 = Instant::now();
        a.sources.metrics.filllog_failed();
        // The webhook refuses 5 POSTs while the incident opens and ends within 3 s.
        for tenth in 0..1200 {
            if tenth == 30 {
                a.sources.metrics.filllog_ok();
            }
            a.look(t0 + Duration::from_millis(tenth * 100));
        }
        let s = sink.lock().unwrap();
        assert_eq!(s.got.len(), 2, "{:#?}", s.got);
        assert!(s.got[0].contains("ALERT: cannot write the fill log"), "{:#?}", s.got);
        assert!(s.got[1].contains("RESOLVED after 3 s"), "{:#?}", s.got);
        // Backoff 1, 2, 4, 8, 16 s: 5 failures, then the 2 that went; not one try per look.
        assert_eq!(s.tries, 7);
        assert_eq!((a.sources.metrics.alerts_failed.get(), a.sources.metrics.alerts_sent.get()), (5, 2));
        assert_eq!(a.bucket.tokens, a.bucket.burst - 2, "failed POSTs spend no token");
    }

    #[test]
    fn rate_pressure_drops_reminders_never_an_alert_or_a_resolve() {
        let mut a = alerter();
        let sink = faked(&mut a, 0);
        a.settings.repeat = Duration::from_secs(1);
        a.bucket = Bucket { tokens: 1, burst: 1, refill: Duration::from_secs(60), last: Instant::now() };
        let t0 = a.bucket.last;
        a.sources.metrics.filllog_failed();
        // Reminders due every 1, 2, 4, 8... s; one token a minute.
        for s in 0..150 {
            if s == 100 {
                a.sources.metrics.filllog_ok();
            }
            a.look(t0 + Duration::from_secs(s));
        }
        let got = sink.lock().unwrap().got.clone();
        assert_eq!(got.len(), 3, "{got:#?}");
        assert!(got[0].contains("ALERT:"), "{got:#?}");
        assert!(
            got[1].contains("STILL OPEN after 63 s") && got[1].contains("(5 earlier alert(s) held back"),
            "{got:#?}"
        );
        assert!(got[2].contains("RESOLVED after 100 s"), "waited for the token of 120 s: {got:#?}");
        assert_eq!(a.sources.metrics.alerts_suppressed.get(), 5, "reminders at 1, 3, 7, 15 and 31 s");
    }

    #[test]
    fn an_hour_long_incident_sends_a_handful_of_messages() {
        let mut a = alerter();
        let t0 = Instant::now();
        let mut sent = Vec::new();
        a.sources.metrics.filllog_failed();
        for s in 0..3600 {
            sent.extend(texts(a.decide(t0 + Duration::from_secs(s))));
        }
        a.sources.metrics.filllog_ok();
        sent.extend(texts(a.decide(t0 + Duration::from_secs(3600))));
        sent.extend(texts(a.decide(t0 + Duration::from_secs(3601))));
        // Open, reminders at 15 and 45 min, resolved.
        assert_eq!(sent.len(), 4, "{sent:#?}");
        assert!(sent[0].starts_with("ALERT: cannot write the fill log"), "{sent:?}");
        assert!(sent[1].starts_with("STILL OPEN after 15 min") && sent[2].starts_with("STILL OPEN after 45 min"));
        assert!(sent[3].starts_with("RESOLVED after 60 min"), "{sent:?}");
    }

    #[test]
    fn events_open_one_incident_and_resolve_when_quiet() {
        let mut a = alerter();
        let t0 = Instant::now();
        let mut sent = Vec::new();
        for s in 0..300 {
            // A taker fill every 10 s for 5 minutes: one incident.
            if s % 10 == 0 {
                a.sources.metrics.count_fill("BTCUSD", crate::registry::Source::Stream, None, true);
            }
            sent.extend(texts(a.decide(t0 + Duration::from_secs(s))));
        }
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert!(sent[0].contains("taker fill"), "{sent:?}");
        // The last one came at 290 s.
        sent.extend(texts(a.decide(t0 + Duration::from_secs(290 + 599))));
        assert_eq!(sent.len(), 1, "not quiet long enough yet: {sent:?}");
        sent.extend(texts(a.decide(t0 + Duration::from_secs(290 + 600))));
        assert_eq!(sent.len(), 2);
        assert!(sent[1].starts_with("RESOLVED") && sent[1].ends_with("(30 times)"), "{sent:?}");
    }

    #[test]
    fn bucket_refills_one_at_a_time() {
        let t0 = Instant::now();
        let mut b = Bucket { tokens: 2, burst: 2, refill: Duration::from_secs(60), last: t0 };
        let mut take = |at: Instant| {
            let ready = b.ready(at);
            if ready {
                b.spend();
            }
            ready
        };
        assert!(take(t0) && take(t0));
        assert!(!take(t0 + Duration::from_secs(59)));
        assert!(take(t0 + Duration::from_secs(61)));
        assert!(!take(t0 + Duration::from_secs(62)));
    }
}
