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
//! "resolved" when it ends. Its own token bucket (not the exchange's rate gate) caps the
//! total; what it holds back is counted and mentioned in the next message that goes.
//!
//! The webhook URL carries its token: it is a [`Secret`], and logs name only its host.

use super::{Sources, StreamHealth};
use crate::secret::Secret;
use crossbeam_channel::Receiver;
use std::collections::BTreeMap;
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
    fn take(&mut self, now: Instant) -> bool {
        while self.tokens < self.burst && now.duration_since(self.last) >= self.refill {
            self.tokens += 1;
            self.last += self.refill;
        }
        if self.tokens == self.burst {
            self.last = now;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
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
    agent: ureq::Agent,
    incidents: BTreeMap<String, Incident>,
    bucket: Bucket,
    held_back: u64,
    last: Counts,
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
            agent: ureq::Agent::new_with_config(agent_config),
            incidents: BTreeMap::new(),
            bucket,
            held_back: 0,
            last: Counts::default(),
        };
        alerter.last = alerter.counts();
        alerter
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
                if matches!(p.state.as_str(), "disabled" | "stalled" | "stuck") {
                    let why = if p.problem.is_empty() { String::new() } else { format!(": {}", p.problem) };
                    out.push((format!("plugin:{}", p.name), format!("plugin {} is {}{why}", p.name, p.state)));
                }
            }
        }
        out
    }

    /// One look: open, remind and resolve incidents, then send what that says.
    fn look(&mut self, now: Instant) {
        for text in self.decide(now) {
            self.send(now, text);
        }
    }

    /// The messages one look at `now` calls for (before the rate gate).
    fn decide(&mut self, now: Instant) -> Vec<String> {
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
                      out: &mut Vec<String>| {
            match incidents.get_mut(key) {
                Some(i) => {
                    i.text = text;
                    i.last_event = now;
                    i.events += 1;
                }
                None => {
                    out.push(format!("ALERT: {text}"));
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
                outgoing.push(format!("RESOLVED after {}: {}{times}", mins(now.duration_since(i.opened)), i.text));
            }
        }
        for i in self.incidents.values_mut() {
            if now >= i.next_reminder {
                i.reminders += 1;
                i.next_reminder = now + self.settings.repeat * 2u32.saturating_pow(i.reminders);
                outgoing.push(format!("STILL OPEN after {}: {}", mins(now.duration_since(i.opened)), i.text));
            }
        }
        outgoing
    }

    fn send(&mut self, now: Instant, text: String) {
        let m = &self.sources.metrics;
        if !self.bucket.take(now) {
            self.held_back += 1;
            m.alerts_suppressed.inc();
            log::warn!("alerts: held back by the alert rate limit: {text}");
            return;
        }
        let name = if self.settings.name.is_empty() { String::new() } else { format!(" {}", self.settings.name) };
        let mut full = format!("[binance-syncd{name}] {text}");
        if self.held_back > 0 {
            full.push_str(&format!(" ({} earlier alert(s) held back by the rate limit)", self.held_back));
        }
        let body = serde_json::json!({ "text": full }).to_string();
        let result = self
            .agent
            .post(self.settings.webhook.expose())
            .header("Content-Type", "application/json")
            .send(body.as_bytes());
        match result {
            Ok(r) if r.status().is_success() => {
                self.held_back = 0;
                m.alerts_sent.inc();
                log::info!("alerts: sent: {text}");
            }
            Ok(r) => {
                m.alerts_failed.inc();
                log::warn!("alerts: {} answered {}: {text}", redacted(&self.settings.webhook), r.status().as_u16());
            }
            Err(e) => {
                m.alerts_failed.inc();
                let why = match e {
                    ureq::Error::Io(io) => format!("io: {}", io.kind()),
                    ureq::Error::Timeout(t) => format!("timeout: {t:?}"),
                    _ => "http client error".to_string(),
                };
                log::warn!("alerts: cannot reach {} ({why}): {text}", redacted(&self.settings.webhook));
            }
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

    #[test]
    fn an_hour_long_incident_sends_a_handful_of_messages() {
        let mut a = alerter();
        let t0 = Instant::now();
        let mut sent = Vec::new();
        a.sources.metrics.filllog_failed();
        for s in 0..3600 {
            sent.extend(a.decide(t0 + Duration::from_secs(s)));
        }
        a.sources.metrics.filllog_ok();
        sent.extend(a.decide(t0 + Duration::from_secs(3600)));
        sent.extend(a.decide(t0 + Duration::from_secs(3601)));
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
                a.sources.metrics.count_fill("BTCUSD", crate::metrics::Source::Stream, None, true);
            }
            sent.extend(a.decide(t0 + Duration::from_secs(s)));
        }
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert!(sent[0].contains("taker fill"), "{sent:?}");
        // The last one came at 290 s.
        sent.extend(a.decide(t0 + Duration::from_secs(290 + 599)));
        assert_eq!(sent.len(), 1, "not quiet long enough yet: {sent:?}");
        sent.extend(a.decide(t0 + Duration::from_secs(290 + 600)));
        assert_eq!(sent.len(), 2);
        assert!(sent[1].starts_with("RESOLVED") && sent[1].ends_with("(30 times)"), "{sent:?}");
    }

    #[test]
    fn bucket_refills_one_at_a_time() {
        let t0 = Instant::now();
        let mut b = Bucket { tokens: 2, burst: 2, refill: Duration::from_secs(60), last: t0 };
        assert!(b.take(t0) && b.take(t0));
        assert!(!b.take(t0 + Duration::from_secs(59)));
        assert!(b.take(t0 + Duration::from_secs(61)));
        assert!(!b.take(t0 + Duration::from_secs(62)));
    }
}
